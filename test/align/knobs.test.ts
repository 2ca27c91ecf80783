/**
 * Knobs and schedules: learning-rate schedules (warmup, cosine, linear, constant) against their
 * formulas, the adaptive-β controller (Ziegler et al. 2019) including its ±0.2 error clip, knob
 * validation by the policy schema (naming YAML paths), and the mapping from a validated policy
 * file onto the round's knobs.
 */
import t from 'tap';
import { policySchema } from '../../daemon/policy/schema.js';
import { adaptBeta, learningRate } from '../../daemon/align/schedule.js';
import { loraConfigFromPolicy, trainingKnobs } from '../../daemon/align/knobs.js';
import { policyKnobs } from './policy-knobs.js';

t.test('learning-rate schedules', async (t) => {
  const total = 100, warm = 10, peak = 1e-3;
  t.ok(learningRate(0, total, peak, 'cosine', warm) > 0, 'the first step is not wasted at lr 0');
  t.ok(learningRate(4, total, peak, 'cosine', warm) < learningRate(5, total, peak, 'cosine', warm), 'warmup rises');
  t.equal(learningRate(10, total, peak, 'cosine', warm), peak);
  t.ok(Math.abs(learningRate(55, total, peak, 'cosine', warm) - peak * 0.5) < 1e-15, 'cosine half way');
  t.ok(Math.abs(learningRate(55, total, peak, 'linear', warm) - peak * 0.5) < 1e-15, 'linear half way');
  t.equal(learningRate(100, total, peak, 'linear', warm), 0);
  t.equal(learningRate(70, total, peak, 'constant', warm), peak);
});

t.test('adaptive β: e = clip(KL/target − 1, ±0.2), β ← β(1 + K_β e)', async (t) => {
  t.ok(Math.abs(adaptBeta(0.1, 0.03, 0.02, 0.1) - 0.1 * (1 + 0.1 * 0.2)) < 1e-15, 'over target (clipped at +0.2) raises β');
  t.ok(Math.abs(adaptBeta(0.1, 0.019, 0.02, 0.1) - 0.1 * (1 + 0.1 * (0.019 / 0.02 - 1))) < 1e-15, 'inside the clip');
  t.ok(Math.abs(adaptBeta(0.1, 0, 0.02, 0.1) - 0.1 * (1 - 0.02)) < 1e-15, 'under target (clipped at −0.2) lowers β');
});

t.test('knob validation is the schema\'s and names the YAML path', async (t) => {
  const paths = (objective: Record<string, unknown>): string[] => {
    const r = policySchema.safeParse({ model: 'm', base_model: { path: 'p' }, objective });
    return r.success ? [] : r.error.issues.map((i) => i.path.join('.'));
  };
  t.same(paths({ batch_size: 8, micro_batch_size: 3 }), ['objective.micro_batch_size']);
  t.same(paths({ loss_type: 'hinge', label_smoothing: 0.1 }), ['objective.label_smoothing']);
  t.same(paths({ beta: 0 }), ['objective.beta']);
  t.throws(() => policyKnobs({ objective: { batch_size: 8, micro_batch_size: 3 } }), /objective|micro_batch_size/);
  t.equal(policyKnobs().objective.kind, 'dpo');
  t.match(policyKnobs().objective, { lossType: 'sigmoid' });
});

t.test('knobs from a policy file', async (t) => {
  const p = policySchema.parse({
    model: 'm', base_model: { path: '/models/x' },
    lora: { r: 16, alpha: 32, target_modules: ['q_proj', 'k_proj'] },
    objective: { loss_type: 'robust', beta: 0.2, label_smoothing: 0.1, learning_rate: 1e-4, batch_size: 8, micro_batch_size: 4, rpo_alpha: 0.5,
      lr_scheduler_type: 'linear', warmup_ratio: 0, weight_decay: 0.01, max_length: 512, max_steps: 30, gradient_checkpointing: true },
    kl: { per_round: 0.03, cumulative: 0.3, check_steps: 2, check_contexts: 8, sampled: { prompts: 4 }, adaptive_beta: { enabled: true, target: 0.01 } },
  });
  const k = trainingKnobs(p);
  t.same(k, {
    objective: { kind: 'dpo', lossType: 'robust', labelSmoothing: 0.1, rpoAlpha: 0.5 },
    beta: 0.2, learningRate: 1e-4, lrSchedulerType: 'linear', warmupRatio: 0, maxSteps: 30, numTrainEpochs: 1, batchSize: 8, microBatchSize: 4,
    maxGradNorm: 1, weightDecay: 0.01, maxLength: 512, gradientCheckpointing: true, klBudget: { perRound: 0.03, cumulative: 0.3 }, klEveryNSteps: 2, klContexts: 8,
    adaptiveBeta: { target: 0.01, kBeta: 0.1, minBeta: 0.01, maxBeta: 1 }, sampledKl: { prompts: 4, maxNewTokens: 32, temperature: 1 },
  });
  t.same(loraConfigFromPolicy(p), { r: 16, loraAlpha: 32, targetModules: ['q_proj', 'k_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: '/models/x' });
  const kto = trainingKnobs(policySchema.parse({ model: 'm', base_model: { path: 'p' }, objective: { loss_type: 'kto' } }));
  t.same(kto.objective, { kind: 'kto', desirableWeight: 1, undesirableWeight: 1 });
  t.equal(kto.adaptiveBeta, null);
  t.equal(kto.maxSteps, null, 'no max_steps: the epochs decide');
  t.equal(kto.gradientCheckpointing, false, 'recomputation off unless the policy asks');
});
