/**
 * Time series for the status page: ingest rate sampled in memory (a ring of the last samples),
 * round outcomes from the buffer's round_results table (they survive restarts).
 */
export interface IngestSample { t: number; eventsPerS: number; total: number }

export function ingestRateSampler(total: () => number, everyMs = 5000, keep = 720) {
  const samples: IngestSample[] = [];
  let last = { t: Date.now(), total: total() };
  const sample = (): void => {
    const now = { t: Date.now(), total: total() };
    const dt = (now.t - last.t) / 1000;
    samples.push({ t: now.t, eventsPerS: dt > 0 ? (now.total - last.total) / dt : 0, total: now.total });
    if (samples.length > keep) samples.shift();
    last = now;
  };
  const timer = setInterval(sample, everyMs);
  timer.unref();
  return {
    samples: (): IngestSample[] => samples.slice(),
    sampleNow: sample,
    stop: (): void => clearInterval(timer),
  };
}
