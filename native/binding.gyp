# Ferry native addon: N-API (node-addon-api, C++ exceptions) over the system
# libbpf. Links the shared libbpf: Debian's libbpf.a is not built with -fPIC.
{
  "targets": [
    {
      "target_name": "ferry_native",
      "sources": [
        "src/addon.cc",
        "src/btf.cc",
        "src/cgroup.cc",
        "src/flood.cc",
        "src/maps.cc",
        "src/notify.cc",
        "src/object.cc",
        "src/progs.cc",
        "src/ring.cc",
        "src/socket.cc",
        "src/util.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "_GNU_SOURCE"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=gnu++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf"]
    }
  ]
}
