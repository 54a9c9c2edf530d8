/** Health checks: probes, rise/fall state, the checker and the daemon's monitor. */
export { DEFAULT_MAX_IN_FLIGHT, HealthChecker, type CheckerOptions, type CheckerStats, type Transition } from './checker.js';
export { HealthMonitor, isEvent, type HealthMonitorOptions } from './monitor.js';
export { describeError, runProbe, type Probe, type ProbeFn, type ProbeResult } from './probe.js';
export { targetKey, targetOf, targetsOf, type Target } from './targets.js';
