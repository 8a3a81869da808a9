/**
 * `rebound repo init --s3 URL --bucket B [--prefix P]`: links a data directory to a repository in
 * a bucket. Creates the bucket if it does not exist and the repository descriptor (repo.json, a
 * conditional create) if the prefix holds none; if it does, this gateway joins that repository
 * (several gateways share one bucket). Runs without the daemon (before `serve`).
 * With `--encrypt KEYFILE` a new repository is encrypted (repo-crypto.ts: repo.json gets the
 * algorithms, a random HKDF salt and the key's fingerprint); joining an encrypted one needs its key.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, HeadBucketCommand } from '@aws-sdk/client-s3';
import { ReboundError } from '../errors.js';
import type { Codec } from './codec.js';
import { newRepoConfig, readRemoteConfig, repositoryKeys, type RepoConfig } from './repository.js';
import { newEncryptionDescriptor, readKeyFile } from './repo-crypto.js';
import { linkFile, readLink, writeLink, type S3Link } from './s3-link.js';
import { S3Objects } from './s3-objects.js';

export interface InitResult {
  /** True if this call created the repository, false if it joined an existing one. */
  created: boolean;
  url: string;
  config: RepoConfig;
  gateway: string;
}

export interface InitOptions {
  chunkSize?: number;
  codec?: Codec;
  retryMs?: number;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /**
   * `--encrypt KEYFILE` (absolute): a new repository is encrypted with this key; an existing one
   * must be encrypted with it (its fingerprint is checked). Recorded in the link.
   */
  keyFile?: string;
}

export async function initS3Repository(dataDir: string, link: S3Link, opts: InitOptions = {}): Promise<InitResult> {
  const existing = readLink(dataDir);
  if (existing) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `${linkFile(dataDir)} already links this data directory to s3://${existing.bucket}/${existing.prefix}`);
  }
  if (fs.existsSync(path.join(dataDir, 'repo', 'repo.json'))) {
    throw new ReboundError('ERR_INVALID_ARGUMENT', `${path.join(dataDir, 'repo')} holds a local repository; use another data directory for the S3 repository`);
  }
  const config = newRepoConfig(opts);
  if (opts.keyFile) config.encryption = newEncryptionDescriptor(readKeyFile(opts.keyFile));
  const objects = new S3Objects(link, { retryMs: opts.retryMs ?? 30_000, credentials: opts.credentials });
  try {
    await ensureBucket(objects, link);
    const created = await objects.put('repo.json', JSON.stringify(config, null, 2) + '\n', { ifAbsent: true });
    const actual = created ? config : await readRemoteConfig(objects);
    // Joining: the repository there must be encrypted with this key (or neither).
    if (!created) {
      if (actual.encryption && !opts.keyFile) {
        throw new ReboundError('ERR_REPO_KEY', `the repository ${objects.url('')} is encrypted (key fingerprint ${actual.encryption.fingerprint}): give its key file with --encrypt KEYFILE`);
      }
      repositoryKeys(actual, opts.keyFile, objects.url(''));
    }
    writeLink(dataDir, opts.keyFile ? { ...link, keyFile: opts.keyFile } : link);
    return { created, url: objects.url(''), config: actual, gateway: link.gateway };
  } finally {
    objects.close();
  }
}

async function ensureBucket(objects: S3Objects, link: S3Link): Promise<void> {
  try {
    await objects.client.send(new HeadBucketCommand({ Bucket: link.bucket }));
    return;
  } catch (err) {
    const st = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (st === 403) throw new ReboundError('ERR_INVALID_ARGUMENT', `bucket ${link.bucket} at ${link.endpoint}: access denied (check the credentials)`, { cause: err });
    if (st !== 404) throw new ReboundError('ERR_REPO_UNREACHABLE', `bucket ${link.bucket} at ${link.endpoint}: ${(err as Error).message || (err as Error).name}`, { cause: err });
  }
  try {
    await objects.client.send(new CreateBucketCommand({ Bucket: link.bucket }));
  } catch (err) {
    const name = (err as Error).name;
    if (name !== 'BucketAlreadyOwnedByYou') throw new ReboundError('ERR_REPO_IO', `creating bucket ${link.bucket} at ${link.endpoint}: ${(err as Error).message || name}`, { cause: err });
  }
}
