/** The planner (store snapshot → DpState) and the reconciler (DpState → BPF maps). */
export { plan, backendState, rateLimitNs, vipFlags, type HealthFn, type PlanOptions } from './plan.js';
export { Reconciler, type ApplyReport } from './reconciler.js';
export { ReconcileError, tableDigest } from './desired.js';
