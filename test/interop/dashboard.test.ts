/**
 * The dashboard end to end: Debian's chromium (headless, driven by playwright-core, which
 * downloads no browser) against a real `rebound serve --demo`: log in with the admin token, see the
 * demo VM's restore point, recover it, watch live numbers while qemu-io writes to the session,
 * move the IOPS slider and see fio-measured IOPS follow, migrate to a file until "in step",
 * switch, finish; discard a second session through its confirmation. Screenshots of every page go
 * to test-results/dashboard/, or with REBOUND_UPDATE_SCREENSHOTS=1 to docs/images/ (the README
 * shows them); the first page load's asset bytes are measured.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { missingPeers } from '../helpers/peers.js';
import { runOk } from '../helpers/run.js';

const CHROMIUM = '/usr/bin/chromium';
const missing = [...missingPeers('qemu-io', 'fio'), ...(fs.existsSync(CHROMIUM) ? [] : ['chromium'])];
/** Screenshots: into test-results/ on every run; REBOUND_UPDATE_SCREENSHOTS=1 refreshes the README's in docs/images/. */
const IMAGES = path.join(REPO, process.env.REBOUND_UPDATE_SCREENSHOTS === '1' ? 'docs/images' : 'test-results/dashboard');
/** Generous safety bound for conditions that the daemon reaches in about a second. */
const WAIT = { timeout: 30_000 };

let d: DaemonProcess;
let browser: Browser;
let page: Page;
let dir: string;
let firstLoadBytes = 0;

async function api<T = any>(method: string, p: string, body?: unknown): Promise<T> {
  const r = await fetch(`${d.url}${p}`, { method, headers: { ...d.auth, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
  return (await r.json()) as T;
}

/** Runs qemu-io against an NBD URI: 64 writes of 64 KiB at spread offsets. */
function qemuIoWrites(uri: string, round: number): Promise<number | null> {
  const cmds = Array.from({ length: 64 }, (_, i) => ['-c', `write -P ${(round + i) % 250} ${((round * 64 + i) % 900) * 65536} 64k`]).flat();
  return new Promise((resolve) => {
    const c = spawn('qemu-io', ['-f', 'raw', ...cmds, uri], { stdio: 'ignore' });
    c.on('exit', resolve);
  });
}

interface MiniDocument {
  querySelector(sel: string): { textContent: string | null } | null;
  querySelectorAll(sel: string): { length: number };
}
/** The page's globals inside page.waitForFunction callbacks (functions, not strings: the dashboard's CSP forbids eval). */
type Win = { document: MiniDocument };

/** What the page and the daemon show now, for a failed wait's message (the QoS steps raced once in CI). */
async function pageState(): Promise<string> {
  const ui = await page.evaluate(() => {
    const doc = (globalThis as unknown as { document: { activeElement: { id?: string; tagName?: string } | null; querySelector(s: string): { textContent: string | null; value?: string } | null } }).document;
    const text = (s: string): string | null | undefined => doc.querySelector(s)?.textContent;
    return { focus: doc.activeElement?.id || doc.activeElement?.tagName, iops: doc.querySelector('#qos-iops')?.value, bps: doc.querySelector('#qos-bps')?.value, status: text('p.msg'), live: text('header .live') };
  });
  const s = await api('GET', '/v1/sessions/web1').catch((e: Error) => ({ error: e.message }));
  return `page ${JSON.stringify(ui)}, daemon qos ${JSON.stringify((s as { qos?: unknown }).qos ?? s)}`;
}

/** Waits for a locator; a timeout names the page's and the daemon's state. */
async function shows(l: ReturnType<Page['getByText']>): Promise<void> {
  try {
    await l.waitFor(WAIT);
  } catch (e) {
    throw new Error(`${(e as Error).message.split('\n')[0]} (${await pageState()})`);
  }
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: path.join(IMAGES, `dashboard-${name}.png`), fullPage: true });
}

describe.skipIf(missing.length > 0)(`dashboard in chromium${missing.length ? ` (skipped: ${missing.join(', ')} missing)` : ''}`, () => {
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebound-dash-'));
    d = await startDaemonProcess(['--demo', '--data', path.join(dir, 'data'), '--nbd', '127.0.0.1:0', '--http', '127.0.0.1:0'], { timeoutMs: 60_000 });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (err) => console.error('page error:', err));
    fs.mkdirSync(IMAGES, { recursive: true });
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await d?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('logs in with a token; the first load is small', async () => {
    await page.goto(`${d.url}/`, { waitUntil: 'load' });
    await page.getByLabel('API token').waitFor(WAIT);
    // Bytes of every response of the load (page, scripts, styles), as the browser received them.
    // (Browser-side code as strings or through Win: the tests' type-check has no DOM library.)
    const bytes = await page.evaluate<number>(
      "[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')].reduce((a, e) => a + e.encodedBodySize, 0)",
    );
    firstLoadBytes = bytes;
    console.log(`dashboard first load: ${bytes} bytes (${(bytes / 1024).toFixed(1)} KiB) of assets`);
    expect(bytes).toBeGreaterThan(10_000);
    expect(bytes).toBeLessThan(300 * 1024);
    await shot('login');

    await page.getByLabel('API token').fill('rbd_not-a-token');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').getByText('not valid').waitFor(WAIT);

    await page.getByLabel('API token').fill(d.token!);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor(WAIT);
    await page.getByText('live', { exact: true }).waitFor(WAIT);
    await page.getByRole('heading', { name: 'Repository' }).waitFor(WAIT);
    await page.getByText(/data reduction/).waitFor(WAIT);
    expect(await page.evaluate<number>('sessionStorage.length')).toBe(1);
    expect(page.url()).not.toContain(d.token!);
  });

  it('shows the demo VM\'s restore point and recovers it', async () => {
    await page.getByRole('link', { name: 'Backups' }).click();
    await page.getByRole('heading', { name: 'Restore points of demo' }).waitFor(WAIT);
    const point = page.locator('[data-point]').first();
    await point.waitFor(WAIT);
    await point.getByRole('button', { name: 'Verify' }).click();
    await point.getByTestId('verify-state').getByText(/^verified /).waitFor(WAIT);
    await shot('backups');
    await point.getByRole('button', { name: 'Recover…' }).click();
    await point.getByLabel('Session name').fill('web1');
    await point.getByRole('button', { name: 'Recover', exact: true }).click();
    await page.getByRole('heading', { name: 'Session web1' }).waitFor(WAIT);
    await page.getByText('NBD URI').first().waitFor(WAIT);
    expect(await page.locator('.conn code').first().textContent()).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/.*web1/);
  });

  it('shows live numbers while qemu-io writes; fio-measured IOPS follow the QoS slider', async () => {
    const s = await api('GET', '/v1/sessions/web1');
    const uri = s.connect.disks[0].nbdUri as string;
    // qemu-io writes round after round until the page shows write IOPS (bounded by count).
    let stop = false;
    const writer = (async () => {
      for (let round = 0; round < 500 && !stop; round++) expect(await qemuIoWrites(uri, round)).toBe(0);
    })();
    await page.waitForFunction(() => Number((globalThis as unknown as Win).document.querySelector('[data-testid^="iops-"]')?.textContent) > 0, undefined, WAIT);
    await page.waitForFunction(() => !/^0 B$/.test((globalThis as unknown as Win).document.querySelector('[data-testid="overlay"]')?.textContent ?? '0 B'), undefined, WAIT);
    // The write latency of those seconds (metered requests), while qemu-io still writes.
    await page.waitForFunction(() => Number((globalThis as unknown as Win).document.querySelector('[data-testid^="wlat-"]')?.textContent) > 0, undefined, WAIT);
    stop = true;
    await writer;
    expect((await api('GET', '/v1/sessions/web1')).overlayBytes).toBeGreaterThan(0);

    // fio-measured IOPS follow the slider: a fixed count of 4K reads (3 s at the limit), within 10%.
    const fio = async (ios: number): Promise<number> => {
      const r = await runOk('fio', ['--name=q', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=8', `--number_ios=${ios}`, '--size=16M', '--output-format=json'], { timeoutMs: 120_000 });
      // libnbd prints a connection line before fio's JSON.
      return (JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: Array<{ read: { iops: number } }> }).jobs[0]!.read.iops;
    };
    for (const limit of [200, 500]) {
      await page.getByLabel(/IOPS limit/).fill(String(limit));
      await shows(page.getByTestId('qos-iops').getByText(String(limit)));
      expect((await api('GET', '/v1/sessions/web1')).qos.iops).toBe(limit);
      const iops = await fio(limit * 3);
      expect(iops).toBeGreaterThan(limit * 0.9);
      expect(iops).toBeLessThan(limit * 1.1);
    }
    // Keyboard: the bandwidth slider moves by its step with an arrow key and applies at once.
    await page.getByLabel(/Bandwidth limit/).focus();
    await page.keyboard.press('ArrowRight');
    await shows(page.getByTestId('qos-bps').getByText('10.0 MiB/s'));
    expect((await api('GET', '/v1/sessions/web1')).qos.bps).toBe(10 * 1024 * 1024);
    await page.keyboard.press('Home');
    await shows(page.getByTestId('qos-bps').getByText('none'));
    await page.getByLabel(/IOPS limit/).fill('0');
    await shows(page.getByTestId('qos-iops').getByText('none'));
    expect((await api('GET', '/v1/sessions/web1')).qos.iops).toBeUndefined();
  });

  it('migrates to a file until in step, switches and finishes', async () => {
    const target = path.join(dir, '{disk}.raw');
    await page.getByLabel('Target').fill(target);
    await page.getByRole('button', { name: 'Start migration' }).click();
    await page.getByTestId('migration').getByText('in step').waitFor(WAIT);
    await page.getByTestId('session-state').getByText('in-step').waitFor(WAIT);
    await page.waitForFunction(() => (globalThis as unknown as Win).document.querySelectorAll('.graph canvas').length === 4, undefined, WAIT);
    await shot('session');
    await page.getByRole('button', { name: 'Switch' }).click();
    await page.getByTestId('session-state').getByText('switched').waitFor(WAIT);
    await page.getByRole('button', { name: 'Finish web1' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText('overlays').waitFor(WAIT);
    await dialog.getByRole('button', { name: 'Yes, finish web1' }).click();
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor(WAIT);
    const list = await api<{ sessions: Array<{ name: string }> }>('GET', '/v1/sessions');
    expect(list.sessions.map((x) => x.name)).not.toContain('web1');
    expect(fs.statSync(path.join(dir, 'disk0.raw')).size).toBe(64 * 1024 * 1024);
  });

  it('discards another session only through the confirmation', async () => {
    // A 4 MiB quota filled past 90%: the overview shows the session's warning in red.
    const s2 = await api('POST', '/v1/sessions', { vm: 'demo', name: 'web2', quota: 4 * 1024 * 1024 });
    await page.getByRole('link', { name: 'web2' }).waitFor(WAIT);
    const cmds = Array.from({ length: 60 }, (_, i) => ['-c', `write -P 7 ${i * 65536} 64k`]).flat();
    await runOk('qemu-io', ['-f', 'raw', ...cmds, s2.connect.disks[0].nbdUri], { timeoutMs: 60_000 });
    const warning = page.locator('tr[data-session="web2"] td.warn').getByText(/of its quota/);
    await warning.waitFor(WAIT);
    expect(await warning.evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { color: string } }).getComputedStyle(el).color)).toBe('rgb(185, 28, 28)');
    await shot('overview');
    await page.getByRole('link', { name: 'web2' }).click();
    await page.getByRole('heading', { name: 'Session web2' }).waitFor(WAIT);
    await page.getByRole('button', { name: 'Discard web2' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText('Everything written to web2').waitFor(WAIT);
    await page.keyboard.press('Escape'); // the dialog is modal and closes from the keyboard, nothing done
    await dialog.waitFor({ state: 'hidden', ...WAIT });
    expect((await api('GET', '/v1/sessions/web2')).name).toBe('web2');
    await page.getByRole('button', { name: 'Discard web2' }).click();
    await dialog.getByRole('button', { name: 'Yes, discard web2' }).click();
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor(WAIT);
    const list = await api<{ sessions: Array<{ name: string }> }>('GET', '/v1/sessions');
    expect(list.sessions).toEqual([]);
  });

  it('lists jobs and the event log; a phone-sized window reads', async () => {
    await page.getByRole('link', { name: 'Jobs' }).click();
    await page.locator('[data-job]').filter({ hasText: 'migrate' }).first().waitFor(WAIT);
    await shot('jobs');
    await page.getByRole('link', { name: 'Log' }).click();
    await page.locator('.log li').filter({ hasText: 'session.removed' }).first().waitFor(WAIT);
    await shot('log');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('link', { name: 'Overview' }).click();
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor(WAIT);
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
    expect(overflow).toBeLessThanOrEqual(0);
    await shot('phone');
    expect(firstLoadBytes).toBeGreaterThan(0);
  });
});
