/**
 * Seeded pseudo-random numbers, the one module every stage draws them from. Integer-only state
 * updates, so a seed gives the same stream on every machine and Node version. Not for anything
 * secret.
 *
 * Two generators behind one `Rng`, because committed results depend on each stream:
 * - `createRng`, xoshiro128** (Blackman & Vigna, 2018) seeded through splitmix32: the built-in
 *   tiny model's weights, LoRA init, sampling, the gate's bootstrap, the demo's users and the
 *   committed parity fixtures (tools/parity/write-alignd.mjs) are drawn from it.
 * - `mulberry32` (Tommy Ettinger's 32-bit generator): the buffer's replay-window shuffles (so the
 *   demo's training windows) and the engine's `randomTensor` (test and bench tensors) are drawn
 *   from it; moving them to xoshiro would change the demo's figures for the same seed.
 */
export interface Rng {
  /** Uniform on [0, 1), 32 random bits. */
  next(): number;
  /** Uniform on [lo, hi). */
  uniform(lo: number, hi: number): number;
  /** Standard normal (Box–Muller). */
  normal(): number;
}

/** An `Rng` over a generator of uniform 32-bit integers. `next` needs no `this`: pass it around alone. */
function fromU32(nextU32: () => number): Rng {
  const next = (): number => nextU32() / 4294967296;
  return {
    next,
    uniform: (lo, hi) => lo + (hi - lo) * next(),
    normal: () => {
      const u = 1 - next(); // (0, 1]: log is finite
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
    },
  };
}

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

/** xoshiro128** seeded through splitmix32. */
export function createRng(seed: number): Rng {
  const sm = splitmix32(seed);
  let a = sm(), b = sm(), c = sm(), d = sm();
  return fromU32(() => {
    const result = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a; d ^= b; b ^= c; a ^= d;
    c ^= t;
    d = rotl(d, 11);
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    return result;
  });
}

/** mulberry32: one 32-bit word of state. */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return fromU32(() => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  });
}
