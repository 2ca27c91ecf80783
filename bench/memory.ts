/**
 * Process memory as the size benches report it (Linux /proc). RSS counts every mapped page once
 * per mapping: a file page that several onnxruntime sessions map (the shared base weights) is
 * counted once per session. PSS (smaps_rollup) divides each page by the number of mappings of it,
 * so for a process alone on its files PSS is the physical memory it holds: the figure the size
 * bar is judged on (daemon/engine/README.md § memory).
 */
import { readFileSync } from 'node:fs';

export interface MemoryFigures { rssGb: number; peakRssGb: number; anonGb: number; fileGb: number; pssGb: number }

const field = (text: string, key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20;

export function memory(): MemoryFigures {
  const status = readFileSync('/proc/self/status', 'utf8');
  const rollup = readFileSync('/proc/self/smaps_rollup', 'utf8');
  return {
    rssGb: field(status, 'VmRSS'), peakRssGb: field(status, 'VmHWM'), anonGb: field(status, 'RssAnon'), fileGb: field(status, 'RssFile'),
    pssGb: field(rollup, 'Pss'),
  };
}

/** Samples PSS every `ms` (runs happen off the main thread, so the timer fires during them); `peak()` is the highest seen. */
export function pssSampler(ms = 200): { peak(): number; stop(): void } {
  let peak = memory().pssGb;
  const timer = setInterval(() => { peak = Math.max(peak, memory().pssGb); }, ms);
  timer.unref();
  return { peak: () => Math.max(peak, memory().pssGb), stop: () => clearInterval(timer) };
}

export const gb = (x: number): number => +x.toFixed(2);
