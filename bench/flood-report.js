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

function row(run) {
  const r = run.result || {};
  const p = r.phases || {};
  const [b, f, c] = [p.baseline || {}, p.flood || {}, p.cooldown || {}];
  const fl = r.flooder || {};
  const st = r.stored;
  const victim = (ph) =>
    ph.victim_ack ? `${ms(ph.victim_ack.p50_ms)} / ${ms(ph.victim_ack.p99_ms)} / ${ms(ph.victim_ack.max_ms)}` : '–';
  const lost = (ph) => (ph.victim_unanswered ? ` (${ph.victim_unanswered} unanswered)` : '');
  const health = (ph) =>
    ph.healthz ? `${ms(ph.healthz.p99_ms)} / ${ms(ph.healthz.max_ms)} / ${ph.healthz_failures} of ${ph.healthz_probes}` : '–';
  const peak = Math.max(f.rss_peak_delta_mib ?? -1, c.rss_peak_delta_mib ?? -1);
  let cut;
  if (fl.disconnected_at_s !== null && fl.disconnected_at_s !== undefined) {
    cut = `after ${int(fl.frames_at_disconnect)} frames, ${num(fl.disconnected_at_s, 2)} s`;
  } else {
    cut = `no (${fl.ended || r.error || 'no result'})`;
  }
  let stored = '–';
  if (st) {
    stored = `${int(st.total)}`;
    if (st.after_disconnect !== null && st.after_disconnect !== undefined) stored += `, ${int(st.after_disconnect)} after the cut`;
    else if (st.last_growth_s !== null && st.last_growth_s !== undefined) stored += `, growing until ${num(st.last_growth_s, 1)} s`;
  }
  return [
    run.server,
    `${int(run.frames)} ${run.kind}`,
    `${int(fl.frames_written)} in ${num(fl.end_s, 2)} s`,
    cut,
    victim(b) + lost(b),
    victim(f) + lost(f),
    victim(c) + lost(c),
    health(f),
    peak >= 0 ? `+${num(peak, 0)} MiB` : '–',
    c.rss_end_delta_mib !== undefined && c.rss_end_delta_mib !== null ? `+${num(c.rss_end_delta_mib, 0)} MiB` : '–',
    stored,
  ];
}

const header = [
  'server',
  'flood',
  'flooder wrote',
  'server cut it off',
  'victim ack p50 / p99 / max, baseline',
  'during the flood',
  'cool-down',
  'healthz p99 / max / failed, flood',
  'RSS peak Δ',
  'RSS end Δ',
  "flooder's messages stored",
];
const lines = [
  '# Flood: one client against everyone else',
  '',
  `Run ${env('STARTED')} → ${finished} by \`bench/flood.sh\`; every run on a freshly started server with a fresh SQLite file.`,
  `Machine: ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
  `Phases: baseline ${env('BASELINE')} s, flood (at least ${env('FLOOD_MIN')} s, at most ${env('FLOOD_TIMEOUT')} s), cool-down ${env('COOLDOWN')} s; the victim sends ${env('VICTIM_RATE')} message:send/s to its own issue; /healthz every 100 ms on a new connection; the flooder's SO_RCVBUF ${env('RECV_BUFFER')} bytes; a flood is abandoned once the server's RSS passes ${env('MAX_SERVER_RSS_MIB')} MiB.`,
  'RSS Δ is against the end of the baseline; "end" is the end of the cool-down. What every column means: BENCHMARKS.md, "Flood".',
  '',
  `| ${header.join(' | ')} |`,
  `|${header.map(() => '---').join('|')}|`,
  ...runs.map((run) => `| ${row(run).join(' | ')} |`),
  '',
];
fs.writeFileSync(mdOut, lines.join('\n'));
const settings = {};
for (const k of ['BASELINE', 'FLOOD_MIN', 'FLOOD_TIMEOUT', 'COOLDOWN', 'VICTIM_RATE', 'RECV_BUFFER', 'MAX_SERVER_RSS_MIB']) {
  settings[k.toLowerCase()] = Number(env(k));
}
fs.writeFileSync(
  jsonOut,
  `${JSON.stringify({ started: env('STARTED'), finished, cores: os.cpus().length, settings, runs }, null, 1)}\n`,
);
