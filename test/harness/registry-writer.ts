/**
 * A child process for the registry crash tests: writes real PEFT adapters (tiny model) as
 * registry versions in a loop, records gate decisions, moves the deployed pointer, appends audit
 * records and collects garbage, printing `committed vN` after each version is durable and `gc done` after each collection. The test
 * kills it with SIGKILL at random moments.
 *
 *   node dist/test/harness/registry-writer.js ROOT MODEL SEED [SERVED_DIR]
 *
 * With SERVED_DIR each version is promoted (daemon/registry/promote.ts) to a file-drop target
 * there instead of only moving the pointer: promotion under SIGKILL.
 */
import { parseModelConfig } from '../../daemon/model/hf-config.js';
import { initLora } from '../../daemon/model/lora.js';
import { writePeftAdapter } from '../../daemon/model/peft.js';
import { TINY_CONFIG } from '../../daemon/model/tiny.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { promote } from '../../daemon/registry/promote.js';
import { fileDropTarget } from '../../adapters/servers/file-drop.js';

const [root, model, seedArg, served] = process.argv.slice(2) as [string, string, string, string | undefined];
const spec = parseModelConfig(TINY_CONFIG, 'tiny');
const reg = openRegistry(root, model);
let seed = Number(seedArg) * 1000;
// What the daemon does at start (loop/model-runtime.ts recover()): staging leftovers, unaudited
// versions, then garbage a killed predecessor left before its gc.
await reg.cleanStaging();
await reg.gc(5);
process.stdout.write('ready\n');
for (;;) {
  const parent = reg.latest()?.version ?? null;
  const adapter = initLora(spec, { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny' }, seed++);
  const v = await reg.addVersion({ write: (dir) => writePeftAdapter(dir, spec, adapter) }, {
    parent, base_model: { path: 'builtin:tiny', sha256: null }, data_window: { events: seed, kafka_offsets: { 'alignd.feedback:0': seed } },
    round_metrics: { loss: 0.5 },
  });
  process.stdout.write(`committed ${v.version}\n`);
  await reg.recordGate(v.version, { decision: seed % 2 === 0 ? 'promote' : 'reject', reasons: ['crash test'], figures: { seed }, decided_at: new Date().toISOString() });
  await reg.audit('gate.decision', { version: v.version });
  if (served === undefined) reg.setDeployment({ desired: v.version, desired_name: `${model}-${v.version}`, reason: 'crash test', since: new Date().toISOString(), complete: true, targets: {} });
  else await promote(reg, v.version, { targets: [fileDropTarget({ dir: served })], reason: 'crash test', retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 } });
  await reg.gc(5);
  process.stdout.write('gc done\n');
}
