/**
 * An encrypted repository in a bucket, against a real Ceph RGW started by the test
 * (test/helpers/rgw.ts, as test/interop/s3-repo.test.ts): `repo keygen`, `repo init --s3
 * --encrypt`, a backup of an image and a VM config file full of known strings, then every object
 * of the bucket listed and downloaded with the SDK: none holds any of the strings (nor the
 * source's path, which the manifest records). A wrong key is refused with a clear error (joining
 * with `repo init`, starting the daemon with --repo-key-file); a restore with the right key from
 * an emptied cache compares equal (qemu-img compare), and verify is clean; a flipped byte in a chunk
 * object and a chunk object copied over another are both named corrupt by verify.
 */
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PointManifest } from '../../src/repo/manifest.js';
import { cli } from '../helpers/cli.js';
import type { DaemonProcess } from '../helpers/daemon-process.js';
import { makeImage } from '../helpers/images.js';
import { closeRgwTestbed, gatewayOk, missingRgwPeers, openRgwTestbed, startGateway as startGatewayOn, stopGateway as stopGatewayOn, type Rgw, type RgwTestbed } from '../helpers/rgw.js';
import { run } from '../helpers/run.js';

const MiB = 1024 * 1024;
const BUCKET = 'rebound-enc-test';
const missing = missingRgwPeers('qemu-img');

/** Strings written into the image and the config file, searched for in every object of the bucket. */
const IMAGE_STRINGS = ['REBOUND-KNOWN-PLAINTEXT-alpha', 'correct horse battery staple', '/etc/shadow:root:$6$rounds'];
const CONFIG_STRING = 'VM-CONFIG-SECRET-7f3a9c';

let bed: RgwTestbed | undefined;
let rgw: Rgw;
let dir: string;
let s3: S3Client;

const startGateway = (data: string, extra: string[] = []): Promise<DaemonProcess> => startGatewayOn(bed!, data, extra);
const stopGateway = (d: DaemonProcess): Promise<void> => stopGatewayOn(bed!, d);

const ok = gatewayOk;

async function everyObject(): Promise<Array<{ key: string; body: Buffer }>> {
  const out: Array<{ key: string; body: Buffer }> = [];
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, ContinuationToken: token }));
    for (const o of r.Contents ?? []) {
      const g = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: o.Key! }));
      out.push({ key: o.Key!, body: Buffer.from(await g.Body!.transformToByteArray()) });
    }
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** A 16 MiB image: random data, with the known strings written many times over its first 6 MiB (compressible text too). */
function knownImage(file: string): void {
  makeImage(file, { size: 16 * MiB, data: [[6 * MiB, 4 * MiB]], seed: 5 });
  const fd = fs.openSync(file, 'r+');
  try {
    const text = Buffer.from(Array.from({ length: 2000 }, (_, i) => `${IMAGE_STRINGS[i % IMAGE_STRINGS.length]} line ${i}\n`).join(''));
    for (let off = 0; off < 6 * MiB; off += 512 * 1024) fs.writeSync(fd, text, 0, text.length, off);
  } finally {
    fs.closeSync(fd);
  }
}

beforeAll(async () => {
  if (missing.length) return;
  bed = await openRgwTestbed('rebound-s3enc-');
  ({ rgw, dir, s3 } = bed);
}, 180_000);

afterAll(() => closeRgwTestbed(bed), 60_000);

describe.skipIf(missing.length > 0)('encrypted S3 repository on Ceph RGW', () => {
  it('the bucket holds none of the plaintext; a wrong key is refused; a restore with the right key compares equal', async () => {
    const data = path.join(dir, 'gw');
    const key = path.join(dir, 'repo.key');
    const wrongKey = path.join(dir, 'wrong.key');
    const gen = await cli(['repo', 'keygen', key]);
    expect(gen.code, gen.stderr).toBe(0);
    const fingerprint = /key fingerprint ([0-9a-f]{32})/.exec(gen.stdout)![1]!;
    expect(fs.statSync(key).mode & 0o777).toBe(0o600);
    expect((await cli(['repo', 'keygen', key])).stderr).toMatch(/already exists/);
    expect((await cli(['repo', 'keygen', wrongKey])).code).toBe(0);

    const init = await cli(['--data', data, 'repo', 'init', '--s3', rgw.endpoint, '--bucket', BUCKET, '--prefix', 'secret', '--chunk-size', '256K', '--encrypt', key], { env: rgw.env });
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain(`encrypted (AES-256-GCM, key fingerprint ${fingerprint}`);

    // Joining with the wrong key, or without one, is refused before anything is written.
    const other = path.join(dir, 'gw-other');
    const joinWrong = await cli(['--data', other, 'repo', 'init', '--s3', rgw.endpoint, '--bucket', BUCKET, '--prefix', 'secret', '--encrypt', wrongKey], { env: rgw.env });
    expect(joinWrong.code).not.toBe(0);
    expect(joinWrong.stderr).toMatch(new RegExp(`wrong key for the repository s3://${BUCKET}/secret/: .*wrong\\.key has fingerprint [0-9a-f]{32}, the repository's key has ${fingerprint}`));
    const joinNone = await cli(['--data', other, 'repo', 'init', '--s3', rgw.endpoint, '--bucket', BUCKET, '--prefix', 'secret'], { env: rgw.env });
    expect(joinNone.stderr).toMatch(/is encrypted \(key fingerprint [0-9a-f]{32}\): give its key file with --encrypt KEYFILE/);
    expect(fs.existsSync(path.join(other, 'repo', 's3.json'))).toBe(false);

    const img = path.join(dir, 'known.img');
    knownImage(img);
    const vmx = path.join(dir, 'secret-vm.vmx');
    fs.writeFileSync(vmx, `displayName = "${CONFIG_STRING}"\nscsi0:0.fileName = "${CONFIG_STRING}.vmdk"\n`);
    let gw = await startGateway(data);
    const m = JSON.parse(await ok(gw, ['backup', 'enc1', '--disk', `disk0=${img}`, '--config', vmx, '--json'])).result as PointManifest;
    expect(m.disks[0]!.newChunks).toBeGreaterThanOrEqual(17);
    const info = await ok(gw, ['repo', 'info']);
    expect(info).toContain(`encryption: AES-256-GCM, chunk names HMAC-SHA256, key fingerprint ${fingerprint}`);
    expect(info).not.toContain(fs.readFileSync(key).toString('hex'));
    const infoJson = JSON.parse(await ok(gw, ['repo', 'info', '--json']));
    expect(infoJson.encryption).toEqual({ algorithm: 'aes-256-gcm', chunkIds: 'hmac-sha256', kdf: 'hkdf-sha256', fingerprint });

    // Every object in the bucket, downloaded: no known string, no config text, no source path.
    const objects = await everyObject();
    // 12 equal chunks of text (every 512 KiB) are one object under their keyed name: dedup works.
    // (newChunks may count a chunk twice when two concurrent puts both found it absent.)
    const chunkObjects = objects.filter((o) => o.key.startsWith('secret/chunks/')).length;
    expect(chunkObjects).toBeGreaterThanOrEqual(17);
    expect(chunkObjects).toBeLessThanOrEqual(m.disks[0]!.newChunks);
    expect(objects.map((o) => o.key)).toEqual(expect.arrayContaining([`secret/vms/enc1/${m.id}/point.json`, `secret/vms/enc1/${m.id}/disk0.fidx`, `secret/vms/enc1/${m.id}/config/secret-vm.vmx`]));
    const needles = [...IMAGE_STRINGS, CONFIG_STRING, img, 'known.img', 'line 1999'].map((s) => Buffer.from(s));
    for (const o of objects) {
      for (const n of needles) expect(o.body.includes(n), `${o.key} contains '${n.toString()}'`).toBe(false);
    }
    // The descriptor names the key by its fingerprint only.
    const descriptor = JSON.parse(objects.find((o) => o.key === 'secret/repo.json')!.body.toString());
    expect(descriptor.encryption).toMatchObject({ algorithm: 'aes-256-gcm', fingerprint });
    expect(JSON.stringify(descriptor)).not.toContain(fs.readFileSync(key).toString('hex'));
    // The sanity check of the search: the image itself does contain the strings.
    expect(fs.readFileSync(img).includes(needles[0]!)).toBe(true);

    // A wrong key at daemon start: refused with the reason, nothing served.
    await stopGateway(gw);
    await expect(startGateway(data, ['--repo-key-file', wrongKey])).rejects.toThrow(/wrong key for the repository s3:\/\/rebound-enc-test\/secret\/: .*wrong\.key has fingerprint/);

    // The right key (recorded by init), cold: empty disk cache and catalog; restore compares equal.
    fs.rmSync(path.join(data, 'cache'), { recursive: true, force: true });
    fs.rmSync(path.join(data, 'catalog'), { recursive: true, force: true });
    gw = await startGateway(data);
    const restored = path.join(dir, 'restored.img');
    await ok(gw, ['restore', `enc1@${m.id}`, '--disk', 'disk0', '--to', restored]);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', restored, img]);
    expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
    const exported = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `nbd://${gw.nbd}/enc1@${m.id}/disk0`, img]);
    expect(exported.stdout + exported.stderr).toContain('Images are identical');
    expect(JSON.parse(await ok(gw, ['verify', '--json']))).toMatchObject({ ok: true, points: 1 });

    // A flipped byte in one chunk object, and another chunk's object copied over a second one:
    // verify names both chunks as corrupt (the tag binds each object to its name); put back, clean.
    const chunkKeys = objects.filter((o) => o.key.startsWith('secret/chunks/'));
    const [flipped, swapped, donor] = chunkKeys;
    const bad = Buffer.from(flipped!.body);
    bad[bad.length >> 1]! ^= 0x01;
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: flipped!.key, Body: bad }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: swapped!.key, Body: donor!.body }));
    try {
      const r = await cli(['--server', gw.url!, '--token-file', gw.tokenFile, 'verify', '--json']);
      expect(r.code).not.toBe(0);
      const report = JSON.parse(r.stdout) as { ok: boolean; problems: Array<{ chunk: string; error: string }> };
      const name = (k: string): string => k.slice(k.lastIndexOf('/') + 1);
      expect(report.problems.map((p) => [p.chunk, p.error]).sort()).toEqual([[name(flipped!.key), 'corrupt'], [name(swapped!.key), 'corrupt']].sort());
    } finally {
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: flipped!.key, Body: flipped!.body }));
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: swapped!.key, Body: swapped!.body }));
    }
    expect(JSON.parse(await ok(gw, ['verify', '--json']))).toMatchObject({ ok: true });
    // An incremental-free second backup of the same image deduplicates against the keyed names.
    const again = JSON.parse(await ok(gw, ['backup', 'enc1', '--disk', `disk0=${img}`, '--json'])).result as PointManifest;
    expect(again.disks[0]!.newChunks).toBe(0);
    await stopGateway(gw);
  }, 240_000);
});
