/**
 * The conformance suite over every session layer (qos, stats, freeze, switch, dirty-tracker), the
 * frozen view `rebound commit` reads, and LazyDevice: each alone over a patterned device, as the
 * front ends see it (through checked()).
 */
import { LazyDevice } from '../../src/blockdev/base/lazy.js';
import { RawFileDevice } from '../../src/blockdev/base/raw-file.js';
import { RepoImage, repoImageCapabilities } from '../../src/blockdev/base/repo-image.js';
import { WritableFileDevice } from '../../src/blockdev/base/writable-file.js';
import { buildStack } from '../../src/blockdev/layer.js';
import { CowOverlay } from '../../src/blockdev/layers/cow/cow-overlay.js';
import { DirtyTracker } from '../../src/blockdev/layers/dirty-tracker.js';
import { FreezeLayer } from '../../src/blockdev/layers/freeze.js';
import { QosLayer, QosLimiter } from '../../src/blockdev/layers/qos.js';
import { StatsLayer } from '../../src/blockdev/layers/stats.js';
import { SwitchableDevice } from '../../src/blockdev/layers/switchable.js';
import { readOnlyCapabilities } from '../../src/blockdev/types.js';
import { memoryChunks } from '../helpers/repo-fixture.js';
import { blockDeviceSuite, type SuiteDevice } from './blockdev-suite.js';
import { imageFile, memoryWith, patternedContent } from './fixtures.js';
import path from 'node:path';

async function patterned(): Promise<SuiteDevice> {
  const expected = patternedContent();
  return { device: await memoryWith(expected), expected };
}

blockDeviceSuite('qos (no limit) over memory', async () => {
  const sd = await patterned();
  return { ...sd, device: new QosLayer(sd.device, new QosLimiter()) };
});

blockDeviceSuite('qos (own and shared limits) over memory', async () => {
  const sd = await patterned();
  return { ...sd, device: new QosLayer(sd.device, new QosLimiter({ iops: 50_000, bps: 4 * 1024 * 1024 * 1024 }), new QosLimiter({ iops: 100_000 })) };
});

blockDeviceSuite('stats over memory', async () => {
  const sd = await patterned();
  return { ...sd, device: new StatsLayer(sd.device) };
});

blockDeviceSuite('freeze (thawed) over memory', async () => {
  const sd = await patterned();
  return { ...sd, device: new FreezeLayer(sd.device) };
});

blockDeviceSuite('freeze (frozen: writes save old content first) over memory', async () => {
  const sd = await patterned();
  const freeze = new FreezeLayer(sd.device);
  await freeze.freeze(65536);
  return { ...sd, device: freeze, cleanup: () => freeze.thaw() };
});

blockDeviceSuite('frozen view (what commit reads)', async () => {
  const sd = await patterned();
  const freeze = new FreezeLayer(sd.device);
  await freeze.freeze(65536);
  return {
    ...sd,
    device: freeze.frozenView(),
    cleanup: async () => {
      freeze.thaw();
      await freeze.close();
    },
  };
});

blockDeviceSuite('dirty-tracker (tracking) over memory', async () => {
  const sd = await patterned();
  const tracker = new DirtyTracker(sd.device, 1024 * 1024);
  tracker.start();
  return { ...sd, device: tracker };
});

blockDeviceSuite('switch (before a switch) over memory', async () => {
  const sd = await patterned();
  return { ...sd, device: new SwitchableDevice(sd.device) };
});

// The real case: the export announced the overlay's capabilities (fast zero, trim, extents) and
// now runs on a file target that has none of them; requests are adapted.
blockDeviceSuite('switch (after switching from a cow overlay to a file target)', async () => {
  const img = imageFile();
  const overlay = await CowOverlay.open(await RawFileDevice.open(img.file), { dir: path.join(img.dir, 'overlay'), baseId: img.file });
  const sw = new SwitchableDevice(overlay);
  const target = await WritableFileDevice.open(path.join(img.dir, 'target.raw'), img.expected.length, { startOver: true });
  await target.write(img.expected, 0);
  await sw.exclusive(async () => sw.switchTo(target));
  return {
    device: sw,
    expected: img.expected,
    cleanup: async () => {
      await overlay.close();
      img.cleanup();
    },
  };
});

blockDeviceSuite('lazy (over a raw file)', async () => {
  const img = imageFile();
  const device = new LazyDevice('raw-file', img.expected.length, readOnlyCapabilities(), () => RawFileDevice.open(img.file));
  return { device, expected: img.expected, cleanup: img.cleanup };
});

blockDeviceSuite('lazy (over a repo image)', async () => {
  const expected = patternedContent();
  const { index, reader } = memoryChunks(expected, 1024 * 1024);
  return { device: new LazyDevice('repo-image', expected.length, repoImageCapabilities(index), async () => new RepoImage(index, reader)), expected };
});

blockDeviceSuite('stack built with buildStack: stats -> qos -> freeze -> switch -> dirty-tracker -> memory', async () => {
  const sd = await patterned();
  const device = await buildStack(sd.device, [
    (next) => new DirtyTracker(next, 65536),
    (next) => new SwitchableDevice(next),
    (next) => new FreezeLayer(next),
    (next) => new QosLayer(next, new QosLimiter()),
    (next) => new StatsLayer(next),
  ]);
  return { ...sd, device };
});
