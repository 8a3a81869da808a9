#!/usr/bin/env node
/**
 * The daemon's memory with the dashboard open: RSS growth while live updates stream.
 *
 *   node tools/bench/dashboard.mjs [--minutes 10] [--sessions 2] [--json] [--check]
 *
 * Starts `rebound serve --demo` (built dist/), recovers SESSIONS sessions of the demo VM, opens the
 * dashboard in headless chromium (playwright-core, Debian's /usr/bin/chromium) on the first
 * session's page, logged in, so the event stream carries a sample per session every second and the
 * page draws its graphs; qemu-io writes to the first session in rounds the whole time (I/O counters,
 * overlay growth and write rates change every second). The daemon's RSS (/proc/PID/status VmRSS) is
 * read every 10 s. Reported: RSS when the page is open (start), after a one-minute warm-up (base),
 * at the end, the maximum, and the growth end - base.
 *
 * Target (issue 15): growth <= 10 MiB over 10 minutes. --check exits 1 when it is not met.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { api, children, fmt, log, MiB, pathFlags, REBOUND_MAIN, setTmpDir, sleep, useDaemonToken, which } from './lib.mjs';

const TARGET_MIB = 10;
const CHROMIUM = '/usr/bin/chromium';

const { values: opt } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    sessions: { type: 'string', default: '2' },
    json: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
  },
});
const minutes = Number(opt.minutes);
const sessions = Number(opt.sessions);
for (const [cmd, what] of [['qemu-io', 'qemu-utils'], [CHROMIUM, 'chromium']]) {
  if (!which(cmd) && !fs.existsSync(cmd)) throw new Error(`${cmd} is missing (apt-get install ${what})`);
}
if (!fs.existsSync(REBOUND_MAIN)) throw new Error('dist/ is missing: npm run build');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-bench-dash-'));
setTmpDir(dir);
const data = path.join(dir, 'data');

const rss = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;

log('starting rebound serve --demo');
const logFd = fs.openSync(path.join(dir, 'daemon.log'), 'w');
const daemon = spawn(process.execPath, [REBOUND_MAIN, 'serve', '--demo', '--data', data, '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0', ...pathFlags(dir)], { stdio: ['ignore', 'pipe', logFd] });
fs.closeSync(logFd);
children.add(daemon);
let banner = '';
daemon.stdout.setEncoding('utf8').on('data', (d) => (banner += d));
for (let i = 0; i < 1200 && !banner.includes('Press Ctrl-C'); i++) await sleep(50);
const http = /HTTP API: (http:\/\/[^/\s]+)\//.exec(banner)?.[1];
if (!http) throw new Error(`the daemon did not start:\n${banner}`);
useDaemonToken(data);

const names = [];
for (let i = 0; i < sessions; i++) names.push((await api(http, 'POST', '/v1/sessions', { vm: 'demo', name: `bench${i}` })).name);
const uri = (await api(http, 'GET', `/v1/sessions/${names[0]}`)).connect.disks[0].nbdUri;

log(`opening the dashboard in chromium (${http}/#/session/${names[0]})`);
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
await page.goto(`${http}/`);
await page.getByLabel('API token').fill(process.env.REBOUND_TOKEN);
await page.getByRole('button', { name: 'Log in' }).click();
await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor({ timeout: 60_000 });
await page.goto(`${http}/#/session/${names[0]}`);
await page.getByRole('heading', { name: `Session ${names[0]}` }).waitFor({ timeout: 60_000 });

let writing = true;
let rounds = 0;
const writer = (async () => {
  while (writing) {
    const cmds = Array.from({ length: 32 }, (_, i) => ['-c', `write -P ${(rounds + i) % 250} ${((rounds * 32 + i) % 900) * 65536} 64k`]).flat();
    await new Promise((resolve) => spawn('qemu-io', ['-f', 'raw', ...cmds, uri], { stdio: 'ignore' }).on('exit', resolve));
    rounds++;
    await sleep(200);
  }
})();

const samples = [];
const t0 = Date.now();
const start = rss(daemon.pid);
let base = start;
log(`RSS with the page open: ${fmt(start / MiB, 1)} MiB; sampling every 10 s for ${minutes} min`);
while (Date.now() - t0 < minutes * 60_000) {
  await sleep(10_000);
  const v = rss(daemon.pid);
  const t = Math.round((Date.now() - t0) / 1000);
  samples.push({ t, rss: v });
  if (t <= 60) base = v;
  log(`${t} s: ${fmt(v / MiB, 1)} MiB`);
}
writing = false;
await writer;
const live = await page.getByText('live', { exact: true }).isVisible();
await browser.close();
daemon.kill('SIGTERM');

const end = samples.at(-1)?.rss ?? start;
const result = {
  minutes,
  sessions,
  writerRounds: rounds,
  streamLiveAtEnd: live,
  rssStartMiB: +(start / MiB).toFixed(1),
  rssBaseMiB: +(base / MiB).toFixed(1),
  rssEndMiB: +(end / MiB).toFixed(1),
  rssMaxMiB: +(Math.max(start, ...samples.map((s) => s.rss)) / MiB).toFixed(1),
  growthMiB: +((end - base) / MiB).toFixed(1),
  targetMiB: TARGET_MIB,
};
if (opt.json) console.log(JSON.stringify({ ...result, samples }, null, 2));
else {
  console.log(`daemon RSS with the dashboard open and streaming, ${minutes} min, ${sessions} sessions, ${rounds} qemu-io rounds:`);
  console.log(`  start ${result.rssStartMiB} MiB, after warm-up ${result.rssBaseMiB} MiB, end ${result.rssEndMiB} MiB, max ${result.rssMaxMiB} MiB`);
  console.log(`  growth ${result.growthMiB} MiB (target <= ${TARGET_MIB} MiB); stream live at the end: ${live}`);
}
if (opt.check && (result.growthMiB > TARGET_MIB || !live)) process.exit(1);
