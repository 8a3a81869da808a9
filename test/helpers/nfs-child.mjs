// An NFS datastore server as a separate process (for tests that run clients in a network namespace
// or restart the server): `node nfs-child.mjs CONFIG.json`. Uses the built dist/. Sessions are
// CowOverlays over raw base files; restore points are raw files. Prints "READY <port>" when it
// listens; SIGTERM closes gracefully (overlays flushed), SIGKILL is a crash.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist');
const { NfsServer } = await import(path.join(dist, 'nfs/server.js'));
const { StaticSessionSource } = await import(path.join(dist, 'exports/views.js'));
const { RawFileDevice } = await import(path.join(dist, 'blockdev/base/raw-file.js'));
const { CowOverlay } = await import(path.join(dist, 'blockdev/layers/cow/cow-overlay.js'));
const { createLogger } = await import(path.join(dist, 'util/log.js'));

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const devices = [];
const sessions = [];
for (const s of cfg.sessions ?? []) {
  const disks = [];
  for (const d of s.disks) {
    const base = await RawFileDevice.open(d.base);
    const cow = await CowOverlay.open(base, { dir: d.overlay, baseId: d.base });
    devices.push(cow);
    disks.push({ name: d.name, size: cow.size, device: () => cow });
  }
  fs.mkdirSync(s.dir, { recursive: true });
  sessions.push({ name: s.name, vm: s.vm, pointId: s.pointId, createdAt: new Date(s.createdAt), dir: s.dir, publish: { nbd: false, nfs: s.publishNfs ?? true }, disks });
}
const pointViews = (cfg.points ?? []).map((p) => ({
  vm: p.vm,
  id: p.id,
  createdAt: new Date(p.createdAt),
  disks: p.disks.map((d) => ({ name: d.name, size: fs.statSync(d.file).size, open: () => RawFileDevice.open(d.file) })),
  configs: Object.keys(p.configs ?? {}),
  readConfig: async (name) => Buffer.from(p.configs[name]),
}));
const points = { list: async () => pointViews, onChange: () => () => undefined };
const server = new NfsServer({
  sessions: new StaticSessionSource(sessions),
  points,
  stateDir: cfg.stateDir,
  readOnly: cfg.readOnly ?? false,
  allowedClients: cfg.clients ?? [],
  log: createLogger({ level: cfg.logLevel ?? 'warn' }),
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
  for (const d of devices) await d.close();
  process.exit(0);
});
