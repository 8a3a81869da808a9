// An NFS datastore server as a separate process (for tests that run clients in a network namespace
// or restart the server): `node nfs-child.mjs CONFIG.json`. Uses the built dist/. It publishes into
// its own catalog, on NFS: sessions as CowOverlays over raw base files, restore points as raw
// files. Prints "READY <port>" when it listens; SIGTERM closes gracefully (overlays flushed),
// SIGKILL is a crash.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist');
const { NfsServer } = await import(path.join(dist, 'nfs/server.js'));
const { Catalog, pointEntryName, sessionEntryName } = await import(path.join(dist, 'exports/catalog.js'));
const { readOnlyCapabilities } = await import(path.join(dist, 'blockdev/types.js'));
const { RawFileDevice } = await import(path.join(dist, 'blockdev/base/raw-file.js'));
const { CowOverlay } = await import(path.join(dist, 'blockdev/layers/cow/cow-overlay.js'));
const { createLogger } = await import(path.join(dist, 'util/log.js'));

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const log = createLogger({ level: cfg.logLevel ?? 'warn' });
const catalog = new Catalog(log);
const devices = [];
for (const s of cfg.sessions ?? []) {
  fs.mkdirSync(s.dir, { recursive: true });
  const session = { name: s.name, vm: s.vm, pointId: s.pointId, createdAt: new Date(s.createdAt), filesDir: s.dir };
  for (const d of s.disks) {
    const base = await RawFileDevice.open(d.base);
    const cow = await CowOverlay.open(base, { dir: d.overlay, baseId: d.base });
    devices.push(cow);
    catalog.publish({
      name: sessionEntryName(s.name, d.name),
      kind: 'session',
      disk: d.name,
      size: cow.size,
      capabilities: cow.capabilities(),
      publish: (s.publishNfs ?? true) ? ['nfs'] : ['nbd'],
      session,
      device: cow,
      owned: false, // closed below, after the server
    });
  }
}
for (const p of cfg.points ?? []) {
  const configs = p.configs ?? {};
  const point = { vm: p.vm, id: p.id, createdAt: new Date(p.createdAt), configs: Object.keys(configs), readConfig: async (name) => Buffer.from(configs[name]) };
  for (const d of p.disks) {
    catalog.publish({
      name: pointEntryName(p.vm, p.id, d.name),
      kind: 'point',
      disk: d.name,
      size: fs.statSync(d.file).size,
      capabilities: readOnlyCapabilities(),
      publish: ['nfs'],
      point,
      open: () => RawFileDevice.open(d.file),
    });
  }
}
const server = new NfsServer({
  catalog: catalog.view('nfs'),
  stateDir: cfg.stateDir,
  readOnly: cfg.readOnly ?? false,
  allowedClients: cfg.clients ?? [],
  ...(cfg.xenFormat ? { xenFormat: cfg.xenFormat } : {}),
  log,
});
const [host, port] = cfg.nfs.split(':');
const bound = await server.listen(host, Number(port));
if (cfg.portmap) {
  const [ph, pp] = cfg.portmap.split(':');
  await server.listenPortmap(ph, Number(pp));
}
process.stdout.write(`READY ${bound.port}\n`);
process.on('SIGTERM', async () => {
  await server.close(2000);
  await catalog.close();
  for (const d of devices) await d.close();
  process.exit(0);
});
