/** Small durable-file helpers: data reaches the disk before the name that points to it. */
import fs from 'node:fs';

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
