/**
 * The scorer and judge shapes the gate consumes (daemon/gate/evidence.ts defines RewardScorer and
 * SafetyJudge). They are restated here, structurally identical, because align is upstream of the
 * gate and imports only upstream stages; TypeScript's structural typing makes these values the
 * gate's types (test/align/reward.test.ts checks the assignment compiles).
 */
export interface RewardScore { mean: number; std: number; members: number[] }
export interface RewardScorer { score(prompts: readonly string[], responses: readonly string[]): Promise<RewardScore[]> }
export interface SafetyVerdict { pUnsafe: number; uncertain: boolean; spread?: number; category?: string }
export interface SafetyJudge { judge(prompts: readonly string[], responses: readonly string[]): Promise<SafetyVerdict[]> }
