/**
 * LocalPoints: restore points as directories under DATA/repo/vms (docs/repository-format.md,
 * crash rules 2 and 3): a point is built in repo/tmp, its manifest written and synced last, and
 * the directory renamed into vms/VM/; a deleted point is renamed into tmp/ before removal.
 * In an encrypted repository every file of a point is sealed (repo-crypto.ts) at commit, bound to
 * its key vms/VM/ID/NAME as in a bucket; until then the backup's files in tmp/ are plaintext.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { PointBackend } from './backend.js';
import { builtPointFiles, parseManifest, type PointManifest } from './manifest.js';
import { fsyncDir, writeFileDurable } from '../util/durable-file.js';
import { MetadataSealer } from './repo-crypto.js';

export class LocalPoints implements PointBackend {
  /** DATA/repo */
  readonly dir: string;
  readonly #sealer: MetadataSealer;

  constructor(dir: string, sealer = new MetadataSealer(undefined)) {
    this.dir = dir;
    this.#sealer = sealer;
  }

  locationOf(vm: string, id: string): string {
    return path.join(this.dir, 'vms', vm, id);
  }

  async readFile(vm: string, id: string, name: string): Promise<Buffer> {
    const file = path.join(this.locationOf(vm, id), name);
    return this.#sealer.open(pointKey(vm, id, name), await fs.promises.readFile(file), file);
  }

  async exists(vm: string, id: string): Promise<boolean> {
    return fs.existsSync(path.join(this.locationOf(vm, id), 'point.json'));
  }

  async commit(tmp: string, m: PointManifest): Promise<PointManifest> {
    // Encrypted: every file of the point is sealed in place, bound to its final name.
    if (this.#sealer.keys) {
      for (const rel of builtPointFiles(tmp)) writeFileDurable(path.join(tmp, rel), this.#sealer.seal(pointKey(m.vm, m.id, rel), fs.readFileSync(path.join(tmp, rel))));
    }
    writeFileDurable(path.join(tmp, 'point.json'), this.#sealer.seal(pointKey(m.vm, m.id, 'point.json'), JSON.stringify(m, null, 2) + '\n'));
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
        if (fs.existsSync(file)) manifests.push(parseManifest(this.readManifestFile(vm, id, fs.readFileSync(file)), file));
      }
    }
    return manifests;
  }

  /** The text of a point's manifest file as read from disk (opened, if the repository is encrypted). */
  readManifestFile(vm: string, id: string, body: Buffer): string {
    return this.#sealer.open(pointKey(vm, id, 'point.json'), body, path.join(this.locationOf(vm, id), 'point.json')).toString('utf8');
  }
}

/** A point file's name as sealed: the same key as in a bucket (vms/VM/ID/NAME). */
function pointKey(vm: string, id: string, name: string): string {
  return `vms/${vm}/${id}/${name}`;
}

