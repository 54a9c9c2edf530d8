/**
 * The status page (/ui) in a real headless Chromium (Debian's `chromium`,
 * driven by playwright-core) against a real ferryd in the lab: ferryd
 * listens on TCP in the load balancer's namespace with a read-only and a
 * read-write token, and Chromium runs in that namespace too. The page asks
 * for a token, shows the VIPs with their backends, health and Maglev shares,
 * its plots move while the lab's client sends traffic, a read-only token
 * gets no buttons, a read-write one drains a backend from the page (the
 * store says draining too), and the page's files stay under 200 KB.
 * Screenshots go to artifacts/ui/.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { LbLab } from '../../../src/lab/lblab.js';
import { packageRoot } from '../../../src/paths.js';
import { bpfUnavailable } from '../../lib/harness.js';
import { until } from '../../lib/until.js';

const CHROMIUM = '/usr/bin/chromium';
const skip =
  bpfUnavailable() || (existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (Debian's chromium; scripts/setup.sh installs it)`);
const VIP4 = '198.19.0.10';
const PORT = 8480;
const READ = 'ui-read-token-0123456789';
const WRITE = 'ui-write-token-0123456789';
const ARTIFACTS = join(packageRoot(), 'artifacts', 'ui');
const BASE = `http://127.0.0.1:${PORT}`;

describe('status page in Chromium', { skip }, () => {
  let lab: LbLab;
  let browser: Browser;
  let traffic = true;
  let sending: Promise<void> | undefined;

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const dir = join(ARTIFACTS, '..', 'ui-lab');
    mkdirSync(dir, { recursive: true });
    const tokens = join(dir, 'tokens');
    writeFileSync(tokens, `# the status page test\n${READ} read\n${WRITE}\n`, { mode: 0o600 });
    lab = await LbLab.start({
      backends: 3,
      vips: [VIP4],
      api: { listen: `127.0.0.1:${PORT}`, tokens_file: tokens },
      // Every new flow reported on /v1/monitor: the page lists them.
      datapath: { events_flow_sample: 1 },
    });
    await lab.createVip({
      name: 'web',
      address: VIP4,
      port: 80,
      protocol: 'tcp',
      backends: lab.lab.backends.map((b) => ({ address: b.addr4 })),
    });
    // Chromium in the load balancer's namespace, where ferryd's TCP listener is.
    const wrapper = join(dir, 'chromium-in-lab');
    writeFileSync(wrapper, `#!/bin/sh\nexec nsenter --net=/run/netns/${lab.lab.lb.ns} -- ${CHROMIUM} "$@"\n`);
    chmodSync(wrapper, 0o755);
    browser = await chromium.launch({
      executablePath: wrapper,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--no-first-run'],
    });
  });

  after(async () => {
    traffic = false;
    await sending;
    await browser?.close();
    lab?.stop();
  });

  async function open(token: string): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${BASE}/ui`);
    await page.locator('#login').waitFor({ state: 'visible' });
    await page.fill('#token', token);
    await page.click('#login button');
    await page.locator('tr.vip-head[data-vip="web"]').waitFor();
    return page;
  }

  it('asks for a token, then shows the VIP with its backends, health and Maglev shares; read-only: no buttons', async () => {
    const page = await open(READ);
    await until(async () => (await page.locator('tr[data-vip="web"][data-backend]').count()) === 3, 'three backend rows');
    const rows = await page.locator('tr[data-vip="web"][data-backend]').evaluateAll((trs) =>
      trs.map((tr) => ({
        backend: tr.getAttribute('data-backend'),
        state: tr.getAttribute('data-state'),
        cells: [...tr.querySelectorAll('td')].map((td) => td.textContent),
      })),
    );
    assert.deepEqual(rows.map((r) => r.backend).sort(), lab.lab.backends.map((b) => b.addr4).sort());
    for (const r of rows) {
      assert.equal(r.state, 'active');
      assert.equal(r.cells[1], '100', 'weight');
      assert.match(r.cells[5] ?? '', /^3\d\.\d%$/, 'a third of the table each');
    }
    assert.match((await page.locator('#who').textContent()) ?? '', /api:token#1 · read-only/);
    assert.equal(await page.locator('[data-action]').count(), 0, 'no buttons for a read-only token');
    assert.match((await page.locator('#daemon').textContent()) ?? '', /revision \d+ \(datapath \d+\)/);
    assert.equal(await page.locator('.share span').count(), 3, 'the share bar has one part per backend');
    await page.screenshot({ path: join(ARTIFACTS, 'read-only.png'), fullPage: true });
    await page.close();
  });

  it('the plots move while traffic runs, and the live events list new flows', async () => {
    sending = (async () => {
      while (traffic) await lab.client('http', VIP4, 40, { parallel: 4 });
    })();
    const page = await open(READ);
    const plot = page.locator('#plot-packets');
    await until(async () => Number(await plot.getAttribute('data-last')) > 0, 'packets/s above zero', 20_000, 100);
    const before = Number(await plot.getAttribute('data-points'));
    await until(async () => Number(await plot.getAttribute('data-points')) >= before + 3, 'three more samples', 20_000, 100);
    assert.ok(Number(await page.locator('#plot-flows').getAttribute('data-last')) >= 0);
    // Each backend row shows a rate; some backend is taking packets.
    await until(
      async () => (await page.locator('tr[data-vip="web"][data-backend] td:nth-child(5)').allTextContents()).some((t) => t !== '0.0'),
      'a backend with packets/s',
      20_000,
      100,
    );
    // New flows from /v1/monitor, each naming the VIP and the backend the table chose.
    await until(async () => (await page.locator('#monitor li[data-kind="flow"]').count()) > 0, 'live flow events', 20_000, 100);
    const flow = (await page.locator('#monitor li[data-kind="flow"]').first().textContent()) ?? '';
    assert.match(flow, /flow \S+ → web → 198\.18\.0\.\d+ \((maglev|ct_stale)\)/);
    await page.screenshot({ path: join(ARTIFACTS, 'traffic.png'), fullPage: true });
    await page.close();
  });

  it('a read-write token drains a backend from the page: it shows as draining, and the store says so', async () => {
    const page = await open(WRITE);
    assert.match((await page.locator('#who').textContent()) ?? '', /api:token#2 · may write/);
    const target = lab.lab.backends[0]!.addr4;
    await page.locator(`tr[data-backend="${target}"] button[data-action="draining"]`).click();
    await page.locator(`tr[data-backend="${target}"][data-state="draining"]`).waitFor();
    const stored = await lab.api.get<{ state: string }>(`/v1/vips/web/backends/${target}`);
    assert.equal(stored.state, 'draining');
    // A draining backend takes no new flows: its share is 0.
    assert.equal(await page.locator(`tr[data-backend="${target}"] td:nth-child(6)`).textContent(), '0.0%');
    await page.screenshot({ path: join(ARTIFACTS, 'drained.png'), fullPage: true });
    await page.close();
  });

  it("the page's files add up to less than 200 KB, served with a content security policy; data needs a token", async () => {
    let total = 0;
    for (const f of ['', 'app.js', 'app.css', 'uplot.min.js', 'uplot.min.css']) {
      const r = await lab.api.request('GET', `/ui/${f}`);
      assert.equal(r.status, 200, f);
      total += r.raw.length;
      assert.match(String(r.headers['content-security-policy'] ?? ''), /default-src 'self'/);
    }
    assert.ok(total < 200 * 1024, `${total} bytes`);
    // From the browser (in the lab's namespace): data without a token is 401, a write with the read-only one 403.
    const page = await browser.newPage();
    await page.goto(`${BASE}/ui/`);
    const answers = await page.evaluate(
      async ([read, backend]) => {
        const anonymous = await fetch('/v1/vips');
        const write = await fetch(`/v1/vips/web/backends/${backend}`, {
          method: 'PUT',
          headers: { Authorization: `Bearer ${read}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ state: 'draining' }),
        });
        return [anonymous.status, write.status, ((await write.json()) as { type: string }).type];
      },
      [READ, lab.lab.backends[1]!.addr4] as const,
    );
    assert.deepEqual(answers.slice(0, 2), [401, 403]);
    assert.match(String(answers[2]), /read-only-token$/);
    await page.close();
  });
});
