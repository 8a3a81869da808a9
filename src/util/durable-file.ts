/** Small durable-file helpers: data reaches the disk before the name that points to it. */
import fs from 'node:fs';
import path from 'node:path';

/** Writes `file` via a temp file: write, fsync, rename. Readers see the old or the new content. */
export function writeFileDurable(file: string, content: string | Uint8Array): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, typeof content === 'string' ? Buffer.from(content) : content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Makes a directory's entries (created, renamed, removed files) durable. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The asynchronous form of writeFileDurable, for code that runs while the daemon serves: write a
 * temp file, fsync it, rename it over `file`, fsync the directory (so the rename survives a crash).
 * On failure (a full disk) `file` keeps its old content and the temp file is removed.
 */
export async function writeFileDurableAsync(file: string, content: string | Uint8Array): Promise<void> {
  const tmp = `${file}.tmp`;
  try {
    const fh = await fs.promises.open(tmp, 'w');
    try {
      await fh.writeFile(content);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDirAsync(path.dirname(file));
}

/** The asynchronous form of fsyncDir. */
export async function fsyncDirAsync(dir: string): Promise<void> {
  const fh = await fs.promises.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
