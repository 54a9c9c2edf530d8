/**
 * FleetRoute: the API's writes on a fleet member go to etcd first.
 *
 * The change runs as a dry run against this host's store (so it is
 * checked exactly as a local write is: validation, conflicts, If-Match);
 * the VIPs and policies it touched become puts and deletes of their keys,
 * committed in one etcd transaction that requires the fence, and each key,
 * to be at the revision this host mirrors. Refused because another write
 * came first: wait until the mirror holds it and try again, within the
 * write timeout (fleet.write_timeout_ms, then 503). Committed: the
 * change runs on the local store for real (the answer is its result) and
 * every other member applies it from its watch.
 */
import type { Namespace } from 'etcd3';
import type { Controller, WriteResult, WriteRoute } from '../control/controller.js';
import { FleetUnavailableError, ValidationError } from '../model/errors.js';
import type { StoreTx } from '../store/types.js';
import { FENCE, type FenceValue } from './keys.js';
import type { FleetMirror } from './mirror.js';

export interface RouteOptions {
  ns: Namespace;
  mirror: FleetMirror;
  controller: Controller;
  host: string;
  endpoints: readonly string[];
  timeoutMs: number;
}

type Attempt<T> = { done: true; result: WriteResult<T> } | { done: false; retryAt: number };

export class FleetRoute implements WriteRoute {
  constructor(private readonly o: RouteOptions) {}

  async write<T>(actor: string, action: string, fn: (tx: StoreTx) => T): Promise<WriteResult<T>> {
    const end = Date.now() + this.o.timeoutMs;
    for (let attempt = 1; ; attempt++) {
      const out = await this.o.mirror.exclusive(() => this.attempt(actor, action, fn));
      if (out.done) return out.result;
      const left = end - Date.now();
      if (left <= 0) {
        throw new FleetUnavailableError(
          `other members' writes came first ${attempt} times within ${this.o.timeoutMs} ms; nothing was changed: try again`,
        );
      }
      await this.o.mirror.until(out.retryAt, left);
    }
  }

  private async attempt<T>(actor: string, action: string, fn: (tx: StoreTx) => T): Promise<Attempt<T>> {
    const { mirror, controller, ns } = this.o;
    if (!mirror.live) {
      throw new FleetUnavailableError(
        `the fleet store (etcd ${this.o.endpoints.join(', ')}) is unreachable${mirror.lastError === null ? '' : `: ${mirror.lastError}`}; ` +
          'writes go to etcd first, so nothing was changed (this host keeps serving what it mirrored last)',
      );
    }
    if (mirror.stalled !== null) {
      throw new FleetUnavailableError(`this host is behind the fleet store (${mirror.stalled}); writes wait until it has caught up`);
    }
    // Throws what a local write would (validation, conflict, precondition): nothing reaches etcd.
    const named = controller.dryRun((tx) => {
      fn(tx);
      return tx.exportNamed(tx.touched(), null);
    });
    const ops = mirror.diff(named);
    if (ops.length === 0) return { done: true, result: controller.write(actor, action, fn) };
    const fence: FenceValue = { host: this.o.host, actor, action, time: new Date().toISOString() };
    const fenceJson = JSON.stringify(fence);
    let txn = ns.if(FENCE, 'Mod', '==', mirror.modOf(FENCE));
    for (const op of ops) txn = txn.and(op.key, 'Mod', '==', op.mod);
    txn = txn.then(
      ...ops.map((op) => (op.value === null ? ns.delete().key(op.key) : ns.put(op.key).value(op.value))),
      ns.put(FENCE).value(fenceJson),
    );
    const res = await this.commit(txn.commit(), ops.length);
    const revision = Number(res.header.revision);
    if (!res.succeeded) return { done: false, retryAt: revision };
    mirror.wrote(ops, fenceJson, revision);
    return { done: true, result: controller.write(actor, action, fn) };
  }

  /** etcd's answer within the write timeout; what it refuses becomes an error the API can answer. */
  private async commit<R>(p: Promise<R>, keys: number): Promise<R> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new FleetUnavailableError(
              `the fleet store did not answer within ${this.o.timeoutMs} ms; the change may still be committed: read it back before retrying`,
            ),
          ),
        this.o.timeoutMs,
      );
    });
    try {
      return await Promise.race([p, timeout]);
    } catch (err) {
      if (err instanceof FleetUnavailableError) throw err;
      const message = (err as Error).message;
      if (/too many operations/i.test(message)) {
        throw new ValidationError([
          {
            field: '/',
            reason: `this change touches ${keys} fleet keys, more than etcd takes in one transaction (etcd's --max-txn-ops); split it`,
          },
        ]);
      }
      if (/request is too large/i.test(message)) {
        throw new ValidationError([
          { field: '/', reason: `this change is larger than etcd takes in one request (etcd's --max-request-bytes); split it` },
        ]);
      }
      throw new FleetUnavailableError(`the fleet store refused the write: ${message}; nothing was changed`);
    } finally {
      clearTimeout(timer);
    }
  }
}
