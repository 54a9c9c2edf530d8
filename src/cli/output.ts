/** ferryctl output: aligned tables for people, JSON for scripts. */

type Cell = string | number | boolean | null | undefined;

/** Prints rows as a table with a header; columns from the first row's keys. */
export function printTable(rows: Array<Record<string, Cell>>): void {
  if (rows.length === 0) {
    console.log('(none)');
    return;
  }
  const cols = Object.keys(rows[0]!);
  const text = (v: Cell) => (v === null || v === undefined ? '' : String(v));
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => text(r[c]).length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(width[i]!))
      .join('  ')
      .trimEnd();
  console.log(line(cols.map((c) => c.toUpperCase())));
  for (const r of rows) console.log(line(cols.map((c) => text(r[c]))));
}

export function printJson(v: unknown): void {
  console.log(JSON.stringify(v, null, 2));
}
