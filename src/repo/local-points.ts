/**
 * LocalPoints: restore points as directories under DATA/repo/vms (docs/repository-format.md,
 * crash rules 2 and 3): a point is built in repo/tmp, its manifest written and synced last, and
 * the directory renamed into vms/VM/; a deleted point is renamed into tmp/ before removal.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { PointBackend } from './backend.js';
import { parseManifest, type PointManifest } from './manifest.js';
import { fsyncDir, writeFileDurable } from '../util/durable-file.js';

export class LocalPoints implements PointBackend {
  /** DATA/repo */
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  locationOf(vm: string, id: string): string {
    return path.join(this.dir, 'vms', vm, id);
  }

  readFile(vm: string, id: string, name: string): Promise<Buffer> {
    return fs.promises.readFile(path.join(this.locationOf(vm, id), name));
  }

  async exists(vm: string, id: string): Promise<boolean> {
    return fs.existsSync(path.join(this.locationOf(vm, id), 'point.json'));
  }

  async commit(tmp: string, m: PointManifest): Promise<PointManifest> {
    writeFileDurable(path.join(tmp, 'point.json'), JSON.stringify(m, null, 2) + '\n');
    fsyncDir(tmp);
    const vmDir = path.join(this.dir, 'vms', m.vm);
    fs.mkdirSync(vmDir, { recursive: true });
    fs.renameSync(tmp, path.join(vmDir, m.id));
    fsyncDir(vmDir);
    return m;
  }

  async delete(vm: string, id: string): Promise<boolean> {
    const d = this.locationOf(vm, id);
    if (!fs.existsSync(d)) return false;
    // Rename first so a crash never leaves a half-deleted point that still looks complete.
    const trash = path.join(this.dir, 'tmp', `deleted-${vm}-${id}-${crypto.randomBytes(4).toString('hex')}`);
    fs.renameSync(d, trash);
    fs.rmSync(trash, { recursive: true, force: true });
    return true;
  }

  async listManifests(only?: string): Promise<PointManifest[]> {
    const manifests: PointManifest[] = [];
    const vmsDir = path.join(this.dir, 'vms');
    for (const vm of fs.existsSync(vmsDir) ? fs.readdirSync(vmsDir) : []) {
      if (only !== undefined && vm !== only) continue;
      for (const id of fs.readdirSync(path.join(vmsDir, vm))) {
        const file = path.join(vmsDir, vm, id, 'point.json');
        if (fs.existsSync(file)) manifests.push(parseManifest(fs.readFileSync(file, 'utf8'), file));
      }
    }
    return manifests;
  }
}
