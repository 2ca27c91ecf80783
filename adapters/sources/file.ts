/**
 * File feedback source: tails a JSONL file. The byte offset of the last complete line taken is
 * checkpointed in the buffer in the SAME transaction as the events, so a crash never loses or
 * re-reads a line. A partial last line waits for its newline. If the file shrinks or is replaced
 * (rotation: a new inode), reading restarts at 0 (the ids dedupe anything seen before).
 * Bad lines are kept in the buffer's dead_letters table with line number and reason.
 */
import { open, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { FeedbackSink, FeedbackSource, RawFeedback } from '../../daemon/feedback/sink.js';
import type { Logger } from '../../daemon/base/log.js';
import { splitLines } from './http.js';

export interface FileSourceOptions {
  path: string;
  pollMs: number;
  log: Logger;
  /** Read the checkpoint (the buffer keeps it). */
  checkpoint(key: string): string | undefined;
  /** Largest chunk read per poll. */
  chunkBytes?: number;
}

interface Position { offset: number; ino: number; line: number }

export function fileSource(opts: FileSourceOptions): FeedbackSource & { stats: { lines: number; rejected: number; errors: number }; pollOnce(): Promise<number> } {
  const path = resolve(opts.path);
  const key = `file:${path}`;
  const chunkBytes = opts.chunkBytes ?? 4 * 1024 * 1024;
  const stats = { lines: 0, rejected: 0, errors: 0 };
  let sink: FeedbackSink | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;
  let stopped = false;

  const position = (): Position => {
    const v = opts.checkpoint(key);
    return v === undefined ? { offset: 0, ino: -1, line: 0 } : (JSON.parse(v) as Position);
  };

  /** Take every complete line now in the file; returns lines taken. */
  async function readAvailable(): Promise<number> {
    if (sink === undefined) return 0;
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0; // not created yet
      throw err;
    }
    let pos = position();
    if (pos.ino !== -1 && (pos.ino !== st.ino || st.size < pos.offset)) {
      opts.log.warn('feedback file was truncated or replaced; reading it again from the start', { path });
      pos = { offset: 0, ino: st.ino, line: 0 };
    }
    let taken = 0;
    const fh = await open(path, 'r');
    try {
      while (pos.offset < st.size && !stopped) {
        const len = Math.min(chunkBytes, st.size - pos.offset);
        const buf = Buffer.alloc(len);
        const { bytesRead } = await fh.read(buf, 0, len, pos.offset);
        const data = buf.subarray(0, bytesRead);
        let end = data.lastIndexOf(0x0a) + 1;
        if (end === 0) {
          if (bytesRead < chunkBytes) break; // a partial line: wait for its newline
          end = bytesRead; // one line longer than a chunk: take it whole (it will be refused as oversize)
        }
        const lines = splitLines(data.subarray(0, end));
        const batch: RawFeedback[] = lines.map((l) => ({ bytes: l.bytes, origin: { source: 'file', file: path, line: pos.line + l.line } }));
        const newlines = data.subarray(0, end).reduce((n, b) => n + (b === 0x0a ? 1 : 0), 0);
        const next: Position = { offset: pos.offset + end, ino: st.ino, line: pos.line + newlines };
        const outcomes = await sink.ingestInSlices(batch, { checkpoint: { key, value: JSON.stringify(next) }, recordRejects: true });
        for (const o of outcomes) if (o.status === 'rejected') stats.rejected++;
        stats.lines += batch.length;
        taken += batch.length;
        pos = next;
      }
    } finally {
      await fh.close();
    }
    return taken;
  }

  function pollOnce(): Promise<number> {
    running ??= readAvailable().finally(() => { running = undefined; });
    return running;
  }

  function loop(): void {
    timer = setTimeout(() => {
      pollOnce()
        .catch((err: unknown) => {
          stats.errors++;
          opts.log.error('reading the feedback file failed; will retry', { path, err: (err as Error).message });
        })
        .finally(() => { if (!stopped) loop(); });
    }, opts.pollMs);
  }

  return {
    name: `file:${path}`,
    stats,
    pollOnce,
    async start(s) {
      sink = s;
      stopped = false;
      await pollOnce();
      loop();
    },
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
  };
}
