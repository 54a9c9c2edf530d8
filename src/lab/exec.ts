/**
 * Running commands on the host and inside the lab's network namespaces.
 *
 * Namespaces are entered with `nsenter --net` only: `ip netns exec` also
 * remounts /sys, which hides /sys/fs/bpf from the command.
 */
import { execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';

export class CommandError extends Error {
  constructor(
    readonly cmd: string,
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(`${cmd} failed (${status ?? 'signal'}): ${stderr.trim() || 'no output'}`);
  }
}

/** Runs a command, returns its stdout; throws CommandError with its stderr. */
export function run(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      input: opts.input,
      timeout: opts.timeoutMs ?? 60_000,
    });
  } catch (err) {
    const e = err as { status?: number | null; stderr?: string | Buffer };
    throw new CommandError(`${cmd} ${args.join(' ')}`, e.status ?? null, String(e.stderr ?? (err as Error).message));
  }
}

/** Runs a command inside a named network namespace. */
export function nsRun(ns: string, cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  return run('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], opts);
}

export interface SpawnOptions {
  /** Default: stdin ignored, stdout and stderr piped. */
  stdio?: StdioOptions;
  /** A session of its own: outlives this process (demo --keep) and the terminal's signals. */
  detached?: boolean;
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts a long-running process inside a namespace. nsenter execs the
 * command, so the child's pid is the command's own.
 */
export function nsSpawn(ns: string, cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], {
    stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
    detached: opts.detached ?? false,
    env: opts.env ?? process.env,
  });
}
