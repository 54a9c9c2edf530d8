/**
 * cgroup v2 directories for tests and benchmarks of the socket-level load
 * balancer: create one, run processes inside it, and remove it again.
 *
 * A socket belongs to the cgroup of the process that created it, at the
 * moment it was created; a process must therefore be moved into the cgroup
 * before it opens the sockets that should be load balanced. `inCgroup` does
 * that with a shell that writes its own pid to cgroup.procs and then execs
 * the command.
 */
import { readFileSync, readdirSync, existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEFAULT_SOCKET_LB_CGROUP, isCgroup2 } from '../datapath/socket-lb.js';

/** The cgroup v2 hierarchy of this machine kind (a hybrid layout: v1 controllers, v2 at unified/). */
export const DEFAULT_CGROUP2_ROOT = DEFAULT_SOCKET_LB_CGROUP;

/** Why no cgroup v2 directory can be used under root, or undefined. */
export function cgroup2Unavailable(root = DEFAULT_CGROUP2_ROOT): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (cgroups, BPF)';
  if (!existsSync(root)) return `no cgroup v2 hierarchy at ${root}`;
  if (!isCgroup2(root)) return `${root} is not a cgroup v2 filesystem`;
  return undefined;
}

/** The pids in a cgroup (not its children). */
export function cgroupPids(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/** Creates root/name (empty if it existed and is empty) and returns its path. */
export function createCgroup(name: string, root = DEFAULT_CGROUP2_ROOT): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Moves a process into a cgroup (its future sockets belong to it). */
export function moveToCgroup(dir: string, pid: number): void {
  writeFileSync(join(dir, 'cgroup.procs'), `${pid}\n`);
}

/**
 * Moves every process still in the cgroup (and its children) to the parent
 * and removes the directories, deepest first. Processes that exit meanwhile
 * are fine; the removal retries briefly while the kernel still counts a dying
 * task. Returns false when the directory could not be removed.
 */
export function removeCgroup(dir: string): boolean {
  if (!existsSync(dir)) return true;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) removeCgroup(join(dir, e.name));
  }
  const parent = dirname(dir);
  for (let attempt = 0; attempt < 50; attempt++) {
    for (const pid of cgroupPids(dir)) {
      try {
        moveToCgroup(parent, pid);
      } catch {
        // the process exited meanwhile
      }
    }
    try {
      rmdirSync(dir);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
      // EBUSY while a task is still on its way out: wait a moment (synchronously:
      // this runs in cleanup paths, also from exit handlers).
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  return false;
}

/**
 * Removes cgroups root/<prefix><pid>… left by runs whose process is gone
 * (e.g. ferrytest-sock-1234 after a killed test), never a live run's.
 */
export function removeStaleCgroups(prefix: string, root = DEFAULT_CGROUP2_ROOT): void {
  if (!existsSync(root)) return;
  for (const name of readdirSync(root)) {
    const m = new RegExp(`^${prefix}(\\d+)\\b`).exec(name);
    if (m && !existsSync(`/proc/${m[1]}`)) removeCgroup(join(root, name));
  }
}

/**
 * The argv of a command that runs `cmd args…` inside the cgroup: a shell
 * moves itself there, then execs the command (same pid, same cgroup).
 */
export function inCgroup(dir: string, cmd: string, args: readonly string[]): [string, string[]] {
  return ['sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, cmd, ...args]];
}
