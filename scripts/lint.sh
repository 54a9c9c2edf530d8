#!/usr/bin/env bash
# Formatting and lint checks (CI runs them before the tests):
#   prettier     TypeScript, JavaScript, JSON, YAML and CSS layout
#   eslint       rules tsc does not enforce (eslint.config.js)
#   madge        no import cycle anywhere, type-only imports included
#   clang-format bpf/ and native/ (their .clang-format files)
# `npm run format` rewrites what the formatters would change.
set -euo pipefail
cd "$(dirname "$0")/.."
C_FILES=(bpf/*.c bpf/lib/*.h native/src/*.cc native/src/*.h)
# native/test holds BPF programs: they follow bpf/'s style.
BPF_TEST_FILES=(native/test/*.c)
if [[ ${1:-} == --fix ]]; then
  npx prettier --write --log-level warn .
  npx eslint --fix .
  clang-format -i "${C_FILES[@]}"
  clang-format -i --style=file:bpf/.clang-format "${BPF_TEST_FILES[@]}"
  exit 0
fi
npx prettier --check --log-level warn .
npx eslint .
npx madge --circular --extensions ts --ts-config tsconfig.json --no-spinner src bench test
clang-format --dry-run --Werror "${C_FILES[@]}"
clang-format --dry-run --Werror --style=file:bpf/.clang-format "${BPF_TEST_FILES[@]}"
echo "lint: clean"
