/**
 * Knobs and schedules: learning-rate schedules (warmup, cosine, linear, constant) against their
 * formulas, the adaptive-β controller (Ziegler et al. 2019) including its ±0.2 error clip, knob
 * validation, and the mapping from a validated policy file onto the round's knobs.
 */
import t from 'tap';
import { policySchema } from '../../daemon/policy/schema.js';
import { adaptBeta, learningRate } from '../../daemon/align/schedule.js';
import { knobsFromPolicy, loraConfigFromPolicy, withDefaults } from '../../daemon/align/knobs.js';

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

t.test('knob validation names the field', async (t) => {
  t.throws(() => withDefaults({ batchSize: 8, microBatchSize: 3 }), /microBatchSize/);
  t.throws(() => withDefaults({ lossType: 'hinge', labelSmoothing: 0.1 }), /labelSmoothing/);
  t.throws(() => withDefaults({ beta: 0 }), /beta/);
  t.equal(withDefaults({}).lossType, 'sigmoid');
});

t.test('knobs from a policy file', async (t) => {
  const p = policySchema.parse({
    model: 'm', base_model: { path: '/models/x' },
    lora: { r: 16, alpha: 32, target_modules: ['q_proj', 'k_proj'] },
    objective: { loss_type: 'robust', beta: 0.2, label_smoothing: 0.1, learning_rate: 1e-4, batch_size: 8, micro_batch_size: 4, rpo_alpha: 0.5 },
    kl: { per_round: 0.03, cumulative: 0.3, adaptive_beta: { enabled: true, target: 0.01 } },
  });
  const k = withDefaults(knobsFromPolicy(p));
  t.match(k, { objective: 'dpo', lossType: 'robust', beta: 0.2, labelSmoothing: 0.1, learningRate: 1e-4, batchSize: 8, microBatchSize: 4, rpoAlpha: 0.5,
    klBudget: { perRound: 0.03, cumulative: 0.3 }, adaptiveBeta: { target: 0.01, kBeta: 0.1 } });
  t.same(loraConfigFromPolicy(p), { r: 16, loraAlpha: 32, targetModules: ['q_proj', 'k_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: '/models/x' });
  const kto = knobsFromPolicy(policySchema.parse({ model: 'm', base_model: { path: 'p' }, objective: { loss_type: 'kto' } }));
  t.equal(kto.objective, 'kto');
  t.equal(kto.adaptiveBeta, null);
});
