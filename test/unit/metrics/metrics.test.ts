/**
 * Prometheus metrics: values come from the source at scrape time (the
 * datapath's monotonic counters), API requests are counted by route and
 * status, and /metrics serves the exposition format.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { StatsBody, StatusBody } from '../../../src/model/status.js';
import { FerryMetrics, type MetricsSource } from '../../../src/metrics/index.js';
import { call, makeApi } from '../../lib/api-fixture.js';

class Source implements MetricsSource {
  reads = 0;
  packets = 10;
  counters(): StatsBody {
    this.reads++;
    return {
      vips: [
        {
          name: 'web',
          packets: this.packets,
          bytes: 1500,
          new_flows: 2,
          ct_hits: 8,
          ct_misses: 2,
          drops: 1,
          backends: [{ address: '198.51.100.1', packets: this.packets, bytes: 1500, new_flows: 2 }],
        },
      ],
      drops: { policy: 3, no_backend: 0 },
      counters: { rx: 40, events_suppressed: 5 },
    };
  }
  status(): StatusBody {
    return {
      version: 't',
      revision: 7,
      applied_revision: 7,
      uptime_seconds: 1,
      interfaces: [],
      maps: [
        { name: 'ferry_vips', max_entries: 64, used: 1 },
        { name: 'ferry_ct', max_entries: 65536 },
      ],
      last_reconcile: { changes: 0, duration_ms: 1 },
    };
  }
  health() {
    return [
      { vip: 'web', backend: '198.51.100.1', up: true },
      { vip: 'web', backend: '198.51.100.2', up: false },
    ];
  }
}

/** The value of one sample line, e.g. value(text, 'ferry_vip_packets_total{vip="web"}'). */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metrics', () => {
  it('mirrors the source at each scrape, reading it once per scrape', async () => {
    const src = new Source();
    const m = new FerryMetrics(src);
    let text = await m.render();
    assert.equal(src.reads, 1, 'one datapath read per scrape');
    assert.equal(value(text, 'ferry_vip_packets_total{vip="web"}'), 10);
    assert.equal(value(text, 'ferry_vip_bytes_total{vip="web"}'), 1500);
    assert.equal(value(text, 'ferry_vip_conntrack_hits_total{vip="web"}'), 8);
    assert.equal(value(text, 'ferry_backend_packets_total{vip="web",backend="198.51.100.1"}'), 10);
    assert.equal(value(text, 'ferry_drops_total{reason="policy"}'), 3);
    assert.equal(value(text, 'ferry_datapath_packets_total{counter="events_suppressed"}'), 5);
    assert.equal(value(text, 'ferry_map_capacity{map="ferry_ct"}'), 65536);
    assert.equal(value(text, 'ferry_map_entries{map="ferry_vips"}'), 1);
    assert.equal(value(text, 'ferry_map_entries{map="ferry_ct"}'), undefined, 'no figure for maps not counted');
    assert.equal(value(text, 'ferry_applied_revision'), 7);
    assert.equal(value(text, 'ferry_backend_up{vip="web",backend="198.51.100.2"}'), 0);
    assert.match(text, /# TYPE ferry_vip_packets_total counter/);
    src.packets = 25;
    text = await m.render();
    assert.equal(value(text, 'ferry_vip_packets_total{vip="web"}'), 25, 'follows the datapath, not an internal tally');
    m.observeReconcile({ changes: 3, durationMs: 4 });
    text = await m.render();
    assert.equal(value(text, 'ferry_reconcile_duration_seconds_count'), 1);
    assert.equal(value(text, 'ferry_reconcile_duration_seconds_bucket{le="0.005"}'), 1);
  });

  it('GET /metrics serves the exposition and counts API requests by route and status', async () => {
    const api = await makeApi({ metrics: new FerryMetrics(new Source()) });
    try {
      await call(api.app, { method: 'POST', url: '/v1/vips', body: { name: 'web', address: '198.18.0.10', port: 80, protocol: 'tcp' } });
      await call(api.app, { url: '/v1/vips/nope' });
      const res = await call(api.app, { url: '/metrics' });
      assert.equal(res.statusCode, 200);
      assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
      assert.equal(value(res.body, 'ferry_api_requests_total{method="POST",route="/v1/vips",status="201"}'), 1);
      assert.equal(value(res.body, 'ferry_api_requests_total{method="GET",route="/v1/vips/:name",status="404"}'), 1);
      assert.ok((value(res.body, 'ferry_reconcile_duration_seconds_count') ?? 0) >= 1, 'writes observed through the controller');
      assert.match(res.body, /process_cpu_seconds_total/);
    } finally {
      await api.close();
    }
  });
});

describe('Grafana dashboard', () => {
  it('is valid JSON whose every query names only metrics Ferry exports', async () => {
    const { readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { packageRoot } = await import('../../../src/paths.js');
    const dash = JSON.parse(readFileSync(join(packageRoot(), 'config', 'grafana', 'ferry-dashboard.json'), 'utf8')) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
    };
    const text = await new FerryMetrics(new Source()).render();
    const exported = new Set(
      text
        .split('\n')
        .filter((l) => l.startsWith('# TYPE '))
        .map((l) => l.split(' ')[2]!),
    );
    assert.ok(dash.panels.length >= 10);
    for (const p of dash.panels) {
      for (const t of p.targets) {
        for (const name of t.expr.match(/\bferry_[a-z_]+/g) ?? []) {
          const base = name.replace(/_(bucket|count|sum)$/, '');
          assert.ok(exported.has(base), `${p.title}: ${name} is exported`);
        }
      }
    }
  });
});
