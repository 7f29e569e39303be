// Turns the runs of bench/run.sh (one JSON line each) into
// bench/results/latest.json and latest.md: medians per scenario and server,
// ratios against the Node.js peer, the socketioxide peer and the limit
// server, and the issue-5
// targets met or missed. Usage: node report.js runs.jsonl out.json out.md
'use strict';

const fs = require('node:fs');
const os = require('node:os');

const [rawPath, jsonPath, mdPath] = process.argv.slice(2);
const runs = fs.readFileSync(rawPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const env = process.env;
// `before`: an earlier civicpulse binary (BEFORE_BIN), to show a change
// did not regress against the one it replaces, in the same run.
// `civicpulse_pg`: civicpulse on PostgreSQL, beside its SQLite default;
// `civicpulse_csr`: with connection state recovery on.
const SERVERS = ['civicpulse', 'civicpulse_pg', 'civicpulse_csr', 'before', 'node', 'socketioxide', 'limit'];
const PEERS = ['civicpulse_pg', 'civicpulse_csr', 'before', 'node', 'socketioxide', 'limit'];

const ms = (key) => (r) => r.latency?.[key];
const SWEEP_P99_MS = 100; // "sustainable" = delivery p99 below this, and nothing lost
const mib = (r) => (r.rss_after_bytes ?? r.rss_end_bytes) / 1048576;
const sum = (...keys) => (r) => keys.reduce((a, k) => a + (r[k] ?? 0), 0);

// [key, label, better, extract]
const METRICS = {
  idle: [
    ['bytes_per_session', 'server RSS per session (bytes)', 'lower', (r) => r.bytes_per_session],
    ['rss_mib', 'server RSS holding them (MiB)', 'lower', mib],
    ['server_cpu_pct', 'server CPU while idle (% of a core)', 'lower', (r) => r.server_cpu_pct],
    ['ready', 'sessions connected', 'higher', (r) => r.ready],
    ['dropped', 'sessions dropped during the hold', 'lower', (r) => r.dropped],
  ],
  get idle_rooms() { return this.idle; },
  broadcast: [
    ['p50_ms', 'latency p50 (ms)', 'lower', ms('p50_ms')],
    ['p99_ms', 'latency p99 (ms)', 'lower', ms('p99_ms')],
    ['max_ms', 'latency max (ms)', 'lower', ms('max_ms')],
    ['frames_per_s', 'delivered frames/s', 'higher', (r) => r.frames_per_s],
    ['lost', 'frames lost', 'lower', (r) => r.lost],
    ['server_cpu_pct', 'server CPU (% of a core)', 'lower', (r) => r.server_cpu_pct],
  ],
  broadcast_max: [
    ['frames_per_s', 'delivered frames/s (saturated)', 'higher', (r) => r.frames_per_s],
    ['upvotes_per_s', 'upvotes/s accepted', 'higher', (r) => r.upvotes_per_s],
    ['p99_ms', 'latency p99 (ms)', 'lower', ms('p99_ms')],
    ['lost', 'frames not delivered by the end of the drain', 'lower', (r) => r.lost],
    ['server_cpu_pct', 'server CPU (% of a core)', 'lower', (r) => r.server_cpu_pct],
    ['loadgen_cpu_pct', 'load generator CPU (% of a core)', 'lower', (r) => r.loadgen_cpu_pct],
  ],
  rooms: [
    ['p50_ms', 'delivery latency p50 (ms)', 'lower', ms('p50_ms')],
    ['p99_ms', 'delivery latency p99 (ms)', 'lower', ms('p99_ms')],
    ['messages_per_s', 'messages stored/s', 'higher', (r) => r.messages_per_s],
    ['deliveries_per_s', 'deliveries/s', 'higher', (r) => r.deliveries_per_s],
    ['faults', 'lost + duplicated + reordered', 'lower', sum('lost', 'duplicated', 'reordered', 'misrouted')],
    ['server_cpu_pct', 'server CPU (% of a core)', 'lower', (r) => r.server_cpu_pct],
  ],
  rooms_max: [
    ['messages_per_s', 'messages stored/s (saturated)', 'higher', (r) => r.messages_per_s],
    ['deliveries_per_s', 'deliveries/s', 'higher', (r) => r.deliveries_per_s],
    ['p99_ms', 'delivery latency p99 (ms)', 'lower', ms('p99_ms')],
    ['faults', 'lost + duplicated + reordered', 'lower', sum('lost', 'duplicated', 'reordered', 'misrouted')],
  ],
  handshake: [
    ['handshakes_per_s', 'authenticated connections/s', 'higher', (r) => r.handshakes_per_s],
    ['p50_ms', 'handshake latency p50 (ms)', 'lower', ms('p50_ms')],
    ['p99_ms', 'handshake latency p99 (ms)', 'lower', ms('p99_ms')],
    ['failed', 'failed handshakes', 'lower', (r) => r.failed],
  ],
  scale: [
    ['ready', 'sessions connected', 'higher', (r) => r.ready],
    ['dropped', 'sessions dropped (hold and broadcast)', 'lower', (r) => r.dropped],
    ['bytes_per_session', 'server RSS per session, all nodes (bytes)', 'lower', (r) => r.bytes_per_session],
    ['rss_mib', 'server RSS holding them, all nodes (MiB)', 'lower', (r) => r.rss_after_bytes / 1048576],
    ['heartbeat_cpu_pct', 'server CPU during the hold, all nodes (% of a core)', 'lower', (r) => r.heartbeat_cpu_pct],
    ['ramp_secs', 'time to connect them all (s)', 'lower', (r) => r.ramp_secs],
    ['received', 'sessions the broadcast reached', 'higher', (r) => r.received],
    ['p50_ms', 'broadcast latency p50 (ms)', 'lower', ms('p50_ms')],
    ['p99_ms', 'broadcast latency p99 (ms)', 'lower', ms('p99_ms')],
    ['frames_per_s', 'broadcast frames/s (sessions ÷ last arrival)', 'higher', (r) => r.frames_per_s],
  ],
  typing: [
    ['deliveries_per_s', 'typing deliveries/s', 'higher', (r) => r.deliveries_per_s],
    ['p50_ms', 'latency p50 (ms)', 'lower', ms('p50_ms')],
    ['p99_ms', 'latency p99 (ms)', 'lower', ms('p99_ms')],
    ['lost', 'lost', 'lower', (r) => r.lost],
  ],
};

const TITLES = {
  idle: `idle: ${env.IDLE_CONNECTIONS} sockets held ${env.IDLE_HOLD} s`,
  idle_rooms: `idle in rooms: ${env.IDLE_CONNECTIONS} sockets of ${env.IDLE_ROOM_USERS} users, each in one of ${env.IDLE_ROOMS} issue rooms, held ${env.IDLE_HOLD} s`,
  broadcast: `broadcast: ${env.BROADCAST_CONNECTIONS} sockets, ${env.BROADCAST_RATE} upvotes/s for ${env.BROADCAST_DURATION} s`,
  broadcast_max: `broadcast, saturated: ${env.BROADCAST_CONNECTIONS} sockets, upvotes asked at ${env.BROADCAST_MAX_RATE}/s for ${env.BROADCAST_MAX_DURATION} s`,
  rooms: `rooms: ${env.ROOMS} rooms × ${env.ROOM_MEMBERS} members, ${env.ROOM_RATE} messages/s per room for ${env.ROOM_DURATION} s`,
  rooms_max: `rooms, saturated: ${env.ROOMS} × ${env.ROOM_MEMBERS}, messages asked at ${env.ROOMS_MAX_RATE}/s per room for ${env.ROOMS_MAX_DURATION} s`,
  handshake: `handshake: ${env.HANDSHAKES} authenticated connections, ${env.HANDSHAKE_CONCURRENCY} in flight`,
  scale: `scale: ${env.SCALE_SESSIONS} idle authenticated sessions on ${env.SCALE_NODES} nodes (Redis), ${env.SCALE_USERS} users, held ${env.SCALE_HOLD} s with ping every ${env.SCALE_PING_INTERVAL_MS} ms; then one upvote to all`,
  typing: `typing: ${env.TYPING_ROOMS} rooms × ${env.TYPING_MEMBERS} members, each toggling ${env.TYPING_RATE}/s for ${env.TYPING_DURATION} s`,
  rooms_sweep: `rooms, rate sweep: ${env.ROOMS} × ${env.ROOM_MEMBERS}, ${env.ROOMS_SWEEP_DURATION} s at each of ${(env.ROOMS_SWEEP_RATES || '').trim().split(/\s+/).join(', ')} messages/s per room`,
  rest: `rest: wrk -t${env.REST_THREADS} -c${env.REST_CONNECTIONS}, ${env.REST_DURATION} s per route, one user's token on every request`,
  cluster_broadcast: `cluster broadcast: ${env.CLUSTER_BROADCAST_CONNECTIONS} sockets, ${env.CLUSTER_BROADCAST_RATE} upvotes/s for ${env.CLUSTER_BROADCAST_DURATION} s (upvotes to ${env.CLUSTER_TRIGGERS === 'first' ? 'the first node' : 'node k mod N'})`,
  cluster_broadcast_max: `cluster broadcast, saturated: ${env.CLUSTER_BROADCAST_CONNECTIONS} sockets, upvotes asked at ${env.CLUSTER_BROADCAST_MAX_RATE}/s for ${env.CLUSTER_BROADCAST_MAX_DURATION} s (to ${env.CLUSTER_TRIGGERS === 'first' ? 'the first node' : 'node k mod N'})`,
  cluster_rooms: `cluster rooms: ${env.CLUSTER_ROOMS} rooms × ${env.CLUSTER_ROOM_MEMBERS} members, ${env.CLUSTER_ROOM_RATE} messages/s per room for ${env.CLUSTER_ROOM_DURATION} s`,
};

// Cluster mode: the same scenario per server on each topology of
// CLUSTER_TOPOLOGIES (`1` one node, `1r` one node with Redis, `3` three
// nodes sharing Redis and storage); medians per server and topology.
const redisAt = (key) => (r) => r.redis?.[key];
// Redis's own CPU (used_cpu_user + used_cpu_sys) over the window per event,
// less its CPU while idle (commandstats' usec would count a script's inner
// commands twice).
const redisCpuUsPerEvent = (r) => r.redis?.redis_cpu_us_per_event_net;
const REDIS_METRICS = [
  // Commands run inside a Lua script count here too (Redis counts them).
  ['redis_commands_per_event', "Redis commands per event (a Lua script's inner calls included)", 'lower', redisAt('commands_per_event')],
  ['redis_commands_per_event_net', 'Redis commands per event, less the idle background', 'lower', redisAt('commands_per_event_net')],
  ['redis_publishes_per_event', 'Redis PUBLISH per event', 'lower', redisAt('publishes_per_event')],
  ['redis_in_bytes_per_event', 'bytes into Redis per event, less background', 'lower', redisAt('input_bytes_per_event_net')],
  ['redis_out_bytes_per_event', 'bytes out of Redis per event, less background', 'lower', redisAt('output_bytes_per_event_net')],
  ['redis_cpu_us_per_event', 'Redis CPU time per event, less idle (µs)', 'lower', redisCpuUsPerEvent],
  ['redis_cpu_pct', 'Redis CPU (% of a core)', 'lower', redisAt('redis_cpu_pct')],
  ['redis_background_commands_per_s', 'Redis commands/s with no events (background)', 'lower', (r) => r.redis?.background?.commands_per_s],
];
const deliveredPct = (r) => (r.expected ? (100 * r.delivered) / r.expected : null);
METRICS.cluster_broadcast = [
  ['p50_ms', 'latency p50 (ms)', 'lower', ms('p50_ms')],
  ['p99_ms', 'latency p99 (ms)', 'lower', ms('p99_ms')],
  ['max_ms', 'latency max (ms)', 'lower', ms('max_ms')],
  ['frames_per_s', 'delivered frames/s', 'higher', (r) => r.frames_per_s],
  ['delivered_pct', 'frames delivered (% of expected)', 'higher', deliveredPct],
  ['faults', 'lost + duplicated + failed upvotes', 'lower', sum('lost', 'duplicated', 'upvotes_failed')],
  ['server_cpu_pct', 'server CPU, all nodes (% of a core)', 'lower', (r) => r.server_cpu_pct],
  ['loadgen_cpu_pct', 'load generator CPU (% of a core)', 'lower', (r) => r.loadgen_cpu_pct],
  ...REDIS_METRICS,
];
METRICS.cluster_broadcast_max = [
  ['frames_per_s', 'delivered frames/s (saturated)', 'higher', (r) => r.frames_per_s],
  ['upvotes_per_s', 'upvotes/s accepted', 'higher', (r) => r.upvotes_per_s],
  ['p50_ms', 'latency p50 (ms)', 'lower', ms('p50_ms')],
  ['p99_ms', 'latency p99 (ms)', 'lower', ms('p99_ms')],
  ['delivered_pct', 'frames delivered by the end of the drain (% of expected)', 'higher', deliveredPct],
  ['server_cpu_pct', 'server CPU, all nodes (% of a core)', 'lower', (r) => r.server_cpu_pct],
  ['loadgen_cpu_pct', 'load generator CPU (% of a core)', 'lower', (r) => r.loadgen_cpu_pct],
  ...REDIS_METRICS,
];
METRICS.cluster_rooms = [
  ['p50_ms', 'delivery latency p50 (ms)', 'lower', ms('p50_ms')],
  ['p99_ms', 'delivery latency p99 (ms)', 'lower', ms('p99_ms')],
  ['max_ms', 'delivery latency max (ms)', 'lower', ms('max_ms')],
  ['messages_per_s', 'messages stored/s', 'higher', (r) => r.messages_per_s],
  ['deliveries_per_s', 'deliveries/s', 'higher', (r) => r.deliveries_per_s],
  ['delivered_pct', 'deliveries (% of acked × members)', 'higher',
    (r) => (r.acked && r.members ? (100 * (r.delivered - (r.unacked_deliveries || 0))) / (r.acked * r.members) : null)],
  ['faults', 'lost + duplicated + reordered + misrouted + refused', 'lower',
    sum('lost', 'duplicated', 'reordered', 'misrouted', 'refused')],
  ['server_cpu_pct', 'server CPU, all nodes (% of a core)', 'lower', (r) => r.server_cpu_pct],
  ['loadgen_cpu_pct', 'load generator CPU (% of a core)', 'lower', (r) => r.loadgen_cpu_pct],
  ...REDIS_METRICS,
];
const CLUSTER = new Set(['cluster_broadcast', 'cluster_broadcast_max', 'cluster_rooms']);
const TOPOLOGY_NAMES = { 1: '1 node', '1r': '1 node + Redis' };
const topologyName = (t) => TOPOLOGY_NAMES[t] || `${t} nodes`;

// rest: one set of rows per route that ran (REST_ROUTES picks them).
const ROUTES = {
  upvote: 'POST /api/issues/{id}/upvote (same user again)',
  healthz: 'GET /healthz',
  issue: 'GET /api/issues/{id}',
  list: 'GET /api/issues?limit=20',
};
METRICS.rest = [];
for (const route of [...new Set(runs.filter((r) => r.bench === 'rest').flatMap((r) => Object.keys(r.result.routes || {})))]) {
  // A route that answered errors (say 404: the Node peer lacks it) measured
  // something else: its figures stay out, only the failure count shows.
  const at = (key) => (r) => {
    const x = r.routes?.[route];
    return x && x.non_2xx === 0 && x.socket_errors === 0 ? x[key] : null;
  };
  const label = ROUTES[route] || route;
  METRICS.rest.push(
    [`${route}_requests_per_s`, `${label}: requests/s`, 'higher', at('requests_per_s')],
    [`${route}_p50_ms`, `${label}: latency p50 (ms)`, 'lower', at('p50_ms')],
    [`${route}_p99_ms`, `${label}: latency p99 (ms)`, 'lower', at('p99_ms')],
    [`${route}_failed`, `${label}: non-2xx answers + socket errors`, 'lower', (r) => {
      const x = r.routes?.[route];
      return x == null || x.non_2xx == null ? null : x.non_2xx + x.socket_errors;
    }],
    [`${route}_server_cpu_pct`, `${label}: server CPU (% of a core)`, 'lower', at('server_cpu_pct')],
  );
}

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

const benches = [...new Set(runs.map((r) => r.bench))];
const medians = {};
const medianOf = (bench, results) => {
  const m = { runs: results.length, ok_runs: results.filter((r) => r.ok).length };
  for (const [key, , , extract] of METRICS[bench] || []) {
    m[key] = median(results.map((r) => { try { return extract(r); } catch { return null; } }));
  }
  return m;
};
// Cluster scenarios: medians[bench][server][topology].
const topologies = [...new Set(runs.filter((r) => CLUSTER.has(r.bench)).map((r) => r.topology))]
  .sort((a, b) => parseInt(a, 10) - parseInt(b, 10) || a.length - b.length);
for (const bench of benches.filter((b) => CLUSTER.has(b))) {
  medians[bench] = {};
  for (const server of SERVERS) {
    for (const t of topologies) {
      const mine = runs.filter((r) => r.bench === bench && r.server === server && r.topology === t).map((r) => r.result);
      if (mine.length === 0) continue;
      (medians[bench][server] ??= {})[t] = medianOf(bench, mine);
    }
  }
}
for (const bench of benches.filter((b) => !CLUSTER.has(b))) {
  medians[bench] = {};
  for (const server of SERVERS) {
    const mine = runs.filter((r) => r.bench === bench && r.server === server).map((r) => r.result);
    if (mine.length === 0) continue;
    medians[bench][server] = medianOf(bench, mine);
  }
}

// rooms_sweep: per server and round, the sustainable rate is the highest
// messages/s stored among its clean runs (p99 < SWEEP_P99_MS; nothing lost,
// duplicated, reordered or misrouted; every member connected), 0 when no
// rate was; the figure is the median over rounds. Every run is kept, so the
// table also shows p99 and stored/s at each rate.
const sweepRates = [...new Set(runs.filter((r) => r.bench === 'rooms_sweep').map((r) => r.rate))].sort((a, b) => a - b);
const clean = (r) => r.latency?.p99_ms != null && r.latency.p99_ms < SWEEP_P99_MS && r.failed === 0 &&
  r.lost === 0 && r.duplicated === 0 && r.reordered === 0 && r.misrouted === 0;
if (medians.rooms_sweep) {
  for (const server of Object.keys(medians.rooms_sweep)) {
    const mine = runs.filter((r) => r.bench === 'rooms_sweep' && r.server === server);
    const rounds = [...new Set(mine.map((r) => r.round))].sort((a, b) => a - b);
    const byRound = rounds.map((round) => Math.max(0, ...mine.filter((r) => r.round === round && clean(r.result))
      .map((r) => r.result.messages_per_s)));
    // Clean at the highest rate swept, and keeping up with it (95 % of the
    // rate asked stored), in most rounds: a higher rate might pass too, so
    // the figure is a lower bound.
    const top = sweepRates[sweepRates.length - 1];
    const topClean = mine.filter((r) => r.rate === top && clean(r.result) &&
      r.result.messages_per_s >= 0.95 * top * Number(env.ROOMS)).length;
    const byRate = {};
    for (const rate of sweepRates) {
      const at = mine.filter((r) => r.rate === rate).map((r) => r.result);
      if (at.length === 0) continue;
      byRate[rate] = {
        runs: at.length,
        clean_runs: at.filter(clean).length,
        p99_ms: median(at.map((r) => r.latency?.p99_ms)),
        messages_per_s: median(at.map((r) => r.messages_per_s)),
        asked_per_s: rate * Number(env.ROOMS),
        faults: median(at.map((r) => sum('lost', 'duplicated', 'reordered', 'misrouted')(r))),
      };
    }
    Object.assign(medians.rooms_sweep[server], {
      clean_runs: mine.filter((r) => clean(r.result)).length,
      sustainable_messages_per_s: median(byRound),
      sustainable_by_round: byRound,
      lower_bound: topClean * 2 > rounds.length,
      by_rate: byRate,
    });
  }
}

function fmt(x) {
  if (x === null || x === undefined) return '–';
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}
function ratio(a, b) {
  if (a == null || b == null || b === 0) return null;
  return a / b;
}
const fmtRatio = (r) => (r == null ? '–' : `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`);
const get = (bench, server, key) => medians[bench]?.[server]?.[key] ?? null;

// The issue-5 targets, as far as the sizes of this run can check them.
const targets = [];
function target(name, value, goal, met, note) {
  targets.push({ name, value, goal, met: value == null ? null : met, note });
}
if (medians.idle) {
  const cp = get('idle', 'civicpulse', 'bytes_per_session');
  const node = get('idle', 'node', 'bytes_per_session');
  target(`idle RSS per session (at ${env.IDLE_CONNECTIONS}; target is at 50,000)`, cp == null ? null : `${fmt(cp / 1024)} KiB`,
    '≤ 8 KiB', cp != null && cp <= 8192, cp == null ? '' : `${cp <= 8192 ? 'under' : 'over'} by ${fmt(Math.abs(cp - 8192) / 1024)} KiB`);
  const r = ratio(cp, node);
  target('idle RSS per session vs Node', r == null ? null : `${(r * 100).toFixed(0)} % of Node's`, '≤ 25 %', r != null && r <= 0.25,
    r == null ? '' : `Node ${fmt(node / 1024)} KiB/session`);
}
// Only runs with issue-5 scenarios carry the targets (a cluster-only run has none).
const ISSUE5 = ['idle', 'broadcast', 'broadcast_max', 'rooms', 'rooms_max', 'rooms_sweep', 'handshake'];
if (benches.some((b) => ISSUE5.includes(b))) {
  target('100,000 sessions held 60 s', null, 'none dropped', null,
    `not run: this machine's RLIMIT_NOFILE hard limit is ${env.NOFILE_HARD || '?'} per process (see BENCHMARKS.md)`);
}
if (medians.broadcast) {
  const p99 = get('broadcast', 'civicpulse', 'p99_ms');
  target(`broadcast p99 (at ${env.BROADCAST_CONNECTIONS} sockets; target is at 50,000)`, p99 == null ? null : `${fmt(p99)} ms`,
    '≤ 250 ms', p99 != null && p99 <= 250, p99 == null ? '' : `${p99 <= 250 ? 'margin' : 'over by'} ${fmt(Math.abs(250 - p99))} ms`);
}
const bm = medians.broadcast_max ? 'broadcast_max' : 'broadcast';
if (medians[bm]) {
  const cp = get(bm, 'civicpulse', 'frames_per_s');
  const rn = ratio(cp, get(bm, 'node', 'frames_per_s'));
  const rl = ratio(cp, get(bm, 'limit', 'frames_per_s'));
  target('broadcast frames/s vs Node', rn == null ? null : fmtRatio(rn), '≥ 5×', rn != null && rn >= 5, `${fmt(cp)} frames/s`);
  target('broadcast frames/s vs limit', rl == null ? null : `${(rl * 100).toFixed(0)} %`, '≥ 60 %', rl != null && rl >= 0.6,
    `limit ${fmt(get(bm, 'limit', 'frames_per_s'))} frames/s`);
}
if (medians.rooms) {
  const p99 = get('rooms', 'civicpulse', 'p99_ms');
  target(`rooms p99 (at ${env.ROOMS} × ${env.ROOM_MEMBERS}, ${env.ROOM_RATE}/s per room; target at 1,000 × 20)`,
    p99 == null ? null : `${fmt(p99)} ms`, '≤ 25 ms', p99 != null && p99 <= 25,
    p99 == null ? '' : `${p99 <= 25 ? 'margin' : 'over by'} ${fmt(Math.abs(25 - p99))} ms`);
}
// The target asks for the rate sustained at p99 < 100 ms: the sweep measures
// exactly that; without it, the saturated rooms_max capacity stands in.
if (medians.rooms_sweep?.civicpulse && medians.rooms_sweep?.node) {
  const cp = get('rooms_sweep', 'civicpulse', 'sustainable_messages_per_s');
  const node = get('rooms_sweep', 'node', 'sustainable_messages_per_s');
  const name = `rooms message rate vs Node (sustainable at p99 < ${SWEEP_P99_MS} ms, from the rate sweep)`;
  let value = null;
  let met = false;
  let note = `${fmt(cp)} vs ${fmt(node)} messages/s sustained`;
  if (cp > 0 && node > 0) {
    const r = cp / node;
    value = fmtRatio(r);
    met = r >= 5;
  } else if (cp > 0) {
    // Node kept up with no rate: it sustains less than the lowest one asked.
    const bound = cp / (sweepRates[0] * Number(env.ROOMS));
    value = `> ${fmtRatio(bound)}`;
    met = bound >= 5;
    note += `; Node sustained none of the rates (below ${fmt(sweepRates[0] * Number(env.ROOMS))}/s)`;
  }
  if (medians.rooms_sweep.civicpulse.lower_bound) note += '; civicpulse kept up with the highest rate swept, so its figure is a lower bound (raise ROOMS_SWEEP_RATES)';
  target(name, value, '≥ 5×', met, note);
} else if (medians.rooms_max) {
  const cp = get('rooms_max', 'civicpulse', 'messages_per_s');
  const r = ratio(cp, get('rooms_max', 'node', 'messages_per_s'));
  const p99 = get('rooms_max', 'civicpulse', 'p99_ms');
  target('rooms message rate vs Node (saturated rooms_max: no rate sweep of both in this run; the target asks it at p99 < 100 ms)',
    r == null ? null : fmtRatio(r), '≥ 5×', r != null && r >= 5, `${fmt(cp)} messages/s stored, p99 ${fmt(p99)} ms`);
}
if (medians.handshake) {
  const hs = get('handshake', 'civicpulse', 'handshakes_per_s');
  target('handshakes/s', hs == null ? null : fmt(hs), '≥ 5,000/s', hs != null && hs >= 5000,
    hs == null ? '' : `${hs >= 5000 ? 'margin' : 'short by'} ${fmt(Math.abs(hs - 5000))}/s`);
}

const meta = {
  started: env.STARTED,
  // FINISHED: when a report is made again from a run's raw lines.
  finished: env.FINISHED || new Date().toISOString(),
  rounds: Number(env.ROUNDS),
  host: { cores: os.cpus().length, memory_gib: Math.round(os.totalmem() / 2 ** 30), loadavg_end: os.loadavg(), node: process.version },
  ping_interval_ms: Number(env.PING_INTERVAL_MS),
  sizes: Object.fromEntries(Object.entries(env).filter(([k]) => /^(IDLE|BROADCAST|ROOM|ROOMS|HANDSHAKE|TYPING|REST|CLUSTER|PG_SYNCHRONOUS)_?/.test(k))),
};
fs.writeFileSync(jsonPath, JSON.stringify({ meta, medians, targets, runs }, null, 2) + '\n');

const md = [];
md.push('# CivicPulse benchmark results', '');
md.push(`Run ${meta.started} → ${meta.finished} by \`bench/run.sh\`: ${meta.rounds} rounds, servers interleaved, each run on a freshly started server with a fresh database.`);
md.push(`Machine: ${meta.host.cores} cores, ${meta.host.memory_gib} GiB, Node ${meta.host.node}; heartbeat interval ${meta.ping_interval_ms} ms on every server; load average at the end ${meta.host.loadavg_end.map((x) => x.toFixed(2)).join(' ')}.`);
md.push(`Figures are medians over the rounds; ratios are civicpulse ÷ the other (↑ higher is better, ↓ lower is better)${benches.some((b) => CLUSTER.has(b)) ? '; the cluster tables name each ratio in its column' : ''}. What every figure means: BENCHMARKS.md.`, '');
if (targets.length) {
  md.push('## Targets (issue 5)', '');
  md.push('| target | civicpulse | goal | met? | note |', '|---|---|---|---|---|');
  for (const t of targets) {
    const met = t.met == null ? 'not measured' : t.met ? 'met' : '**missed**';
    md.push(`| ${t.name} | ${t.value ?? '–'} | ${t.goal} | ${met} | ${t.note || ''} |`);
  }
  md.push('');
}
function sweepTable() {
  const present = SERVERS.filter((s) => medians.rooms_sweep[s]);
  const rooms = Number(env.ROOMS);
  md.push(`Sustainable = the highest messages/s stored in a run with delivery p99 < ${SWEEP_P99_MS} ms and nothing lost, duplicated, reordered or misrouted (median over rounds of each round's best; ≥: clean and keeping up at the highest rate swept, so a lower bound). Per rate: median p99 · median messages stored/s (clean runs of all); * = stored under 95 % of the rate asked (the server, or the load generator on the same cores, fell behind; latency counts from each send, so such a run can still be clean).`, '');
  const head = ['server', 'sustainable messages/s ↑', ...sweepRates.map((r) => `${r}/s per room (${fmt(r * rooms)}/s asked)`)];
  md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const s of present) {
    const m = medians.rooms_sweep[s];
    const best = m.sustainable_messages_per_s;
    const row = [s, best ? `${m.lower_bound ? '≥ ' : ''}${fmt(best)}` : `none (< ${fmt(sweepRates[0] * rooms)})`];
    for (const rate of sweepRates) {
      const at = m.by_rate[rate];
      const behind = at && at.messages_per_s < 0.95 * at.asked_per_s ? '*' : '';
      row.push(at ? `${fmt(at.p99_ms)} ms · ${fmt(at.messages_per_s)}/s${behind} (${at.clean_runs}/${at.runs})` : '–');
    }
    md.push(`| ${row.join(' | ')} |`);
  }
  for (const other of PEERS) {
    if (!present.includes('civicpulse') || !present.includes(other)) continue;
    const r = ratio(get('rooms_sweep', 'civicpulse', 'sustainable_messages_per_s'), get('rooms_sweep', other, 'sustainable_messages_per_s'));
    md.push(`| civicpulse ÷ ${other} | ${fmtRatio(r)} |${sweepRates.map(() => ' |').join('')}`);
  }
  md.push('');
}

// Cluster scenarios: one column per server and topology, then the ratios
// the issue asks for: N nodes ÷ 1 node of the same server, and civicpulse
// ÷ each Socket.IO peer (Node, socketioxide) on the same topology.
function clusterTable(bench) {
  const present = SERVERS.filter((s) => medians[bench][s]);
  const cols = present.flatMap((s) => topologies.filter((t) => medians[bench][s][t]).map((t) => [s, t]));
  const at = (s, t, key) => medians[bench]?.[s]?.[t]?.[key] ?? null;
  const multi = topologies.filter((t) => parseInt(t, 10) > 1);
  const ratios = [];
  for (const s of present) {
    for (const t of multi) {
      if (medians[bench][s][t] && medians[bench][s]['1']) ratios.push([`${s}: ${topologyName(t)} ÷ 1 node`, (k) => ratio(at(s, t, k), at(s, '1', k))]);
      if (medians[bench][s][t] && medians[bench][s]['1r']) ratios.push([`${s}: ${topologyName(t)} ÷ 1 node + Redis`, (k) => ratio(at(s, t, k), at(s, '1r', k))]);
    }
  }
  for (const peer of ['node', 'socketioxide']) {
    if (!present.includes('civicpulse') || !present.includes(peer)) continue;
    for (const t of topologies) {
      if (medians[bench].civicpulse[t] && medians[bench][peer][t]) ratios.push([`civicpulse ÷ ${peer}, ${topologyName(t)}`, (k) => ratio(at('civicpulse', t, k), at(peer, t, k))]);
    }
  }
  const head = ['metric', ...cols.map(([s, t]) => `${s}, ${topologyName(t)}`), ...ratios.map(([name]) => name)];
  md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const [key, label, better] of METRICS[bench]) {
    const row = [`${label} ${better === 'higher' ? '↑' : '↓'}`];
    for (const [s, t] of cols) row.push(fmt(at(s, t, key)));
    for (const [, r] of ratios) row.push(fmtRatio(r(key)));
    md.push(`| ${row.join(' | ')} |`);
  }
  md.push(`| runs (ok) | ${cols.map(([s, t]) => `${at(s, t, 'runs')} (${at(s, t, 'ok_runs')})`).join(' | ')} |${ratios.map(() => ' |').join('')}`);
  md.push('');
}

for (const bench of benches) {
  md.push(`## ${TITLES[bench] || bench}`, '');
  if (bench === 'rooms_sweep') {
    sweepTable();
    continue;
  }
  if (CLUSTER.has(bench)) {
    clusterTable(bench);
    continue;
  }
  const present = SERVERS.filter((s) => medians[bench][s]);
  const head = ['metric', ...present.map((s) => `${s} (ok runs)`)];
  const peers = PEERS.filter((p) => present.includes(p) && present.includes('civicpulse'));
  for (const p of peers) head.push(`civicpulse ÷ ${p}`);
  md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const [key, label, better] of METRICS[bench] || []) {
    const row = [`${label} ${better === 'higher' ? '↑' : '↓'}`];
    for (const s of present) row.push(fmt(get(bench, s, key)));
    for (const p of peers) row.push(fmtRatio(ratio(get(bench, 'civicpulse', key), get(bench, p, key))));
    md.push(`| ${row.join(' | ')} |`);
  }
  md.push(`| runs (ok) | ${present.map((s) => `${medians[bench][s].runs} (${medians[bench][s].ok_runs})`).join(' | ')} |${peers.map(() => ' |').join('')}`);
  md.push('');
}
fs.writeFileSync(mdPath, md.join('\n'));
