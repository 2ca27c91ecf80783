/**
 * The execution provider the engine and model tests run on: `ALIGND_TEST_EP=cpu` (default) or
 * `webgpu` (`npm run test:webgpu`). WebGPU runs here on lavapipe, Mesa's software Vulkan device.
 *
 * Debian 12's own mesa-vulkan-drivers (22.3) cannot serve: its lavapipe lacks
 * shaderSampledImageArrayDynamicIndexing and shaderStorageImageArrayDynamicIndexing, and Dawn
 * rejects any Vulkan device without them ("No supported adapters"; bench/README.md, "WebGPU on a
 * software Vulkan device"). Mesa 25 from `<codename>-backports` has them. The harness does not
 * install it system-wide: apt downloads the package with a private source list and state into
 * `.cache/lavapipe/`, dpkg-deb unpacks it there, and VK_DRIVER_FILES points the Vulkan loader at
 * its ICD file. What the driver links against (and the loader, libvulkan1) is installed with
 * apt-get from the machine's own suites when missing. `ALIGND_VULKAN_ICD` names another ICD file.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { createSession, type ModelSource, type Provider, type RuntimeOptions } from '../../daemon/engine/sessions.js';
import { repoRoot, withLock } from './kafka.js';

function testEp(): Provider {
  const v = process.env['ALIGND_TEST_EP'] ?? 'cpu';
  if (v !== 'cpu' && v !== 'webgpu') throw new Error(`ALIGND_TEST_EP=${v}: the tests run on cpu or webgpu`);
  return v;
}

export const TEST_EP: Provider = testEp();

/**
 * The dtype float64 checks run in. WGSL has no f64 and onnxruntime's WebGPU provider registers no
 * double kernels: a float64 graph would run entirely on the CPU provider, so they run in float32.
 */
export const CHECK_DTYPE: 'float64' | 'float32' = TEST_EP === 'webgpu' ? 'float32' : 'float64';

/**
 * Float-valued ops that run on the CPU provider in a WebGPU session of onnxruntime-node 1.30
 * (measured with cpuFallbacks on every program the WebGPU tests build): FusedMatMul (com.microsoft),
 * LogSoftmax, Sum and Sign have no WebGPU kernel; Cast from int64 (the provider leaves int64 off by
 * default) and ConstantOfShape (its input is a shape, which onnxruntime keeps on the CPU) go there too.
 */
export const KNOWN_CPU_FALLBACKS: Record<Provider, readonly string[]> = {
  cpu: [], cuda: [], webgpu: ['Cast', 'ConstantOfShape', 'FusedMatMul', 'LogSoftmax', 'Sign', 'Sum'],
};

/** Session (or loadModel) options for a test: the given ones on the provider under test. */
export async function testRuntime<T extends object = RuntimeOptions>(o: T = {} as T): Promise<T & { provider: Provider }> {
  if (TEST_EP === 'webgpu') await ensureVulkan();
  return { ...o, provider: TEST_EP };
}

let ready: Promise<string> | undefined;

/** A Vulkan loader, and VK_DRIVER_FILES set to a lavapipe ICD whose device Dawn accepts; returns the ICD's path. */
export function ensureVulkan(): Promise<string> {
  ready ??= (async () => {
    const given = process.env['ALIGND_VULKAN_ICD'];
    const icd = given ?? await lavapipe();
    const depends = given === undefined ? readFileSync(join(lavapipeDir(), 'depends'), 'utf8').split('\n').filter(Boolean) : [];
    const missing = ['libvulkan1', ...depends].filter((p) => !installed(p));
    if (missing.length > 0) aptGet(['install', '-y', '-qq', '--no-install-recommends', ...missing]);
    // Read by the Vulkan loader when Dawn creates its instance (the first WebGPU session), so setting
    // it in this process is enough. VK_ICD_FILENAMES is the name loaders before 1.3.207 read.
    process.env['VK_DRIVER_FILES'] = icd;
    process.env['VK_ICD_FILENAMES'] = icd;
    return icd;
  })();
  return ready;
}

// apt's progress goes to stderr: on stdout tap would read it as this test file's TAP stream.
const toStderr = ['ignore', process.stderr, process.stderr] as const;

function aptGet(args: string[], cwd?: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`the WebGPU tests need apt-get ${args.join(' ')} and this is not root: run it as root, or set ALIGND_VULKAN_ICD to the ICD file of a Vulkan driver Dawn accepts (Mesa ≥ 25's lavapipe)`);
  }
  execFileSync('apt-get', args, { cwd, stdio: [...toStderr], timeout: 600_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

function installed(pkg: string): boolean {
  try {
    return execFileSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).endsWith('installed');
  } catch {
    return false;
  }
}

function codename(): string {
  const m = /^VERSION_CODENAME=(\w+)$/m.exec(readFileSync('/etc/os-release', 'utf8'));
  if (m === null) throw new Error('/etc/os-release names no VERSION_CODENAME: lavapipe is fetched from Debian; set ALIGND_VULKAN_ICD instead');
  return m[1]!;
}

const lavapipeDir = (): string => join(repoRoot(), '.cache', 'lavapipe');

/** Mesa's lavapipe from `<codename>-backports`, unpacked under .cache/lavapipe/ once. */
async function lavapipe(): Promise<string> {
  const base = lavapipeDir();
  const icd = join(base, 'lvp_icd.json');
  if (existsSync(icd)) return icd;
  mkdirSync(base, { recursive: true });
  return withLock(`${base}.lock`, async () => {
    if (existsSync(icd)) return icd; // another test file fetched it meanwhile
    const apt = join(base, 'apt');
    const debs = join(apt, 'debs');
    rmSync(debs, { recursive: true, force: true });
    for (const d of ['lists/partial', 'cache/archives/partial', 'debs']) mkdirSync(join(apt, d), { recursive: true });
    writeFileSync(join(apt, 'sources.list'), `deb http://deb.debian.org/debian ${codename()}-backports main\n`);
    const opts = [`Dir::Etc::SourceList=${join(apt, 'sources.list')}`, 'Dir::Etc::SourceParts=/nonexistent',
      `Dir::State::Lists=${join(apt, 'lists')}`, `Dir::Cache=${join(apt, 'cache')}`, 'APT::Sandbox::User=root'].flatMap((o) => ['-o', o]);
    aptGet([...opts, 'update', '-qq']);
    aptGet([...opts, 'download', 'mesa-vulkan-drivers'], debs);
    const deb = readdirSync(debs).find((f) => f.startsWith('mesa-vulkan-drivers_'));
    if (deb === undefined) throw new Error(`apt-get download mesa-vulkan-drivers left no package in ${debs}`);
    const root = join(base, 'root');
    rmSync(root, { recursive: true, force: true });
    execFileSync('dpkg-deb', ['-x', join(debs, deb), root], { stdio: [...toStderr] });
    const icdDir = join(root, 'usr', 'share', 'vulkan', 'icd.d');
    const shipped = readdirSync(icdDir).find((f) => f.startsWith('lvp_icd'));
    if (shipped === undefined) throw new Error(`${deb} has no lavapipe ICD file in /usr/share/vulkan/icd.d`);
    const manifest = JSON.parse(readFileSync(join(icdDir, shipped), 'utf8')) as { ICD: { library_path: string } };
    // The shipped manifest names the library by file name (found on the system's library path);
    // ours names the unpacked copy.
    const lib = basename(manifest.ICD.library_path);
    const found = readdirSync(join(root, 'usr', 'lib'), { recursive: true, encoding: 'utf8' }).find((f) => basename(f) === lib);
    if (found === undefined) throw new Error(`${deb} has no ${lib} under /usr/lib`);
    manifest.ICD.library_path = join(root, 'usr', 'lib', found);
    // Its shared-library dependencies, by package name (first alternative, no version): installed
    // from the machine's own suites, whose older libdrm2 lavapipe loads and runs with.
    const depends = execFileSync('dpkg-deb', ['-f', join(debs, deb), 'Depends'], { encoding: 'utf8' })
      .split(',').map((d) => d.split('|')[0]!.replace(/\(.*\)/, '').replace(/:.*/, '').trim()).filter(Boolean);
    writeFileSync(join(base, 'depends'), `${depends.join('\n')}\n`);
    writeFileSync(join(base, 'version'), `${deb}\n`);
    writeFileSync(`${icd}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    renameSync(`${icd}.tmp`, icd); // last: the ICD file appears only when the driver is complete
    return icd;
  });
}

/**
 * The op types of float-valued nodes that ran on the CPU provider in one run of `model` with
 * `feeds` on the provider under test (from onnxruntime's profile of a separate, uncached session).
 * On WebGPU an op the provider has no kernel for runs on the CPU provider instead, silently, with
 * copies to and from the device; integer shape arithmetic runs there by design and is not counted.
 */
export async function cpuFallbacks(model: ModelSource, feeds: Record<string, ort.Tensor>): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-profile-'));
  try {
    // The engine's own session options, so a program whose base weights are external data finds them.
    const s = await createSession(model, { ...(await testRuntime()), profileFilePrefix: join(dir, 'p') });
    try {
      await s.run(feeds);
      s.endProfiling();
    } finally {
      await s.release();
    }
    const file = readdirSync(dir)[0];
    if (file === undefined) throw new Error(`onnxruntime wrote no profile into ${dir}`);
    type Event = { cat: string; args?: { op_name?: string; provider?: string; output_type_shape?: Record<string, number[]>[] } };
    const ops = new Set<string>();
    for (const { cat, args } of JSON.parse(readFileSync(join(dir, file), 'utf8')) as Event[]) {
      if (cat !== 'Node' || args?.provider !== 'CPUExecutionProvider' || args.op_name === undefined) continue;
      if ((args.output_type_shape ?? []).some((o) => Object.keys(o).some((k) => k.startsWith('float')))) ops.add(args.op_name);
    }
    return [...ops].sort();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Fallbacks beyond the provider's known gaps (KNOWN_CPU_FALLBACKS): a new op the engine emits that the provider lacks. */
export function unexpectedFallbacks(ops: readonly string[]): string[] {
  return ops.filter((op) => !KNOWN_CPU_FALLBACKS[TEST_EP].includes(op));
}
