/**
 * Alerts from a real daemon process: with --alert-webhook pointing at a local receiver and
 * --alert-disk-free-percent 100 (every file system is "nearly full" by that measure), the daemon's
 * first check (run at start) reads the data directory's file system with statfs and POSTs a
 * repo-disk-full alert. (That a lasting condition sends nothing more is test/unit/alerts, with an
 * injected clock.)
 */
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { tempDir } from '../helpers/images.js';

let d: DaemonProcess;
let srv: http.Server;
const got: Array<Record<string, any>> = [];
let onAlert: (() => void) | undefined;

beforeAll(async () => {
  srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      got.push(JSON.parse(body));
      res.writeHead(204).end();
      onAlert?.();
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook`;
  const dir = tempDir();
  d = await startDaemonProcess(['--data', path.join(dir, 'data'), '--nbd', 'none', '--http', '127.0.0.1:0', '--alert-webhook', url, '--alert-disk-free-percent', '100', '--alert-check-seconds', '3600']);
});

afterAll(async () => {
  await d?.stop();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
});

describe('alerts from the daemon', () => {
  it('POSTs repo-disk-full (statfs of the data directory)', async () => {
    if (got.length === 0) await new Promise<void>((resolve) => (onAlert = resolve));
    expect(got[0]).toMatchObject({ key: 'repo-disk-full', kind: 'repo-disk-full', state: 'firing', severity: 'critical', details: { thresholdPercent: 100 } });
    expect(got[0]!.details.totalBytes).toBeGreaterThan(0);
    expect(got[0]!.details.path).toBe(path.join(path.dirname(d.dataDir), 'data'));
  });
});
