/**
 * deploy/docker-compose.ray.yml (the Ray override of docker-compose.yml): valid under the Compose
 * Specification, the Ray image pinned to the release the cluster suite runs
 * (tools/cluster/requirements-lock.txt), the head's dashboard where the policy's trainer.address
 * points, the policy's trainer.storage mounted from one volume in alignd and in the head, the base
 * model visible to the head where trainer.base_model says, and the policy accepted by
 * `alignd policy check`.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from '../harness/daemon.js';
import { flagValue, policyCheck, readYamlDocs, validateCompose, volumeMounts } from './schemas.js';

interface Service { image?: string; command?: string[]; volumes?: string[]; depends_on?: Record<string, { condition: string }> }
const override = readYamlDocs(join(repoRoot, 'deploy/docker-compose.ray.yml'))[0] as { services: Record<string, Service>; volumes: Record<string, unknown> };
const base = readYamlDocs(join(repoRoot, 'deploy/docker-compose.yml'))[0] as { services: Record<string, Service> };
const head = override.services['ray-head']!;
const alignd = override.services['alignd']!;
const policyFile = join(repoRoot, 'deploy/policies', (alignd.command ?? []).at(-1)!.replace(/^\/policies\//, ''));
const policy = parseYaml(readFileSync(policyFile, 'utf8')) as { base_model: { path: string }; trainer: { kind: string; address: string; storage: { path: string; cluster_path?: string }; base_model?: string } };
/** target → source of a service's short-syntax volumes. */
const mounts = (s: Service): Map<string, string> => new Map(volumeMounts(s.volumes).map(([src, dst]) => [dst, src]));

t.test('valid under the Compose Specification; a typo is caught', async (t) => {
  const v = validateCompose(override);
  t.ok(v.ok, 'valid', { errors: v.errors });
  const typo = structuredClone(override) as unknown as { services: Record<string, Record<string, unknown>> };
  typo.services['ray-head']!['shm-size'] = '8gb';
  t.notOk(validateCompose(typo).ok, 'an unknown service field is refused');
});

t.test('the Ray image is the release the cluster suite runs; its dashboard is the policy\'s trainer.address', async (t) => {
  const lock = readFileSync(join(repoRoot, 'tools/cluster/requirements-lock.txt'), 'utf8');
  const ray = /^ray==(\S+)$/m.exec(lock)?.[1];
  t.match(head.image, new RegExp(`^rayproject/ray:${ray!.replace(/\./g, '\\.')}-py311-`), `rayproject/ray ${ray}`);
  t.equal(policy.trainer.kind, 'ray');
  const url = new URL(policy.trainer.address);
  t.equal(url.hostname, 'ray-head', 'the address names the service');
  t.equal(flagValue(head.command ?? [], '--dashboard-port'), url.port);
  t.equal(flagValue(head.command ?? [], '--dashboard-host'), '0.0.0.0', 'reachable from alignd\'s container');
  t.match(alignd.depends_on, { 'ray-head': { condition: 'service_healthy' } });
});

t.test('one volume carries the hand-off both ways; the head sees the base model', async (t) => {
  const storage = policy.trainer.storage;
  const inAlignd = mounts(alignd).get(storage.path);
  const inHead = mounts(head).get(storage.cluster_path ?? storage.path);
  t.ok(inAlignd !== undefined && inAlignd === inHead, `trainer.storage is the volume ${inAlignd} in both`);
  t.ok(inAlignd! in override.volumes, 'a named volume of the override');
  const model = policy.trainer.base_model ?? policy.base_model.path;
  const modelsInHead = [...mounts(head)].find(([dst]) => model.startsWith(`${dst}/`));
  const modelsInVllm = mounts(base.services['vllm']!).get(modelsInHead?.[0] ?? '');
  t.ok(modelsInHead !== undefined && modelsInHead[1] === modelsInVllm, `the head mounts ${model} from the same source as vLLM (${modelsInVllm})`);
});

t.test('the policy passes alignd policy check', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-compose-ray-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = policyCheck(policyFile, dir);
  t.equal(r.code, 0, r.out);
});
