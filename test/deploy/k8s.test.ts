/**
 * deploy/k8s/: every manifest parses and validates against the vendored Kubernetes 1.35 strict
 * schemas (ServiceMonitor: prometheus-operator's CRD schema), the kustomization lists exactly the
 * manifests there, the pieces refer to each other correctly (selectors, named ports, volumes,
 * Secrets), vLLM and the policy agree on LoRA rank and paths, and the embedded daemon config and
 * policy are accepted by alignd itself (its config schema, and `alignd policy check`).
 */
import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from '../harness/daemon.js';
import { parseDaemonConfig } from '../../daemon/config/process-config.js';
import { SECRET_ENV_NAME, flagValue, maxLoraRankFor, policyCheck, readYamlDocs, validateK8s } from './schemas.js';

const dir = join(repoRoot, 'deploy/k8s');
const tmp = mkdtempSync(join(tmpdir(), 'alignd-k8s-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

/* eslint-disable @typescript-eslint/no-explicit-any -- manifests are checked by schema first, then read loosely */
type Obj = Record<string, any>;
const manifests = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml').sort();
const objects: Array<{ file: string; obj: Obj }> = manifests.flatMap((file) => readYamlDocs(join(dir, file)).map((obj) => ({ file, obj: obj as Obj })));
const find = (kind: string, name: string): Obj => {
  const o = objects.find((x) => x.obj['kind'] === kind && x.obj['metadata']?.['name'] === name)?.obj;
  if (o === undefined) throw new Error(`no ${kind} ${name}`);
  return o;
};
const deployment = find('Deployment', 'alignd');
const pod = deployment['spec']['template'];
const container = (name: string): Obj => pod['spec']['containers'].find((c: Obj) => c['name'] === name);
const vllm = container('vllm');
const alignd = container('alignd');
const labelsMatch = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

t.test('every manifest validates against its schema', async (t) => {
  t.ok(objects.length >= 7, `${objects.length} objects`);
  for (const { file, obj } of objects) {
    const v = validateK8s(obj);
    t.ok(v.ok, `${file}: ${obj['kind']} ${obj['metadata']?.['name']}`, { errors: v.errors });
  }
  // The schemas are strict: a misspelled field or a wrong type is caught, so the check can fail.
  const typo = structuredClone(deployment);
  typo['spec']['template']['spec']['containers'][0]['livenessprobe'] = { httpGet: { path: '/health', port: 8000 } };
  t.notOk(validateK8s(typo).ok, 'a misspelled container field is refused');
  const wrongType = structuredClone(find('Service', 'alignd'));
  wrongType['spec']['ports'][0]['port'] = 'eight-thousand';
  t.notOk(validateK8s(wrongType).ok, 'a string port is refused');
  const sm = structuredClone(find('ServiceMonitor', 'alignd'));
  sm['spec']['endpoints'][0]['scheme'] = 'gopher';
  t.notOk(validateK8s(sm).ok, 'the ServiceMonitor schema knows its enums');
  sm['spec']['endpoints'][0]['scheme'] = 'http';
  sm['spec']['endpoints'][0]['intervall'] = '30s';
  t.notOk(validateK8s(sm).ok, 'and refuses unknown fields');
  t.notOk(validateK8s({ apiVersion: 'v1', kind: 'Pod' }).ok, 'a kind with no vendored schema is not waved through');
});

t.test('kustomization.yaml lists exactly the manifests in deploy/k8s', async (t) => {
  const k = readYamlDocs(join(dir, 'kustomization.yaml'))[0] as Obj;
  // Kustomize publishes no JSON schema of its own; these are the fields kubectl -k reads here.
  t.equal(k['apiVersion'], 'kustomize.config.k8s.io/v1beta1');
  t.equal(k['kind'], 'Kustomization');
  const known = new Set(['apiVersion', 'kind', 'namespace', 'labels', 'resources', 'images']);
  t.same(Object.keys(k).filter((x) => !known.has(x)), [], 'no field kubectl -k would reject or ignore');
  t.same([...(k['resources'] as string[])].sort(), manifests, 'resources = the manifests');
  t.ok((k['images'] as Obj[]).some((i) => i['name'] === alignd['image'].split(':')[0]), 'the alignd image can be retargeted');
});

t.test('vLLM: runtime LoRA, GPU, probes', async (t) => {
  const argv = [...vllm['command'], ...vllm['args']] as string[];
  t.ok(argv.includes('--enable-lora'));
  t.same(vllm['env'].find((e: Obj) => e['name'] === 'VLLM_ALLOW_RUNTIME_LORA_UPDATING'), { name: 'VLLM_ALLOW_RUNTIME_LORA_UPDATING', value: 'True' });
  t.equal(vllm['resources']['limits']['nvidia.com/gpu'], '1', 'one GPU');
  t.ok(vllm['resources']['requests']['memory'] && vllm['resources']['requests']['cpu'], 'CPU and memory requests');
  t.equal(vllm['startupProbe']?.['httpGet']?.['path'], '/health', 'a startup probe covers the model load');
  t.equal(vllm['livenessProbe']?.['httpGet']?.['path'], '/health');
  t.match(vllm['image'], /^vllm\/vllm-openai:v\d+\.\d+\.\d+$/, 'pinned');
});

t.test('alignd sidecar: probes, resources, Secrets by reference, non-root', async (t) => {
  t.equal(alignd['livenessProbe']['httpGet']['path'], '/healthz');
  t.equal(alignd['readinessProbe']['httpGet']['path'], '/readyz');
  t.ok(alignd['resources']['requests']['cpu'] && alignd['resources']['requests']['memory'] && alignd['resources']['limits']['memory']);
  const token = alignd['env'].find((e: Obj) => e['name'] === 'ALIGND_ADMIN_TOKEN');
  t.same(token?.['valueFrom']?.['secretKeyRef'], { name: 'alignd-admin', key: 'token' }, 'the admin token comes from the alignd-admin Secret');
  for (const c of pod['spec']['containers'] as Obj[]) {
    for (const e of (c['env'] ?? []) as Obj[]) {
      if (SECRET_ENV_NAME.test(e['name'])) t.notOk('value' in e, `${c['name']}.${e['name']} is a reference, never a value`);
    }
  }
  t.notOk(objects.some(({ obj }) => obj['kind'] === 'Secret'), 'no Secret is committed (kubectl create secret: deploy/README.md)');
  t.equal(pod['spec']['securityContext']['runAsNonRoot'], true);
  t.equal(pod['spec']['securityContext']['runAsUser'], 1000, 'the image\'s user');
  t.equal(alignd['securityContext']['readOnlyRootFilesystem'], true);
});

t.test('the policy ConfigMap: mounted whole, rank and paths agree with vLLM, accepted by alignd policy check', async (t) => {
  const cm = find('ConfigMap', 'alignd-policies');
  const vol = pod['spec']['volumes'].find((v: Obj) => v['configMap']?.['name'] === 'alignd-policies');
  const mount = alignd['volumeMounts'].find((m: Obj) => m['name'] === vol?.['name']);
  t.equal(mount?.['mountPath'], '/policies');
  t.notOk('subPath' in (mount ?? {}), 'no subPath: a subPath mount never sees ConfigMap updates (rollback by edit)');
  const policyArg = flagValue(alignd['args'], '--policy') ?? '';
  const key = policyArg.replace(/^\/policies\//, '');
  t.ok(key in cm['data'], `--policy ${policyArg} is a key of the ConfigMap`);

  const policy = parseYaml(cm['data'][key]) as Obj;
  const argv = [...vllm['command'], ...vllm['args']] as string[];
  t.equal(Number(flagValue(argv, '--max-lora-rank')), maxLoraRankFor(policy['lora']['r']), `--max-lora-rank fits lora.r ${policy['lora']['r']}`);
  t.equal(flagValue(argv, '--served-model-name'), policy['base_model']['served_name']);
  t.ok(argv.includes(policy['base_model']['path']), 'vLLM serves the checkpoint alignd trains on');
  const target = (policy['servers'] as Obj[]).find((s) => s['kind'] === 'vllm');
  const port = vllm['ports'][0]['containerPort'];
  t.same(target?.['urls'], [`http://127.0.0.1:${port}`], 'the vLLM of the same pod');
  // The shared volume: alignd's registry directory is what vLLM mounts at path_map.to.
  const map = target?.['path_map'] as { from: string; to: string };
  const dataMount = alignd['volumeMounts'].find((m: Obj) => map.from.startsWith(m['mountPath'] + '/'));
  const vllmMount = vllm['volumeMounts'].find((m: Obj) => m['mountPath'] === map.to);
  t.equal(vllmMount?.['name'], dataMount?.['name'], `one volume (${dataMount?.['name']}) behind ${map.from} and ${map.to}`);
  t.equal(vllmMount?.['subPath'], map.from.slice(dataMount?.['mountPath'].length + 1), 'vLLM sees exactly the registry directory');
  t.equal(vllmMount?.['readOnly'], true, 'vLLM only reads adapters');
  const init = (pod['spec']['initContainers'] as Obj[] | undefined)?.find((c) => c['volumeMounts']?.some((m: Obj) => m['name'] === dataMount?.['name']));
  t.ok(init !== undefined && init['command'].join(' ').includes(map.from), `an init container makes ${map.from} before vLLM mounts it as a subPath`);
  t.equal(init?.['image'], alignd['image'], 'with the alignd image (uid 1000)');

  // The whole ConfigMap is the /policies directory: the policy's probe files are its other keys.
  for (const [name, text] of Object.entries(cm['data'] as Record<string, string>)) writeFileSync(join(tmp, name), text);
  for (const probes of ['benign.jsonl', 'red-team.jsonl']) {
    t.equal(cm['data'][probes], readFileSync(join(repoRoot, 'deploy/policies', probes), 'utf8'), `${probes}: the same probes as deploy/policies (one model)`);
  }
  const file = join(tmp, key);
  const r = policyCheck(file, join(tmp, 'data'));
  t.equal(r.code, 0, 'alignd policy check accepts the embedded policy', { out: r.out });
  t.match(r.out, /: ok — model assistant\b/);
  t.notMatch(r.out, /warning:/, 'without warnings');
  // The same check refuses a broken edit, so this is not a check that cannot fail.
  const broken = join(tmp, 'broken.yaml');
  writeFileSync(broken, cm['data'][key].replace(/\br: 16\b/, 'r: 1024'));
  const bad = policyCheck(broken, join(tmp, 'data'));
  t.equal(bad.code, 1, 'a LoRA rank out of range is refused', { out: bad.out });
  t.match(bad.out, /lora\.r/);
});

t.test('the daemon config ConfigMap is valid for alignd, secrets by ${ENV}', async (t) => {
  const cm = find('ConfigMap', 'alignd-config');
  const raw = parseYaml(cm['data']['alignd.yaml']);
  const vol = pod['spec']['volumes'].find((v: Obj) => v['configMap']?.['name'] === 'alignd-config');
  const mount = alignd['volumeMounts'].find((m: Obj) => m['name'] === vol?.['name']);
  t.equal(flagValue(alignd['args'], '--config'), `${mount?.['mountPath']}/alignd.yaml`, '--config points into the mounted ConfigMap');
  const saved = process.env['KAFKA_PASSWORD'];
  t.teardown(() => { if (saved === undefined) delete process.env['KAFKA_PASSWORD']; else process.env['KAFKA_PASSWORD'] = saved; });
  delete process.env['KAFKA_PASSWORD'];
  t.throws(() => parseDaemonConfig(raw, 'alignd-config'), /KAFKA_PASSWORD/, 'the password is not in the file: it must come from the environment');
  t.ok(alignd['env'].some((e: Obj) => e['name'] === 'KAFKA_PASSWORD' && e['valueFrom']?.['secretKeyRef']), 'and the pod takes it from a Secret');
  process.env['KAFKA_PASSWORD'] = 'from-the-secret';
  const cfg = parseDaemonConfig(raw, 'alignd-config');
  t.equal(cfg.sources.kafka?.sasl?.['password'], 'from-the-secret');
  t.same(cfg.sources.kafka?.topics, ['alignd.feedback']);
  t.equal(cfg.http.port, alignd['ports'][0]['containerPort'], 'alignd listens on the port the probes use');
  t.equal(cfg.dataDir, '/data');
});

t.test('Service, PodDisruptionBudget and ServiceMonitor select the pod and its named ports', async (t) => {
  const podLabels = pod['metadata']['labels'] as Record<string, string>;
  t.ok(labelsMatch(deployment['spec']['selector']['matchLabels'], podLabels), 'Deployment selector');
  const svc = find('Service', 'alignd');
  t.ok(labelsMatch(svc['spec']['selector'], podLabels), 'Service selector');
  const containerPorts = new Set((pod['spec']['containers'] as Obj[]).flatMap((c) => (c['ports'] as Obj[]).map((p) => p['name'])));
  for (const p of svc['spec']['ports'] as Obj[]) t.ok(containerPorts.has(p['targetPort']), `Service port ${p['name']} → container port ${p['targetPort']}`);
  const pdb = find('PodDisruptionBudget', 'alignd');
  t.ok(labelsMatch(pdb['spec']['selector']['matchLabels'], podLabels), 'PDB selector');
  const sm = find('ServiceMonitor', 'alignd');
  t.ok(labelsMatch(sm['spec']['selector']['matchLabels'], svc['metadata']['labels']), 'ServiceMonitor selects the Service');
  const svcPorts = new Set((svc['spec']['ports'] as Obj[]).map((p) => p['name']));
  const alignEp = (sm['spec']['endpoints'] as Obj[]).find((e) => e['port'] === 'http-alignd');
  t.equal(alignEp?.['path'], '/metrics', 'alignd\'s Prometheus endpoint');
  for (const e of sm['spec']['endpoints'] as Obj[]) t.ok(svcPorts.has(e['port']), `endpoint port ${e['port']} is a Service port`);
  for (const c of pod['spec']['containers'] as Obj[]) {
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
      const port = c[probe]?.['httpGet']?.['port'];
      if (port !== undefined) t.ok((c['ports'] as Obj[]).some((p) => p['name'] === port), `${c['name']} ${probe} uses its own named port`);
    }
  }
});
