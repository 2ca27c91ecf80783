/**
 * Names that would collide on servers: file-drop puts `<dir>/<model>-vN/` beside the link
 * `<dir>/<model>`, and vLLM serves `<model>-vN`, so a model named like another's version (`a-v1`)
 * must be refused wherever a model is named: the policy, the registry, the admin API.
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRegistry } from '../../daemon/registry/registry.js';
import { promote } from '../../daemon/registry/promote.js';
import { parsePolicyText } from '../../daemon/policy/load.js';
import { fileDropTarget } from '../../adapters/servers/file-drop.js';
import { silentLogger } from '../../daemon/base/log.js';

t.test('a model named like another model\'s version is refused everywhere a model is named', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'alignd-names-'));
  for (const bad of ['a-v1', 'tiny-v12', 'x.y-v3']) {
    t.throws(() => openRegistry(root, bad), { code: 'CONFIG_INVALID', message: /not allowed/ }, `registry: ${bad}`);
    const r = parsePolicyText(`model: ${bad}\nbase_model: { path: builtin:tiny }\n`, 'p.yaml');
    t.equal(r.ok, false, `policy: ${bad}`);
    t.match(r.ok ? [] : r.problems, [{ path: 'model', reason: /-v<N>/ }]);
  }
  for (const ok of ['a', 'a-v', 'a-vx', 'llama-3.1-8b', 'v1', 'a-v1x']) t.doesNotThrow(() => openRegistry(root, ok), ok);
});

t.test('file-drop: two models whose names once collided keep apart', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'alignd-names-'));
  const served = join(root, 'served');
  const add = async (model: string) => {
    const reg = openRegistry(join(root, 'registry'), model);
    const dir = join(root, `src-${model}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ model }));
    await reg.addVersion({ adapterDir: dir }, { parent: null, base_model: { path: 'builtin:tiny', sha256: null } });
    await promote(reg, 'v1', { targets: [fileDropTarget({ dir: served })], reason: 'test', log: silentLogger });
    return reg;
  };
  await add('a');
  await add('a-v');
  t.same(readdirSync(served).filter((e) => !e.startsWith('.')).sort(), ['a', 'a-v', 'a-v-v1', 'a-v1']);
  t.equal(readlinkSync(join(served, 'a')), 'a-v1');
  t.equal(readlinkSync(join(served, 'a-v')), 'a-v-v1');
});
