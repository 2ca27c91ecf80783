/**
 * Packed log-prob batches: what the response log-prob programs (response-programs.ts) take.
 * Only response tokens enter a DPO/KTO loss or a KL budget, so the batch names them explicitly:
 * `responseIndex` are the flat positions (row · length + column) whose next token is a response
 * token, `responseTargets` those tokens, and `responseOwner` [S, N] says which sequence each
 * belongs to. The LM head and log-softmax then run at those N positions only, not at every
 * position of every row (prompts are most of the tokens: bench/workload.ts).
 *
 * Rows carry their own position ids and segment ids: attention is causal within a segment and
 * never crosses segments or reaches pads (segment −1), so a row need not start at position 0.
 * With `pack`, several sequences share a row instead of each being padded to the longest:
 * first-fit decreasing into rows as long as the longest sequence, so no row is longer (attention
 * costs T² per row) and the padding of a right-padded batch mostly disappears. With
 * `sharePrompts`, sequences with the same prompt (a DPO pair's chosen and rejected, KTO's own and
 * mismatched rows) are one segment: the prompt once, then each response, which attends to the
 * prompt and to itself (branch ids) — the prompt runs once per pair, forward and backward.
 */
import { AligndError } from '../base/errors.js';
import { fitSequence, type FittedSequence } from './batch.js';
import type { PromptResponseTokens } from './tokenizer.js';

export interface PackedBatch {
  rows: number;
  /** Tokens per row T. */
  length: number;
  /** [R, T] token ids, pads = padId. */
  inputIds: Int32Array;
  /** [R, T] each token's position in its own sequence (0 at pads). */
  positionIds: Int32Array;
  /** [R, T] segment of each token (tokens attend only within their segment); −1 at pads. */
  segmentIds: Int32Array;
  /**
   * [R, T] branch within the segment: 0 = the prompt, which every token of the segment sees;
   * k > 0 = the k-th response sharing that prompt, which only its own tokens see.
   */
  branchIds: Int32Array;
  /** Sequences S, in the order given. */
  sequences: number;
  /** [N] flat index row · T + column of each position whose next token is a response token. */
  responseIndex: Int32Array;
  /** [N] that next token. */
  responseTargets: Int32Array;
  /** [S, N] 1 where response token n belongs to sequence s. */
  responseOwner: Float32Array;
  /** Tokens of the sequences as given (after truncation): what a padded batch holds unpadded. */
  realTokens: number;
  /** Per sequence: prompt tokens dropped from the left / response tokens from the right to fit maxLength. */
  truncatedPrompt: number[];
  truncatedResponse: number[];
}

export interface PackOptions {
  /** Per-sequence limit (positions); longer sequences are cut as packLogProbBatch cuts them. */
  maxLength?: number;
  /** Several sequences per row (block-diagonal attention, positions restarting); else one per row. */
  pack?: boolean;
  /** Sequences whose (cut) prompts are the same tokens share one copy of the prompt. */
  sharePrompts?: boolean;
}

/**
 * A segment of a row: a prompt, then each member's response. With one member it is a plain
 * sequence; with several (a DPO pair's chosen and rejected), each response attends to the prompt
 * and to itself only (its branch), at the positions it would have after the prompt alone.
 */
interface Segment { prompt: number[]; members: { seq: number; response: number[] }[]; length: number }

/** The sequences as segments: one each, or one per distinct prompt with `share`. */
function segmentsOf(fits: FittedSequence[], share: boolean): Segment[] {
  const out: Segment[] = [];
  const byPrompt = new Map<string, Segment>();
  fits.forEach((f, seq) => {
    const prompt = f.ids.slice(0, f.promptLength);
    const response = f.ids.slice(f.promptLength);
    const key = prompt.join(',');
    const same = share ? byPrompt.get(key) : undefined;
    if (same !== undefined) {
      same.members.push({ seq, response });
      same.length += response.length;
      return;
    }
    const s: Segment = { prompt, members: [{ seq, response }], length: f.ids.length };
    out.push(s);
    if (share) byPrompt.set(key, s);
  });
  return out;
}

/**
 * Segments into rows of `capacity` tokens, first-fit decreasing (at most 11/9 of the fewest rows
 * + 6/9: Johnson 1973, Dósa 2007); ties keep the given order, so a batch packs the same way every time.
 */
function firstFitDecreasing(segments: Segment[], capacity: number): Segment[][] {
  const order = segments.map((s, i) => ({ s, i })).sort((a, b) => b.s.length - a.s.length || a.i - b.i);
  const rows: { room: number; segments: Segment[] }[] = [];
  for (const { s } of order) {
    const row = rows.find((r) => r.room >= s.length);
    if (row === undefined) rows.push({ room: capacity - s.length, segments: [s] });
    else { row.room -= s.length; row.segments.push(s); }
  }
  return rows.map((r) => r.segments);
}

/**
 * Pack sequences (one per row, or several with `pack`; prompts shared with `sharePrompts`); only
 * response positions are named for the head.
 */
export function packSequences(seqs: readonly PromptResponseTokens[], padId: number, opts: PackOptions = {}): PackedBatch {
  if (seqs.length === 0) throw new AligndError('INTERNAL', 'packSequences of no sequences');
  const maxLength = opts.maxLength ?? Infinity;
  const fits = seqs.map((s, i) => fitSequence(s, i, maxLength));
  const segments = segmentsOf(fits, opts.sharePrompts ?? false);
  const longest = Math.max(...segments.map((s) => s.length));
  const rowsOf: Segment[][] = opts.pack ? firstFitDecreasing(segments, longest) : segments.map((s) => [s]);
  const R = rowsOf.length;
  const T = Math.max(...rowsOf.map((r) => r.reduce((n, s) => n + s.length, 0)));
  const S = seqs.length;
  const N = fits.reduce((n, f) => n + f.ids.length - f.promptLength, 0);
  const inputIds = new Int32Array(R * T).fill(padId);
  const positionIds = new Int32Array(R * T);
  const segmentIds = new Int32Array(R * T).fill(-1);
  const branchIds = new Int32Array(R * T);
  const responseIndex = new Int32Array(N);
  const responseTargets = new Int32Array(N);
  const responseOwner = new Float32Array(S * N);
  let n = 0;
  let segmentId = 0;
  rowsOf.forEach((row, r) => {
    let at = r * T;
    for (const { prompt, members } of row) {
      const P = prompt.length;
      const place = (id: number, position: number, branch: number): void => {
        inputIds[at] = id;
        positionIds[at] = position;
        segmentIds[at] = segmentId;
        branchIds[at] = branch;
        at++;
      };
      prompt.forEach((id, t) => place(id, t, 0));
      const lastPrompt = at - 1;
      members.forEach(({ seq, response }, k) => {
        // Its first token is predicted at the (shared) last prompt token, each next one at the token before it.
        const first = at;
        response.forEach((id, t) => {
          responseIndex[n] = t === 0 ? lastPrompt : first + t - 1;
          responseTargets[n] = id;
          responseOwner[seq * N + n] = 1;
          n++;
          place(id, P + t, k + 1);
        });
      });
      segmentId++;
    }
  });
  return {
    rows: R, length: T, inputIds, positionIds, segmentIds, branchIds, sequences: S, responseIndex, responseTargets, responseOwner,
    realTokens: fits.reduce((k, f) => k + f.ids.length, 0),
    truncatedPrompt: fits.map((f) => f.cutPrompt), truncatedResponse: fits.map((f) => f.cutResponse),
  };
}

/** The largest position a batch feeds (checked against the model's max_position_embeddings). */
export function maxPosition(b: PackedBatch): number {
  let m = 0;
  for (const p of b.positionIds) m = Math.max(m, p);
  return m;
}
