/**
 * Compiled by `npm run typecheck`, never run (tap runs *.test.ts): a program's declared inputs type
 * its feeds, so a misspelt or missing feed does not compile. Each `@ts-expect-error` must meet an
 * error on the next line, or the typecheck fails with "Unused '@ts-expect-error' directive".
 */
import { type Feeds, type OrtTensor, type Program, type TrainState, f32, i64, runProgram, trainStep } from '../../daemon/engine/index.js';
import type { PackedInputDecl } from '../../daemon/model/response-programs.js';
import type { TrainProgram } from '../../daemon/align/context.js';
import type { DpoProgramInputs, KtoProgramInputs } from '../../daemon/align/train-programs.js';

declare const batch: Feeds<PackedInputDecl>;
declare const state: TrainState;
declare const dpo: TrainProgram<DpoProgramInputs>;
declare const kl: Program<PackedInputDecl>;
const ix: OrtTensor = i64([1], [0]);
const v: OrtTensor = f32([1], [0]);

export const good: Feeds<DpoProgramInputs> = { ...batch, chosen_index: ix, rejected_index: ix, ref_chosen: v, ref_rejected: v, beta: v };
void trainStep(dpo.session, dpo.info, state, good, 1e-3);
void runProgram(kl, batch);

// @ts-expect-error chosen_indx: misspelt, so not a DPO input, and chosen_index is missing
export const misspelt: Feeds<DpoProgramInputs> = { ...batch, chosen_indx: ix, rejected_index: ix, ref_chosen: v, ref_rejected: v, beta: v };

// @ts-expect-error beta is missing
export const missing: Feeds<DpoProgramInputs> = { ...batch, chosen_index: ix, rejected_index: ix, ref_chosen: v, ref_rejected: v };

// @ts-expect-error a DPO micro-batch is not a KTO one
export const otherProgram: Feeds<KtoProgramInputs> = good;

// @ts-expect-error the train-step runner takes only the program's declared feeds: here the packed batch alone
void trainStep(dpo.session, dpo.info, state, batch, 1e-3);

// @ts-expect-error the inference runner too: response_owner is missing
void runProgram(kl, { input_ids: ix, position_ids: ix, segment_ids: ix, branch_ids: ix, response_index: ix, response_targets: ix });
