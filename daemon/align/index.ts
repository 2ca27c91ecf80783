/** The alignment stage's public surface (see README.md beside this file). */
export { type AlignModel, type TrainProgram, alignModel } from './context.js';
export { type DpoProgramInputs, type KtoProgramInputs, dpoInputs, dpoProgram, klInputs, klProgram, ktoInputs, ktoProgram } from './train-programs.js';
export { type DpoKnobs, type KtoKnobs, type TrainingKnobs, loraConfigFromPolicy, trainingKnobs } from './knobs.js';
export { type RoundInput, type TrainingResult, type StepLog, type StopReason, runRound } from './train-round.js';
export { type KlCheck, type KlGuard, type KlStop, klGuard } from './kl-guard.js';
export { type MicroBatch, type MicroBatchTrainer, microBatchTrainer } from './micro-batch-trainer.js';
export { type KtoRow, type PairRow, type TrainingObjective, dpoTraining, ktoTraining, optimizerOf, tokenizePairs } from './objectives.js';
export { ROUND_META, writeCandidate } from './candidate-dir.js';
export { heldoutKl } from './kl.js';
export { type SampleOptions, pairLogRatios, sampleResponses, sampledSequenceKl, sequenceLogps } from './policy-logps.js';
export { type DpoLossType, type Objective, dpoLosses, dpoMetrics, dpoObjective, ktoObjective, logSigmoid, nllTerm } from './losses.js';
export { adaptBeta, learningRate } from './schedule.js';
export { type HeadEnsemble, expectedCalibrationError, loadHeads, saveHeads } from './heads.js';
export { DEFAULT_REWARD_KNOBS, type RewardKnobs, type RewardRoundMetrics, onlinePairs, rewardScorer, scoreResponses, trainRewardEnsemble } from './reward.js';
export { DEFAULT_REWARD_MODEL_KNOBS, type RewardModel, type RewardModelKnobs, type RewardModelMetrics, loadRewardModel, rewardModelScorer, saveRewardModel, trainRewardModel } from './reward-model.js';
export { DEFAULT_SAFETY_KNOBS, type LabelledResponse, type SafetyKnobs, judgeResponses, safetyJudge, safetyRows, trainSafetyJudge } from './safety.js';
export type { RewardScore, RewardScorer, SafetyJudge, SafetyVerdict } from '../gate/evidence.js';
