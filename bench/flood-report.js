#!/usr/bin/env node
// bench/flood.sh's report: the runs (one JSON line each) into latest.json
// and a markdown table, latest.md. Usage: flood-report.js RAW JSON MD
'use strict';
const fs = require('fs');
const os = require('os');

const [raw, jsonOut, mdOut] = process.argv.slice(2);
const runs = fs.readFileSync(raw, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const env = (k) => process.env[k];
const finished = new Date().toISOString();

const num = (x, digits = 1) => (x === null || x === undefined || Number.isNaN(x) ? '–' : Number(x).toFixed(digits));
const int = (x) => (x === null || x === undefined ? '–' : Number(x).toLocaleString('en-US'));
const ms = (x) => {
  if (x === null || x === undefined) return '–';
  if (x >= 1000) return `${(x / 1000).toFixed(2)} s`;
  return `${x.toFixed(x < 10 ? 2 : 0)} ms`;
};

// The median of the defined values; with `range`, also "(min–max)" when
// there are several rounds.
const values = (runs, get) => runs.map(get).filter((x) => x !== null && x !== undefined && !Number.isNaN(x));
function median(xs) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
const med = (runs, get) => median(values(runs, get));
function spread(runs, get, fmt) {
  const xs = values(runs, get);
  if (!xs.length) return '–';
  const m = fmt(median(xs));
  return xs.length > 1 ? `${m} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})` : m;
}

// One row per server and flood case: medians over the rounds, and the
// spread of the victim's p99 (the figure a flood would move).
function row(runs) {
  const first = runs[0];
  const res = (r) => r.result || {};
  const ph = (name) => (r) => (res(r).phases || {})[name] || {};
  const [b, f, c] = [ph('baseline'), ph('flood'), ph('cooldown')];
  const fl = (r) => res(r).flooder || {};
  const victim = (p) => {
    const p50 = med(runs, (r) => p(r).victim_ack?.p50_ms);
    const p99 = spread(runs, (r) => p(r).victim_ack?.p99_ms, ms);
    const max = med(runs, (r) => p(r).victim_ack?.max_ms);
    const lost = values(runs, (r) => p(r).victim_unanswered).reduce((a, x) => a + x, 0);
    return `${ms(p50)} / ${p99} / ${ms(max)}${lost ? ` (${lost} unanswered)` : ''}`;
  };
  const failures = values(runs, (r) => f(r).healthz_failures).reduce((a, x) => a + x, 0);
  const probes = values(runs, (r) => f(r).healthz_probes).reduce((a, x) => a + x, 0);
  const health = `${ms(med(runs, (r) => f(r).healthz?.p99_ms))} / ${ms(Math.max(...values(runs, (r) => f(r).healthz?.max_ms), 0))} / ${failures} of ${probes}`;
  const peak = (r) => Math.max(f(r).rss_peak_delta_mib ?? -1, c(r).rss_peak_delta_mib ?? -1);
  const cutRuns = runs.filter((r) => fl(r).disconnected_at_s !== null && fl(r).disconnected_at_s !== undefined);
  let cut;
  if (cutRuns.length === runs.length) {
    cut = `yes, after ${int(med(runs, (r) => fl(r).frames_at_disconnect))} frames, ${num(med(runs, (r) => fl(r).disconnected_at_s), 2)} s`;
  } else if (cutRuns.length) {
    cut = `in ${cutRuns.length} of ${runs.length} runs`;
  } else {
    cut = `no (${[...new Set(runs.map((r) => fl(r).ended || res(r).error || 'no result'))].join('; ')})`;
  }
  let stored = '–';
  const st = (r) => res(r).stored;
  if (runs.some(st)) {
    stored = int(med(runs, (r) => st(r)?.total));
    const after = values(runs, (r) => st(r)?.last_growth_after_disconnect_s);
    if (after.length) {
      // Sampled every 100 ms (as is the disconnect): "within 0.1 s" is the resolution.
      const worst = Math.max(...after);
      stored += worst <= 0.1 ? ', none later than 0.1 s after the cut' : `, the last ${num(worst, 2)} s after the cut`;
    } else {
      stored += `, growing until ${num(med(runs, (r) => st(r)?.last_growth_s), 1)} s into the flood`;
    }
  }
  return [
    first.server,
    `${int(first.frames)} ${first.kind}`,
    String(runs.length),
    `${int(med(runs, (r) => fl(r).frames_written))} in ${num(med(runs, (r) => fl(r).end_s), 2)} s`,
    cut,
    victim(b),
    victim(f),
    victim(c),
    health,
    `+${num(med(runs, peak), 0)} MiB`,
    `+${num(med(runs, (r) => c(r).rss_end_delta_mib), 0)} MiB`,
    stored,
  ];
}

const groups = new Map();
for (const run of runs) {
  const key = `${run.kind}:${run.frames}:${run.server}`;
  if (!groups.has(key)) groups.set(key, []);
  groups.get(key).push(run);
}

const header = [
  'server',
  'flood',
  'runs',
  'flooder wrote',
  'server cut it off',
  'victim ack p50 / p99 (range) / max, baseline',
  'during the flood',
  'cool-down',
  'healthz p99 / worst / failed, flood',
  'RSS peak Δ',
  'RSS end Δ',
  "flooder's messages stored",
];
const lines = [
  '# Flood: one client against everyone else',
  '',
  `Run ${env('STARTED')} → ${finished} by \`bench/flood.sh\`; ${env('ROUNDS')} round(s), servers interleaved, every run on a freshly started server with a fresh SQLite file. Figures are medians over the rounds (p99: median, and the range over the rounds in brackets).`,
  `Machine: ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
  `Phases: baseline ${env('BASELINE')} s, flood (at least ${env('FLOOD_MIN')} s, at most ${env('FLOOD_TIMEOUT')} s), cool-down ${env('COOLDOWN')} s; the victim sends ${env('VICTIM_RATE')} message:send/s to its own issue; /healthz every 100 ms on a new connection; the flooder's SO_RCVBUF ${env('RECV_BUFFER')} bytes; a flood is abandoned once the server's RSS passes ${env('MAX_SERVER_RSS_MIB')} MiB.`,
  'RSS Δ is against the end of the baseline; "end" is the end of the cool-down. Healthz: median p99, the worst probe of all rounds, failures (no 200 within 5 s) of all probes. What every column means: BENCHMARKS.md, "Flood".',
  '',
  `| ${header.join(' | ')} |`,
  `|${header.map(() => '---').join('|')}|`,
  ...[...groups.values()].map((g) => `| ${row(g).join(' | ')} |`),
  '',
];
fs.writeFileSync(mdOut, lines.join('\n'));
const settings = {};
for (const k of ['ROUNDS', 'BASELINE', 'FLOOD_MIN', 'FLOOD_TIMEOUT', 'COOLDOWN', 'VICTIM_RATE', 'RECV_BUFFER', 'MAX_SERVER_RSS_MIB']) {
  settings[k.toLowerCase()] = Number(env(k));
}
// One run per line: readable, and diffs between result sets stay small.
const head = JSON.stringify({ started: env('STARTED'), finished, cores: os.cpus().length, settings });
fs.writeFileSync(jsonOut, `${head.slice(0, -1)},"runs":[\n${runs.map((r) => JSON.stringify(r)).join(',\n')}\n]}\n`);
