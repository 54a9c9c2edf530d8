/**
 * The Kubernetes API test server (test/lib/k8s-server.ts) in a thread of its
 * own, as the Kubernetes benchmarks run it. A real API server is another
 * process, often another machine: storing objects and writing the watch
 * streams is its work, not Ferry's. In Ferry's thread they took a tenth of
 * a burst's samples (its events' JSON and the socket writes), which the
 * benchmark then counted as Ferry's.
 *
 * A change is handed over in two steps so that a benchmark starts its clock
 * when the API server has the events ready to send, and times the watch
 * streams from there: stage() copies the objects to the thread and prepares
 * them there (stamped with uids and resourceVersions, encoded as JSON),
 * publish() stores them and writes their events to the watch connections.
 * Encoding 20,000 objects took the thread ~0.35 s, during which the burst's
 * clock ran with nothing sent yet.
 */
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import type { KubeObject } from '../src/k8s/types.js';
import { K8sTestServer, type PreparedChanges, type ResourceName } from '../test/lib/k8s-server.js';

export type Change = readonly [ResourceName, KubeObject];

type Op = { op: 'stage'; list: Change[] } | { op: 'publish' } | { op: 'close' };
type Request = Op & { id: number };
type Reply = { id: number; error?: string };

export class K8sServerThread {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly worker: Worker,
    /** A kubeconfig file for the server (token auth, plain HTTP on 127.0.0.1). */
    readonly kubeconfig: string,
  ) {
    worker.on('message', (r: Reply) => {
      const w = this.waiting.get(r.id);
      this.waiting.delete(r.id);
      if (r.error === undefined) w?.resolve();
      else w?.reject(new Error(`k8s server thread: ${r.error}`));
    });
    worker.on('error', (err) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  static async start(): Promise<K8sServerThread> {
    const worker = new Worker(new URL(import.meta.url));
    const kubeconfig = await new Promise<string>((resolve, reject) => {
      worker.once('message', (m: { kubeconfig: string }) => resolve(m.kubeconfig));
      worker.once('error', reject);
    });
    return new K8sServerThread(worker, kubeconfig);
  }

  /** Copies changes to the server's thread, which prepares them; nothing is stored or sent yet. */
  stage(list: readonly Change[]): Promise<void> {
    return this.call({ op: 'stage', list: [...list] });
  }

  /** Stores what was staged and writes its events to the watch connections; resolves once handed to their sockets. */
  publish(): Promise<void> {
    return this.call({ op: 'publish' });
  }

  /** stage() then publish(), for changes whose copying is not worth leaving out of a measure. */
  async upsertMany(list: readonly Change[]): Promise<void> {
    await this.stage(list);
    await this.publish();
  }

  upsert(resource: ResourceName, obj: KubeObject): Promise<void> {
    return this.upsertMany([[resource, obj]]);
  }

  async close(): Promise<void> {
    await this.call({ op: 'close' });
    await this.worker.terminate();
  }

  private call(req: Op): Promise<void> {
    const id = this.next++;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...req, id } satisfies Request);
    });
  }
}

/** The thread's side: one server, the staged changes, and a reply per request. */
async function serve(): Promise<void> {
  const port = parentPort!;
  const server = await K8sTestServer.start();
  let staged: Change[] = [];
  let prepared: PreparedChanges | null = null;
  port.on('message', (req: Request) => {
    void (async (): Promise<Reply> => {
      try {
        if (req.op === 'stage') {
          const next = staged.concat(req.list);
          prepared = server.prepare(next);
          staged = next;
        } else if (req.op === 'publish') {
          const [list, p] = [staged, prepared];
          staged = [];
          prepared = null;
          // Anything written since stage() (a Lease) leaves the prepared changes stale: they are prepared again.
          if (p !== null) server.commit(server.isCurrent(p) ? p : server.prepare(list));
        } else await server.close();
        return { id: req.id };
      } catch (err) {
        return { id: req.id, error: (err as Error).message };
      }
    })().then((reply) => port.postMessage(reply));
  });
  port.postMessage({ kubeconfig: server.writeKubeconfig() });
}

if (!isMainThread) void serve();
