/**
 * Waiting in tests for something asynchronous to show: polls `cond` every
 * `stepMs` until it holds, and fails naming `what` after `ms`.
 */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000, stepMs = 10): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
