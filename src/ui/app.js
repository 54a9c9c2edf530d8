// Ferry's status page: everything it shows comes from the REST API (with the
// bearer token the operator gives, kept for this tab only), polled, plus the
// live event stream of /v1/monitor. No framework: a few DOM helpers, and
// uPlot (loaded before this module as the global `uPlot`) for the plots.

const TOKEN_KEY = 'ferry-token';
const POINTS = 120;
const PALETTE = ['#3b6fd4', '#e07b39', '#2e8b57', '#9b59b6', '#c0392b', '#16a085', '#d4ac0d', '#7f8c8d'];
const MAX_VIPS = 25;

let token = sessionStorage.getItem(TOKEN_KEY);
let canWrite = false;
let stopped = false;

const $ = (id) => document.getElementById(id);

/** An element with attributes (data-*, class, …) and children (strings or elements). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

class Unauthorized extends Error {}

async function api(path, init = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (init.body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { ...init, headers });
  if (res.status === 401) throw new Unauthorized((await res.json().catch(() => ({}))).detail ?? 'a token is needed');
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${body.detail ?? res.statusText}`);
  }
  return res.status === 204 ? null : res.json();
}

function showLogin(message) {
  $('login').hidden = false;
  $('login-error').textContent = message;
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  start();
});

// ------------------------------------------------------------------ plots

const fmt = (n) =>
  n >= 1e9
    ? `${(n / 1e9).toFixed(1)}G`
    : n >= 1e6
      ? `${(n / 1e6).toFixed(1)}M`
      : n >= 1e3
        ? `${(n / 1e3).toFixed(1)}k`
        : n.toFixed(n < 10 ? 1 : 0);

/** A small time-series plot in `div` with one series per label; keeps the last POINTS samples. */
class Plot {
  constructor(div, labels) {
    this.div = div;
    this.labels = labels;
    this.data = [[], ...labels.map(() => [])];
    div.querySelector('.uplot')?.remove();
    this.u = new uPlot(
      {
        width: Math.max(280, div.clientWidth - 16),
        height: 150,
        legend: { show: false },
        axes: [{}, { values: (_u, ticks) => ticks.map(fmt), size: 60 }],
        series: [{}, ...labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 1.5 }))],
      },
      this.data,
      div,
    );
  }

  push(t, values) {
    this.data[0].push(t);
    values.forEach((v, i) => this.data[i + 1].push(v));
    if (this.data[0].length > POINTS) for (const s of this.data) s.shift();
    this.u.setData(this.data);
    // What a reader (or a test) can see without the canvas: samples so far and the latest total.
    this.div.dataset.points = String(this.data[0].length);
    this.div.dataset.last = String(values.reduce((a, b) => a + b, 0));
    if (this.labels.length > 1) {
      // Many series (drop reasons): name only those with a rate now, in their colours.
      const caption = this.div.querySelector('.caption') ?? this.div.appendChild(el('div', { class: 'caption' }));
      const now = this.labels.map((label, i) => [label, values[i], PALETTE[i % PALETTE.length]]).filter(([, v]) => v > 0);
      caption.replaceChildren(
        ...(now.length === 0
          ? ['none now']
          : now.map(([label, v, colour]) => el('span', { style: `color:${colour}` }, `${label} ${fmt(v)}  `))),
      );
    }
  }
}

let plots = null;
let previous = null;

function sumVips(stats, field) {
  return stats.vips.reduce((a, v) => a + v[field], 0);
}

function observeStats(stats) {
  const now = Date.now() / 1000;
  const reasons = Object.keys(stats.drops).sort();
  if (plots === null || plots.reasons.join() !== reasons.join()) {
    plots = {
      reasons,
      packets: new Plot($('plot-packets'), ['packets/s']),
      bytes: new Plot($('plot-bytes'), ['bytes/s']),
      flows: new Plot($('plot-flows'), ['new flows/s']),
      drops: new Plot($('plot-drops'), reasons.length > 0 ? reasons : ['drops/s']),
    };
    previous = null;
  }
  if (previous !== null && now > previous.t) {
    const dt = now - previous.t;
    const rate = (a, b) => Math.max(0, (a - b) / dt);
    plots.packets.push(now, [rate(sumVips(stats, 'packets'), sumVips(previous.stats, 'packets'))]);
    plots.bytes.push(now, [rate(sumVips(stats, 'bytes'), sumVips(previous.stats, 'bytes'))]);
    plots.flows.push(now, [rate(sumVips(stats, 'new_flows'), sumVips(previous.stats, 'new_flows'))]);
    plots.drops.push(now, reasons.length > 0 ? reasons.map((r) => rate(stats.drops[r], previous.stats.drops[r] ?? 0)) : [0]);
  }
  // The sample before this one too: the backend rates of the VIP table are taken between the two.
  previous = { t: now, stats, before: previous === null ? undefined : { t: previous.t, stats: previous.stats } };
}

/** Packets per second of each backend ("vip address") since the previous sample. */
function backendRates() {
  const out = new Map();
  if (previous === null || previous.before === undefined) return out;
  const dt = previous.t - previous.before.t;
  if (dt <= 0) return out;
  const old = new Map();
  for (const v of previous.before.stats.vips) for (const b of v.backends) old.set(`${v.name} ${b.address}`, b.packets);
  for (const v of previous.stats.vips) {
    for (const b of v.backends)
      out.set(`${v.name} ${b.address}`, Math.max(0, (b.packets - (old.get(`${v.name} ${b.address}`) ?? b.packets)) / dt));
  }
  return out;
}

// ------------------------------------------------------------------ VIPs

async function setBackend(vip, address, state) {
  try {
    await api(`/v1/vips/${encodeURIComponent(vip)}/backends/${encodeURIComponent(address)}`, {
      method: 'PUT',
      body: JSON.stringify({ state }),
    });
    await refreshVips();
  } catch (err) {
    alert(err.message);
  }
}

function shareBar(shares, m) {
  const bar = el('div', { class: 'share' });
  shares.forEach((s, i) => {
    if (s.slots === 0) return;
    bar.append(
      el('span', {
        style: `width:${(100 * s.slots) / m}%;background:${PALETTE[i % PALETTE.length]}`,
        title: `${s.address}: ${s.slots} of ${m} slots`,
      }),
    );
  });
  return bar;
}

function backendRow(vip, b, share, m, pps, colour) {
  const slots = share?.slots ?? 0;
  const actions = el('td');
  if (canWrite && vip.owner === null) {
    for (const [label, state] of [
      ['drain', 'draining'],
      ['disable', 'disabled'],
      ['activate', 'active'],
    ]) {
      if (b.state !== state)
        actions.append(el('button', { 'data-action': state, onclick: () => setBackend(vip.name, b.address, state) }, label));
    }
  }
  return el(
    'tr',
    { 'data-vip': vip.name, 'data-backend': b.address, 'data-state': b.state },
    el('td', {}, el('span', { style: `color:${colour}` }, '■ '), b.address, b.port ? `:${b.port}` : ''),
    el('td', {}, b.weight),
    el('td', { class: `state-${b.state}` }, b.state),
    el('td', { class: `health-${b.health?.status ?? 'unchecked'}` }, b.health?.status ?? 'unchecked'),
    el('td', {}, fmt(pps ?? 0)),
    el('td', {}, m > 0 ? `${((100 * slots) / m).toFixed(1)}%` : '–'),
    actions,
  );
}

async function refreshVips() {
  const page = await api(`/v1/vips?limit=${MAX_VIPS}`);
  const rates = backendRates();
  const table = el(
    'table',
    {},
    el('tr', {}, ...['backend', 'weight', 'state', 'health', 'pps', 'Maglev share', ''].map((h) => el('th', {}, h))),
  );
  for (const vip of page.items) {
    const [backends, shares] = await Promise.all([
      api(`/v1/vips/${encodeURIComponent(vip.name)}/backends?limit=1000`),
      api(`/v1/maglev/${encodeURIComponent(vip.name)}`).catch(() => null),
    ]);
    const byAddress = new Map((shares?.backends ?? []).map((s) => [s.address, s]));
    const ordered = shares?.backends ?? [];
    table.append(
      el(
        'tr',
        { class: 'vip-head', 'data-vip': vip.name },
        el(
          'td',
          { colspan: 4 },
          `${vip.name} — ${vip.address.includes(':') ? `[${vip.address}]` : vip.address}:${vip.port}/${vip.protocol}`,
          vip.owner ? ` (${vip.owner})` : '',
        ),
        el('td', {}, `${vip.backend_count} backends`),
        el('td', { colspan: 2 }, shares ? shareBar(ordered, shares.m) : ''),
      ),
    );
    for (const b of backends.items) {
      const i = ordered.findIndex((s) => s.address === b.address);
      table.append(
        backendRow(
          vip,
          b,
          byAddress.get(b.address),
          shares?.m ?? 0,
          rates.get(`${vip.name} ${b.address}`),
          PALETTE[(i < 0 ? 0 : i) % PALETTE.length],
        ),
      );
    }
  }
  $('vips').replaceChildren(page.items.length === 0 ? el('p', {}, 'No VIPs yet.') : table);
  if (page.next !== null) $('vips').append(el('p', {}, `The first ${MAX_VIPS} VIPs are shown (ferryctl vip list has them all).`));
}

// ------------------------------------------------------------------ events

async function refreshHealth() {
  const page = await api('/v1/health/events?limit=20');
  $('health').replaceChildren(
    ...page.items.map((e) =>
      el('li', {}, `${e.time.slice(11, 19)} ${e.vip} ${e.backend}: ${e.from} → ${e.to}${e.reason ? ` (${e.reason})` : ''}`),
    ),
  );
  if (page.items.length === 0) $('health').append(el('li', {}, 'none'));
}

/** /v1/monitor as server-sent events, read through fetch (EventSource cannot send a bearer token). */
async function followMonitor() {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  try {
    const res = await fetch('/v1/monitor', { headers });
    if (!res.ok || res.body === null) {
      $('monitor-state').textContent = `(unavailable: ${res.status})`;
      return;
    }
    $('monitor-state').textContent = '(following)';
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || stopped) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const msg = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const kind = /^event: (.*)$/m.exec(msg)?.[1];
        const data = /^data: (.*)$/m.exec(msg)?.[1];
        if (kind === undefined || data === undefined) continue;
        const e = JSON.parse(data);
        const text =
          kind === 'flow'
            ? `${e.time.slice(11, 19)} flow ${e.source}:${e.source_port} → ${e.vip ?? e.destination} → ${e.backend} (${e.reason})`
            : kind === 'drop'
              ? `${e.time.slice(11, 19)} drop ${e.reason} ${e.source} → ${e.destination}:${e.destination_port}`
              : kind === 'lost'
                ? `${e.events} events lost (the page read too slowly)`
                : null;
        if (text === null) continue;
        const list = $('monitor');
        list.prepend(el('li', { 'data-kind': kind }, text));
        while (list.children.length > 50) list.lastChild.remove();
      }
    }
    $('monitor-state').textContent = '(ended)';
  } catch (err) {
    $('monitor-state').textContent = `(${err.message})`;
  }
}

// ------------------------------------------------------------------ loop

async function tick() {
  observeStats(await api('/v1/stats'));
  const status = await api('/v1/status');
  $('daemon').textContent =
    `ferryd ${status.version} · revision ${status.revision} (datapath ${status.applied_revision}) · up ${Math.round(status.uptime_seconds)} s`;
  $('daemon').dataset.revision = String(status.revision);
}

let started = false;

async function start() {
  try {
    const me = await api('/v1/whoami');
    canWrite = me.writes;
    $('who').textContent = `${me.actor} · ${me.writes ? 'may write' : 'read-only'}`;
  } catch (err) {
    if (err instanceof Unauthorized) showLogin(token ? 'the token was refused' : '');
    else $('daemon').textContent = err.message;
    return;
  }
  if (started) return;
  started = true;
  followMonitor();
  let n = 0;
  const loop = async () => {
    try {
      await tick();
      // Two requests per VIP: every 5 s keeps the page well inside the API's per-client rate limit.
      if (n % 5 === 0) await Promise.all([refreshVips(), refreshHealth()]);
      $('daemon').classList.remove('error');
    } catch (err) {
      if (err instanceof Unauthorized) showLogin('the token was refused');
      $('daemon').textContent = err.message;
      $('daemon').classList.add('error');
    }
    n++;
    if (!stopped) setTimeout(loop, 1000);
  };
  loop();
}

start();
