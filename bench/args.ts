/** Command-line helpers shared by the benchmarks. */

/** The positive integer after `name` in argv, or the fallback. */
export function argValue(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} takes a positive integer`);
  return v;
}
