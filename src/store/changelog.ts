/**
 * ChangeLog: what one transaction changed, keyed "vip/NAME",
 * "backend/VIP/ADDRESS", "policy/NAME" or "tombstones". It becomes the
 * audit row, and names what the next snapshot must reload. A key touched
 * twice keeps its first `before` and its last `after`.
 *
 * Savepoints mirror SQLite's: savepoint() returns a mark; rollbackTo(mark)
 * puts the log back exactly as it was at the mark (keys, their order,
 * their values); release(mark) keeps what was recorded since, which an
 * enclosing savepoint can still undo. Both end the savepoint, innermost
 * first. While any savepoint is open, record() appends to an undo journal
 * how to take itself back, so a savepoint costs O(what changed inside it)
 * rather than a copy of the whole log: a transaction with one savepoint per
 * Kubernetes Service stays linear in its Services. The journal is emptied
 * when the outermost savepoint ends, since nothing can roll back past it.
 */

export interface LogEntry {
  before: unknown;
  after: unknown;
}

/** How to undo one record(): delete a key it created, or give a key back its previous `after`. */
interface Undo {
  key: string;
  created: boolean;
  after: unknown;
}

export class ChangeLog {
  private readonly entries = new Map<string, LogEntry>();
  private readonly journal: Undo[] = [];
  /** The journal's length when each open savepoint began, outermost first. */
  private readonly marks: number[] = [];

  record(key: string, before: unknown, after: unknown): void {
    const e = this.entries.get(key);
    const journaling = this.marks.length > 0;
    if (e !== undefined) {
      if (journaling) this.journal.push({ key, created: false, after: e.after });
      e.after = after;
    } else {
      if (journaling) this.journal.push({ key, created: true, after: undefined });
      this.entries.set(key, { before, after });
    }
  }

  get size(): number {
    return this.entries.size;
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  /** The log as [key, {before, after}] pairs in first-recorded order (copies of the entries, not the values). */
  list(): Array<[string, LogEntry]> {
    return [...this.entries].map(([k, v]) => [k, { ...v }]);
  }

  /** Savepoints open now. */
  get depth(): number {
    return this.marks.length;
  }

  /** Opens a savepoint; the mark is what rollbackTo/release take. */
  savepoint(): number {
    this.marks.push(this.journal.length);
    return this.marks.length;
  }

  /** Undoes every record() since the savepoint `mark` began, and ends it. */
  rollbackTo(mark: number): void {
    const start = this.end(mark);
    for (let i = this.journal.length - 1; i >= start; i--) {
      const u = this.journal[i]!;
      if (u.created) this.entries.delete(u.key);
      else this.entries.get(u.key)!.after = u.after;
    }
    this.journal.length = start;
  }

  /** Ends the savepoint `mark`, keeping what was recorded since. */
  release(mark: number): void {
    this.end(mark);
    if (this.marks.length === 0) this.journal.length = 0;
  }

  /** Pops the innermost savepoint, which must be `mark`; returns where its journal begins. */
  private end(mark: number): number {
    if (mark !== this.marks.length || mark === 0) {
      throw new Error(`store: savepoint ${mark} is not the innermost open one (${this.marks.length} open)`);
    }
    return this.marks.pop()!;
  }

  /**
   * The audit row's before/after as JSON (null for none): the resource's
   * JSON when one resource changed (null before a create, null after a
   * delete); otherwise objects keyed like the log, `before` holding each
   * changed resource that existed before, `after` each that exists after (a
   * created one is only in `after`, a deleted one only in `before`: a burst
   * creates thousands, and a null for each was a fifth of the row). Written
   * as text from the entries, the same text JSON.stringify gives for such
   * objects (keys are never integers, so insertion order holds): an object
   * with thousands of keys was the audit's cost.
   */
  auditJson(): { before: string | null; after: string | null } {
    if (this.entries.size === 1) {
      const e = this.entries.values().next().value as LogEntry;
      return { before: json(e.before), after: json(e.after) };
    }
    // Appended to one string each rather than joined from a list: a third less time with SQLite's copy included.
    let before = '';
    let after = '';
    for (const [k, v] of this.entries) {
      const key = JSON.stringify(k);
      if (v.before !== undefined && v.before !== null) before += `${before === '' ? '' : ','}${key}:${JSON.stringify(v.before)}`;
      if (v.after !== undefined && v.after !== null) after += `${after === '' ? '' : ','}${key}:${JSON.stringify(v.after)}`;
    }
    return { before: `{${before}}`, after: `{${after}}` };
  }
}

function json(v: unknown): string | null {
  return v === null || v === undefined ? null : JSON.stringify(v);
}
