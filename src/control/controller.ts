/**
 * The one path every change takes: store transaction → plan → datapath
 * apply → commit. A change is acknowledged only after SQLite committed it
 * and the maps hold it; if the datapath refuses, the transaction rolls back
 * and the maps are put back to the committed state, so nothing is ever
 * half-applied.
 */
import type { Applier, DpState, ReconcileReport } from '../model/dpstate.js';
import { DatapathError, FerryError } from '../model/errors.js';
import type { Store, StoreState, StoreTx } from '../store/types.js';

/** Thrown inside a dry-run transaction to roll it back. */
const DRY_RUN = Symbol('dry-run');

/** The desired datapath contents of a committed (or about to be committed) state. */
export type Planner = (state: StoreState) => DpState;

export interface WriteResult<T> {
  result: T;
  /** The revision now live in the store and the datapath. */
  revision: number;
  report: ReconcileReport;
}

/**
 * Where the API's writes go when the local store is not their first stop
 * (the fleet: etcd first, then every host's mirror). It runs `fn` against
 * the local store itself once the change is accepted, so the answer is the
 * local result.
 */
export interface WriteRoute {
  write<T>(actor: string, action: string, fn: (tx: StoreTx) => T): Promise<WriteResult<T>>;
}

export class Controller {
  /** Set when the API's writes take another route first (the fleet store). */
  route: WriteRoute | undefined;
  private applied = 0;
  private lastReport: ReconcileReport = { changes: 0, durationMs: 0 };
  /** Told of every datapath apply and the plan it applied (metrics, drain timer, BGP announcements). */
  onApply: ((report: ReconcileReport, plan: DpState) => void) | undefined;

  constructor(
    private readonly store: Store,
    private readonly applier: Applier,
    private readonly planner: Planner,
  ) {}

  /** The revision the store holds (committed). */
  revision(): number {
    return this.store.revision();
  }

  /** An online copy of the store into `path` (writers continue meanwhile). */
  backup(path: string, onProgress?: (done: number, total: number) => void): Promise<void> {
    return this.store.backup(path, onProgress);
  }

  /** The revision the datapath holds. */
  get appliedRevision(): number {
    return this.applied;
  }

  /** The last reconcile()'s report (start-up, periodic pass, health changes): drift it repaired; writes do not count. */
  get lastReconcile(): ReconcileReport {
    return this.lastReport;
  }

  /** Applies the committed state to the datapath (start-up, periodic drift repair, health changes). */
  reconcile(): ReconcileReport {
    const state = this.store.read((tx) => tx.state());
    const plan = this.planner(state);
    this.lastReport = this.applier.apply(plan);
    this.applied = state.revision;
    this.onApply?.(this.lastReport, plan);
    return this.lastReport;
  }

  /**
   * An operator's change (the API): through the write route when there is
   * one, otherwise write(). Other writers (Kubernetes sync, timers) call
   * write() directly: their resources are this host's own.
   */
  async change<T>(actor: string, action: string, fn: (tx: StoreTx) => T): Promise<WriteResult<T>> {
    return this.route === undefined ? this.write(actor, action, fn) : this.route.write(actor, action, fn);
  }

  /** Runs a change in one transaction and applies it before committing. */
  write<T>(actor: string, action: string, fn: (tx: StoreTx) => T): WriteResult<T> {
    let report: ReconcileReport = { changes: 0, durationMs: 0 };
    let plan: DpState | undefined;
    let touchedDatapath = false;
    try {
      const { result, revision } = this.store.write(actor, action, fn, (tx) => {
        touchedDatapath = true;
        try {
          plan = this.planner(tx.state());
          report = this.applier.apply(plan);
        } catch (err) {
          if (err instanceof FerryError) throw err;
          throw new DatapathError(`datapath refused the change: ${err instanceof Error ? err.message : String(err)}`);
        }
      });
      if (touchedDatapath && plan !== undefined) {
        this.applied = revision;
        this.onApply?.(report, plan);
      }
      return { result, revision, report };
    } catch (err) {
      // The store rolled back; the maps may hold part of the refused change.
      if (touchedDatapath) this.restore();
      throw err;
    }
  }

  /**
   * Runs a change in a transaction that always rolls back and never touches
   * the datapath: the answer to "what would this do" (apply --dry-run).
   */
  dryRun<T>(fn: (tx: StoreTx) => T): T {
    const box: { value?: T } = {};
    try {
      this.store.write('dry-run', 'dry-run', (tx) => {
        box.value = fn(tx);
        throw DRY_RUN;
      });
    } catch (err) {
      if (err !== DRY_RUN) throw err;
    }
    return box.value as T;
  }

  read<T>(fn: (tx: StoreTx) => T): T {
    return this.store.read(fn);
  }

  private restore(): void {
    try {
      this.reconcile();
    } catch {
      // The datapath is failing as a whole; readiness reports it and the next reconcile retries.
    }
  }
}
