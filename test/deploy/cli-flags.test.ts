/**
 * The deployment files start alignd with flags; the CLI must still know every one of them.
 * Read from `alignd start --help` (the usage text the CLI prints), so a renamed or dropped flag
 * fails here instead of in a user's crash-looping container.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { mainJs, repoRoot } from '../harness/daemon.js';
import { containerSpec, readDockerfile } from './dockerfile.js';
import { readYamlDocs } from './schemas.js';

const help = spawnSync(process.execPath, [mainJs, 'start', '--help'], { encoding: 'utf8' });
const known = new Set([...`${help.stdout}`.matchAll(/--[a-z][a-z-]*/g)].map((m) => m[0]));

const compose = readYamlDocs(join(repoRoot, 'deploy/docker-compose.yml'))[0] as { services: Record<string, { command?: string[] }> };
const deployment = readYamlDocs(join(repoRoot, 'deploy/k8s/deployment.yaml'))[0] as {
  spec: { template: { spec: { containers: Array<{ name: string; args?: string[] }> } } };
};

const starts: Array<[string, string[]]> = [
  ['Dockerfile CMD', containerSpec(readDockerfile()).argv.slice(2)],
  ['docker-compose alignd', compose.services['alignd']?.command ?? []],
  ['k8s alignd container', deployment.spec.template.spec.containers.find((c) => c.name === 'alignd')?.args ?? []],
];

t.test('alignd start --help answers', async (t) => {
  t.equal(help.status, 0);
  t.ok(known.has('--config') && known.has('--data-dir'), 'the usage lists the start flags', { stdout: help.stdout });
});

for (const [where, argv] of starts) {
  t.test(`${where}: start with flags the CLI knows`, async (t) => {
    t.equal(argv[0], 'start');
    for (const flag of argv.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0] ?? a)) {
      t.ok(known.has(flag), `${flag} is an alignd start flag`);
    }
  });
}
