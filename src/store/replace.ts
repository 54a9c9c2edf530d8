/**
 * replaceState: makes the resources of one owner equal to a desired state
 * (PUT /v1/state, ferryctl apply, the Kubernetes mode), inside the caller's
 * transaction, and answers with the diff.
 *
 * Order of the writes, chosen so no step depends on a later one:
 *   1. delete this owner's VIPs that are not desired (frees ids, endpoints
 *      and policy references for what follows);
 *   2. create/update policies (VIPs may reference new ones);
 *   3. create/update VIPs;
 *   4. remove undesired backends everywhere, then update/create backends
 *      (removals first, so ids freed with drain 0 can be reused);
 *   5. delete this owner's policies that are no longer desired (no VIP of
 *      this owner references them any more).
 * The final state is checked up front (validation, collisions with other
 * owners' resources), so a refused apply changes nothing.
 *
 * With a scope (the fleet mirror: the etcd keys one watch event changed),
 * only the named VIPs and policies are made equal to `desired`: a named one
 * missing from it is deleted, everything unnamed stays and counts as
 * another resource for the checks (its endpoint, its policy references).
 */
import { ConflictError, ValidationError } from '../model/errors.js';
import type { DesiredState } from '../model/types.js';
import { validateDesiredState } from '../model/validate.js';
import {
  normBackend,
  normPolicy,
  normVip,
  type BackendRow,
  type NormBackend,
  type NormPolicy,
  type NormVip,
  type PolicyRow,
  type VipRow,
} from './rows.js';
import type { Statements } from './statements.js';
import { checkDrain, describeEndpoint, ownerLabel } from './owners.js';
import type { ReplaceScope, StateChange } from './types.js';

interface WantedVip {
  vip: NormVip;
  backends: NormBackend[];
}

interface Wanted {
  policies: NormPolicy[];
  vips: WantedVip[];
}

const KIND_ORDER: Record<StateChange['kind'], number> = { policy: 0, vip: 1, backend: 2 };
const OP_ORDER: Record<StateChange['op'], number> = { create: 0, update: 1, delete: 2 };

/** What replacing needs of the transaction it runs in (tx.ts's Tx): one record at a time, each in its savepoint. */
export interface RecordWriter {
  mustVip(name: string): VipRow;
  insertVip(norm: NormVip, owner: string | null): { row: VipRow };
  updateVip(row: VipRow, norm: NormVip): { changed: boolean };
  removeVip(row: VipRow): unknown;
  insertBackends(vip: VipRow, norms: readonly NormBackend[], owner: string | null): ReadonlyArray<{ address: string }>;
  updateBackend(row: BackendRow, norm: NormBackend): { changed: boolean };
  removeBackend(vip: VipRow, row: BackendRow, drainSeconds: number): unknown;
  insertPolicy(norm: NormPolicy, owner: string | null): unknown;
  updatePolicy(row: PolicyRow, norm: NormPolicy): { changed: boolean };
  removePolicy(row: PolicyRow): unknown;
}

export function replaceState(
  tx: RecordWriter,
  st: Statements,
  desired: DesiredState,
  drainSeconds: number,
  owner: string | null,
  scope?: ReplaceScope,
): StateChange[] {
  checkDrain(drainSeconds);
  const inScope = scopeOf(desired, scope);
  const wanted = validateAndNormalize(st, desired, owner, inScope);
  const existing = assertNoForeignCollisions(st, wanted, owner, inScope);
  const changes: StateChange[] = [];
  deleteUnwantedVips(tx, st, wanted, owner, inScope, changes);
  upsertPolicies(tx, st, wanted, owner, changes);
  const created = upsertVips(tx, wanted, existing, owner, changes);
  syncBackends(tx, st, wanted, created, drainSeconds, owner, changes);
  deleteUnwantedPolicies(tx, st, wanted, owner, inScope, changes);
  return changes.sort(compareChanges);
}

/** Whether a resource is the replace's to change; without a scope, every resource of the owner is. */
interface InScope {
  vip(name: string): boolean;
  policy(name: string): boolean;
  /** The owner's resources the replace may delete. */
  vips(st: Statements, owner: string | null): Array<{ name: string }>;
  policies(st: Statements, owner: string | null): Array<{ name: string }>;
}

function scopeOf(desired: DesiredState, scope: ReplaceScope | undefined): InScope {
  if (scope === undefined) {
    return {
      vip: () => true,
      policy: () => true,
      vips: (st, owner) => st.vipsByOwner.all(owner),
      policies: (st, owner) => st.policiesByOwner.all(owner),
    };
  }
  // What the desired state declares is in scope too.
  const vips = new Set([...scope.vips, ...desired.vips.map((v) => v.name)]);
  const policies = new Set([...scope.policies, ...(desired.policies ?? []).map((p) => p.name)]);
  const owned = <R extends { owner: string | null }>(names: Set<string>, get: (n: string) => R | undefined, owner: string | null): R[] =>
    [...names].map(get).filter((r): r is R => r !== undefined && r.owner === owner);
  return {
    vip: (n) => vips.has(n),
    policy: (n) => policies.has(n),
    vips: (st, owner) => owned(vips, (n) => st.vipByName.get(n), owner),
    policies: (st, owner) => owned(policies, (n) => st.policyByName.get(n), owner),
  };
}

/** A stable order: policies, VIPs, backends; creates, updates, deletes; then by name. */
function compareChanges(a: StateChange, b: StateChange): number {
  return KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || OP_ORDER[a.op] - OP_ORDER[b.op] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/**
 * Validates the file. A VIP may reference another owner's policy (it stays),
 * but not one of this owner's that the file no longer declares (it goes).
 */
function validateAndNormalize(st: Statements, desired: DesiredState, owner: string | null, inScope: InScope): Wanted {
  const externalPolicyExists = (name: string): boolean => {
    const p = st.policyByName.get(name);
    return p !== undefined && (p.owner !== owner || !inScope.policy(name));
  };
  const errors = validateDesiredState(desired, { externalPolicyExists });
  if (errors.length > 0) throw new ValidationError(errors);
  return {
    policies: (desired.policies ?? []).map(normPolicy),
    vips: desired.vips.map((v) => ({ vip: normVip(v), backends: (v.backends ?? []).map(normBackend) })),
  };
}

/**
 * Everything of another owner the desired state would overwrite, refused in
 * one ConflictError. Returns the wanted VIPs' rows as they are (undefined:
 * none by that name), which deleting the unwanted ones leaves as they are.
 */
function assertNoForeignCollisions(
  st: Statements,
  wanted: Wanted,
  owner: string | null,
  inScope: InScope,
): Map<string, VipRow | undefined> {
  const problems: string[] = [];
  const rows = new Map<string, VipRow | undefined>();
  for (const p of wanted.policies) {
    const row = st.policyByName.get(p.name);
    if (row !== undefined && row.owner !== owner) problems.push(`policy "${p.name}" exists and is owned by ${ownerLabel(row.owner)}`);
  }
  for (const { vip } of wanted.vips) {
    const row = st.vipByName.get(vip.name);
    rows.set(vip.name, row);
    if (row !== undefined && row.owner !== owner) problems.push(`vip "${vip.name}" exists and is owned by ${ownerLabel(row.owner)}`);
    for (const other of st.vipsAtEndpoint.all(vip.address, vip.port, vip.protocol)) {
      if (other.owner !== owner || (other.name !== vip.name && !inScope.vip(other.name))) {
        problems.push(
          `vip "${vip.name}": ${describeEndpoint(vip)} is already used by vip "${other.name}" (owned by ${ownerLabel(other.owner)})`,
        );
      }
    }
  }
  const keep = new Set(wanted.policies.map((p) => p.name));
  for (const p of inScope.policies(st, owner)) {
    if (keep.has(p.name)) continue;
    const users = st.policyReferrers
      .all(p.name)
      .filter((r) => r.owner !== owner || !inScope.vip(r.name))
      .map((r) => `"${r.name}"${r.owner === owner ? '' : ' of another owner'}`);
    if (users.length > 0) problems.push(`policy "${p.name}" cannot be deleted: vip ${users.join(', ')} references it`);
  }
  if (problems.length > 0) throw new ConflictError(problems.join('; '));
  return rows;
}

function deleteUnwantedVips(
  tx: RecordWriter,
  st: Statements,
  wanted: Wanted,
  owner: string | null,
  inScope: InScope,
  changes: StateChange[],
): void {
  const keep = new Set(wanted.vips.map((w) => w.vip.name));
  for (const { name } of inScope.vips(st, owner)) {
    if (keep.has(name)) continue;
    const row = tx.mustVip(name);
    for (const b of st.backendsOfVip.all(row.id)) changes.push({ op: 'delete', kind: 'backend', name: `${row.name}/${b.address}` });
    tx.removeVip(row);
    changes.push({ op: 'delete', kind: 'vip', name: row.name });
  }
}

function upsertPolicies(tx: RecordWriter, st: Statements, wanted: Wanted, owner: string | null, changes: StateChange[]): void {
  for (const p of wanted.policies) {
    const row = st.policyByName.get(p.name);
    if (row === undefined) {
      tx.insertPolicy(p, owner);
      changes.push({ op: 'create', kind: 'policy', name: p.name });
    } else if (tx.updatePolicy(row, p).changed) {
      changes.push({ op: 'update', kind: 'policy', name: p.name });
    }
  }
}

/** `existing`: the wanted VIPs' rows. Returns the rows of the VIPs it created, by name. */
function upsertVips(
  tx: RecordWriter,
  wanted: Wanted,
  existing: ReadonlyMap<string, VipRow | undefined>,
  owner: string | null,
  changes: StateChange[],
): Map<string, VipRow> {
  const created = new Map<string, VipRow>();
  for (const { vip } of wanted.vips) {
    const row = existing.get(vip.name);
    if (row === undefined) {
      created.set(vip.name, tx.insertVip(vip, owner).row);
      changes.push({ op: 'create', kind: 'vip', name: vip.name });
    } else if (tx.updateVip(row, vip).changed) {
      changes.push({ op: 'update', kind: 'vip', name: vip.name });
    }
  }
  return created;
}

/** Removals on every VIP first, then updates and creations. `created`: VIPs this replace inserted, which have no backends yet. */
function syncBackends(
  tx: RecordWriter,
  st: Statements,
  wanted: Wanted,
  created: ReadonlyMap<string, VipRow>,
  drainSeconds: number,
  owner: string | null,
  changes: StateChange[],
): void {
  const plans = wanted.vips.map((w) => {
    const fresh = created.get(w.vip.name);
    const vipRow = fresh ?? tx.mustVip(w.vip.name);
    const current = new Map(fresh !== undefined ? [] : st.backendsOfVip.all(vipRow.id).map((b) => [b.address, b]));
    return { vipRow, backends: w.backends, current };
  });
  for (const { vipRow, backends, current } of plans) {
    const keep = new Set(backends.map((b) => b.address));
    for (const [address, row] of current) {
      if (keep.has(address)) continue;
      tx.removeBackend(vipRow, row, drainSeconds);
      changes.push({ op: 'delete', kind: 'backend', name: `${vipRow.name}/${address}` });
    }
  }
  for (const { vipRow, backends, current } of plans) {
    const added: NormBackend[] = [];
    for (const b of backends) {
      const row = current.get(b.address);
      if (row === undefined) added.push(b);
      else if (tx.updateBackend(row, b).changed) changes.push({ op: 'update', kind: 'backend', name: `${vipRow.name}/${b.address}` });
    }
    for (const b of tx.insertBackends(vipRow, added, owner))
      changes.push({ op: 'create', kind: 'backend', name: `${vipRow.name}/${b.address}` });
  }
}

function deleteUnwantedPolicies(
  tx: RecordWriter,
  st: Statements,
  wanted: Wanted,
  owner: string | null,
  inScope: InScope,
  changes: StateChange[],
): void {
  const keep = new Set(wanted.policies.map((p) => p.name));
  for (const { name } of inScope.policies(st, owner)) {
    if (keep.has(name)) continue;
    const row = st.policyByName.get(name)!;
    tx.removePolicy(row);
    changes.push({ op: 'delete', kind: 'policy', name: row.name });
  }
}
