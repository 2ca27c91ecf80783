/**
 * Durable file operations (the registry, policy edits, adapters and checkpoints, round metadata,
 * append-only logs). A file becomes visible only complete: write a temp file in the same directory,
 * fsync it, rename it over the target, fsync the directory (so the rename itself survives a power
 * cut, not just a process crash). An append-only log gains whole lines only (`appendLineDurable`).
 */
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { AligndError } from './errors.js';

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Write bytes to a file and fsync it (the file is new or truncated). */
export function writeDurable(path: string, bytes: Uint8Array | string): void {
  const fd = openSync(path, 'w', 0o644);
  try {
    const buf = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replace `path` atomically with `bytes`: temp + fsync + rename + fsync(dir). */
export function writeFileAtomicDurable(path: string, bytes: Uint8Array | string): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    writeDurable(tmp, bytes);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(dir);
}

/** fsync every file under a directory tree, then the directories (deepest first). */
export function fsyncTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) fsyncTree(p);
    else if (e.isFile()) {
      const fd = openSync(p, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
  fsyncDir(dir);
}

export function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** The last newline-terminated line of a file, where the complete lines end, and the file's size. */
export function lastCompleteLine(path: string): { line: string | undefined; completeBytes: number; size: number } {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    // Read backwards in chunks until we have the last full line.
    let end = size;
    let tail = Buffer.alloc(0);
    while (end > 0) {
      const start = Math.max(0, end - 65536);
      const chunk = Buffer.alloc(end - start);
      readSync(fd, chunk, 0, chunk.length, start);
      tail = Buffer.concat([chunk, tail]);
      end = start;
      const lastNl = tail.lastIndexOf(0x0a);
      if (lastNl < 0) continue;
      const prevNl = tail.lastIndexOf(0x0a, lastNl - 1);
      if (prevNl >= 0 || end === 0) {
        const completeBytes = end + lastNl + 1;
        return { line: tail.subarray(prevNl + 1, lastNl).toString('utf8'), completeBytes, size };
      }
    }
    return { line: undefined, completeBytes: 0, size };
  } finally {
    closeSync(fd);
  }
}

/**
 * Append one line to an append-only log (the audit chain, the promotion announcements) and fsync
 * it before returning. A final line without its newline is a crash in the middle of an append and
 * was never acknowledged: it is cut off first, so the new line never glues onto it (the count of
 * bytes cut is returned, for the caller's record). When the append creates the file, the directory
 * is fsynced too, so the file's name survives a power cut as well as its bytes.
 */
export function appendLineDurable(path: string, line: string): { tornBytesDropped: number } {
  if (line.includes('\n')) {
    throw new AligndError('INTERNAL', `refused to append ${JSON.stringify(line.slice(0, 80))} to ${path}: an append-only log takes one line per record`, { action: 'report this as a bug' });
  }
  const created = !existsSync(path);
  const fd = openSync(path, 'a+', 0o644);
  try {
    let tornBytesDropped = 0;
    const size = fstatSync(fd).size;
    const lastByte = Buffer.alloc(1);
    if (size > 0 && readSync(fd, lastByte, 0, 1, size - 1) === 1 && lastByte[0] !== 0x0a) {
      const last = lastCompleteLine(path);
      tornBytesDropped = last.size - last.completeBytes;
      ftruncateSync(fd, last.completeBytes);
    }
    const buf = Buffer.from(line + '\n', 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
    if (created) fsyncDir(dirname(path));
    return { tornBytesDropped };
  } finally {
    closeSync(fd);
  }
}
