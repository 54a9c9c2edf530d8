/**
 * xdp_lb under fuzzed frames (fast-check, a fixed seed): valid, mutated,
 * truncated and random frames of every kind go through BPF_PROG_TEST_RUN
 * and every invariant of test/lib/packet-fuzz.ts is checked on each.
 * `npm run soak` runs the same with far more cases.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LbHarness, bpfUnavailable } from '../../lib/harness.js';
import { fuzzPackets, programFuzzWorld } from '../../lib/packet-fuzz.js';

const skip = bpfUnavailable();
if (skip) console.log(`# skipping packet fuzzing: ${skip}`);

/** At least 100,000 frames in CI (the floor); FERRY_FUZZ_RUNS raises it locally. */
const RUNS = Math.max(100_000, Number(process.env.FERRY_FUZZ_RUNS ?? 0));
const SEED = 0x0f0e0d0c;

describe('xdp_lb packet fuzzing', { skip }, () => {
  let h: LbHarness;
  before(() => {
    h = new LbHarness(`/sys/fs/bpf/ferry-test-fuzz-${process.pid}`);
    programFuzzWorld(h);
  });
  after(() => h?.close());

  it(`keeps every invariant over ${RUNS} fuzzed frames`, () => {
    const t = fuzzPackets(h, { seed: SEED, runs: RUNS });
    console.log(`# packet fuzzing: ${JSON.stringify(t)}`);
    assert.equal(t.cases, RUNS);
    // The generators must reach every outcome, or the invariants were not exercised.
    assert.ok(t.pass > 0 && t.drop > 0 && t.encapsulated > 0 && t.echoReplies > 0, JSON.stringify(t));
    for (const r of ['malformed_l3', 'malformed_l4', 'ip_options', 'fragment', 'ipv6_exthdr', 'icmp_malformed'] as const) {
      assert.ok((t.dropsByReason[r] ?? 0) > 0, `no frame was dropped as ${r}: ${JSON.stringify(t.dropsByReason)}`);
    }
  });
});
