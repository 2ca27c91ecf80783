/**
 * The version registry of one model, on the local filesystem:
 *
 *   <root>/<model>/versions/vN/adapter/       PEFT adapter directory (as vLLM loads it)
 *   <root>/<model>/versions/vN/manifest.json  provenance, metrics, gate decision
 *   <root>/<model>/deployed.json              the deployed pointer and per-target state
 *   <root>/<model>/audit.jsonl                hash-chained audit log
 *   <root>/<model>/.staging/                  versions being written (never listed)
 *
 * A version is assembled under .staging, fsynced file by file, and made visible by one rename to
 * versions/vN (then the directory is fsynced): a crash at any point leaves either no vN or a
 * complete one. Version numbers come from max(existing)+1 under a lock and are never reused,
 * since GC never removes the newest version.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join, relative } from 'node:path';
import { AligndError } from '../base/errors.js';
import { redactSecrets } from '../base/redact.js';
import { appendAudit, auditHead, auditKeyFromEnv, endsKeyed, readAudit, verifyAudit, type AuditHead, type AuditRecord, type AuditVerification } from './audit.js';
import { fsyncDir, fsyncTree, isDir, writeDurable, writeFileAtomicDurable } from '../base/fs-durable.js';
import { withLock } from './lock.js';
import { manifestSchema, type GateRecord, type Manifest, type ManifestInput, type ProbationRecord } from './manifest.js';
import { parseVersion, servedName, validateModelName, versionName } from '../base/names.js';
import { deploymentStateSchema, type DeploymentState, type DeploymentStateInput } from './state.js';

export interface VersionInfo {
  version: string;
  number: number;
  dir: string;
  adapterDir: string;
  manifest: Manifest;
}

export interface Registry {
  readonly model: string;
  readonly dir: string;
  /** Add a version from an adapter directory produced elsewhere, or written by `write(dir)`. */
  addVersion(source: { adapterDir: string } | { write: (dir: string) => void }, input: ManifestInput): Promise<VersionInfo>;
  list(): VersionInfo[];
  get(version: string): VersionInfo | undefined;
  has(version: string): boolean;
  latest(): VersionInfo | undefined;
  /** Record the gate's decision in the manifest, atomically. */
  recordGate(version: string, gate: GateRecord): Promise<VersionInfo>;
  /**
   * Change a version's gate record from what the manifest holds NOW: `update` runs under the
   * registry's lock on the version as read inside it (a person's approve/deny checks the
   * decision it answers there, so two answers cannot both pass the check).
   */
  updateGate(version: string, update: (v: VersionInfo) => GateRecord): Promise<VersionInfo>;
  /** Record its probation (started, decided, answered), atomically. */
  recordProbation(version: string, probation: ProbationRecord): Promise<VersionInfo>;
  /** Change its probation record from what the manifest holds now, under the lock (as updateGate). */
  updateProbation(version: string, update: (v: VersionInfo) => ProbationRecord): Promise<VersionInfo>;
  deployment(): DeploymentState | undefined;
  setDeployment(state: DeploymentStateInput): void;
  audit(event: string, fields?: Record<string, unknown>): Promise<AuditRecord>;
  /** Every audit record; a corrupt line is an error naming the file and the line. */
  auditRecords(): AuditRecord[];
  /** Check the chain (HMAC links with the registry's key); `expect`: a head published earlier. */
  verifyAudit(expect?: { seq: number; head: string }): AuditVerification;
  /** The chain's head now (published in status and with promotion announcements). */
  auditHead(): AuditHead;
  /** Remove versions beyond the newest `keep`, except deployed, pinned, held and `protect`. Returns removed versions. */
  gc(keep: number, protect?: string[]): Promise<string[]>;
  /**
   * Startup recovery (call when no other writer runs): remove staging leftovers of interrupted
   * writes, and audit versions whose process died between the commit rename and its audit record
   * (`version.create` with `recovered: true`); with an audit key, end the chain with a keyed link
   * (`audit.keyed`) if it does not yet. Returns what it did.
   */
  cleanStaging(): Promise<{ removed: number; recovered: string[] }>;
  /** Check an adapter's files against the manifest's hashes. */
  verifyVersion(version: string): { ok: boolean; reason?: string };
}

/** sha256 of each file in an adapter dir, and one digest over (name, hash) pairs in name order. */
export function adapterDigest(dir: string): { sha256: string; files: Record<string, string> } {
  const files: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) files[relative(dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  const names = Object.keys(files).sort();
  const h = createHash('sha256');
  for (const n of names) h.update(`${n}\0${files[n]}\n`);
  return { sha256: h.digest('hex'), files: Object.fromEntries(names.map((n) => [n, files[n] as string])) };
}

export interface RegistryOptions {
  /** HMAC key of the audit chain; default ALIGND_AUDIT_KEY (unset: a plain sha256 chain). */
  auditKey?: string | undefined;
}

export function openRegistry(root: string, model: string, opts: RegistryOptions = { auditKey: auditKeyFromEnv() }): Registry {
  validateModelName(model);
  const dir = join(root, model);
  const versionsDir = join(dir, 'versions');
  const stagingDir = join(dir, '.staging');
  const auditPath = join(dir, 'audit.jsonl');
  const statePath = join(dir, 'deployed.json');
  mkdirSync(versionsDir, { recursive: true });
  mkdirSync(stagingDir, { recursive: true });

  const readManifest = (vdir: string, version: string): Manifest => {
    const path = join(vdir, 'manifest.json');
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new AligndError('STORE_FAILED', `manifest of ${model} ${version} cannot be read`, { input: path, action: 'restore the registry directory from backup', cause: err });
    }
    const r = manifestSchema.safeParse(raw);
    if (!r.success) throw new AligndError('STORE_FAILED', `manifest of ${model} ${version} is invalid: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, { input: path });
    return r.data;
  };

  const info = (version: string): VersionInfo | undefined => {
    const vdir = join(versionsDir, version);
    if (!isDir(vdir)) return undefined;
    return { version, number: parseVersion(version), dir: vdir, adapterDir: join(vdir, 'adapter'), manifest: readManifest(vdir, version) };
  };

  const numbers = (): number[] => readdirSync(versionsDir)
    .filter((n) => /^v[1-9][0-9]*$/.test(n))
    .map((n) => Number(n.slice(1)))
    .sort((a, b) => a - b);

  const deployment = (): DeploymentState | undefined => {
    if (!existsSync(statePath)) return undefined;
    const r = deploymentStateSchema.safeParse(JSON.parse(readFileSync(statePath, 'utf8')));
    if (!r.success) throw new AligndError('STORE_FAILED', `deployed.json of ${model} is invalid: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, { input: statePath });
    return r.data;
  };

  /** A manifest change computed from the manifest as read under the lock. */
  const updateManifest = (version: string, patch: (v: VersionInfo) => Partial<Manifest>): Promise<VersionInfo> => withLock(join(dir, 'versions.lock'), () => {
    const v = info(version);
    if (v === undefined) throw new AligndError('CONFIG_INVALID', `${model} has no version ${version}`, { action: 'list versions with alignd registry list' });
    const manifest = { ...v.manifest, ...patch(v) };
    writeFileAtomicDurable(join(v.dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    return { ...v, manifest };
  });

  const reg: Registry = {
    model, dir,
    async addVersion(source, input) {
      const stage = join(stagingDir, `${process.pid}-${randomBytes(6).toString('hex')}`);
      const adapterDir = join(stage, 'adapter');
      mkdirSync(stage, { recursive: true });
      try {
        if ('adapterDir' in source) {
          if (!isDir(source.adapterDir)) throw new AligndError('ADAPTER_INVALID', `adapter directory ${source.adapterDir} does not exist`, { action: 'point at a PEFT adapter directory' });
          cpSync(source.adapterDir, adapterDir, { recursive: true, dereference: true });
        } else {
          mkdirSync(adapterDir);
          source.write(adapterDir);
        }
        const digest = adapterDigest(adapterDir);
        if (Object.keys(digest.files).length === 0) throw new AligndError('ADAPTER_INVALID', 'the adapter directory is empty', { action: 'write adapter_config.json and adapter_model.safetensors into it' });
        fsyncTree(adapterDir);
        return await withLock(join(dir, 'versions.lock'), async () => {
          const n = (numbers().at(-1) ?? 0) + 1;
          const version = versionName(n);
          const manifest: Manifest = manifestSchema.parse({
            schema: 'alignd.manifest/v1', model, version, created_at: new Date().toISOString(),
            ...input, adapter_sha256: digest.sha256, adapter_files: digest.files, gate: null,
          });
          writeDurable(join(stage, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
          fsyncDir(stage);
          renameSync(stage, join(versionsDir, version)); // the commit point
          fsyncDir(versionsDir);
          await reg.audit('version.create', { version, parent: input.parent, adapter_sha256: digest.sha256 });
          return { version, number: n, dir: join(versionsDir, version), adapterDir: join(versionsDir, version, 'adapter'), manifest };
        });
      } finally {
        rmSync(stage, { recursive: true, force: true });
      }
    },
    list() {
      return numbers().map((n) => info(versionName(n))).filter((v): v is VersionInfo => v !== undefined);
    },
    get(version) {
      parseVersion(version);
      return info(version);
    },
    has(version) {
      return /^v[1-9][0-9]*$/.test(version) && isDir(join(versionsDir, version));
    },
    latest() {
      const n = numbers().at(-1);
      return n === undefined ? undefined : info(versionName(n));
    },
    recordGate: (version, gate) => updateManifest(version, () => ({ gate })),
    updateGate: (version, update) => updateManifest(version, (v) => ({ gate: update(v) })),
    recordProbation: (version, probation) => updateManifest(version, () => ({ probation })),
    updateProbation: (version, update) => updateManifest(version, (v) => ({ probation: update(v) })),
    deployment,
    setDeployment(state) {
      writeFileAtomicDurable(statePath, redactSecrets(JSON.stringify(deploymentStateSchema.parse(state), null, 2)) + '\n');
    },
    audit(event, fields = {}) {
      return appendAudit(auditPath, event, { model, ...fields }, opts.auditKey);
    },
    auditRecords: () => readAudit(auditPath),
    verifyAudit: (expect) => verifyAudit(auditPath, { key: opts.auditKey, ...(expect === undefined ? {} : { expect }) }),
    auditHead: () => auditHead(auditPath, opts.auditKey),
    gc(keep, protect = []) {
      if (!Number.isInteger(keep) || keep < 1) throw new AligndError('CONFIG_INVALID', `gc keep must be a positive integer, got ${keep}`);
      return withLock(join(dir, 'versions.lock'), async () => {
        const all = numbers().map(versionName);
        const state = deployment();
        const keepSet = new Set([...all.slice(-keep), ...protect]);
        if (state !== undefined) {
          keepSet.add(state.desired);
          if (state.last_complete !== null) keepSet.add(state.last_complete);
          if (state.previous !== null) keepSet.add(state.previous);
          for (const t of Object.values(state.targets)) if (t.version !== null) keepSet.add(t.version);
        }
        const removed: string[] = [];
        for (const v of all) {
          if (keepSet.has(v)) continue;
          const m = info(v)?.manifest;
          if (m?.gate?.decision === 'hold' && m.gate.approval === undefined) continue; // awaits a person
          // Rename out of versions/ first so a crash mid-delete never leaves a half version listed.
          const trash = join(stagingDir, `gc-${v}-${randomBytes(4).toString('hex')}`);
          renameSync(join(versionsDir, v), trash);
          fsyncDir(versionsDir);
          rmSync(trash, { recursive: true, force: true });
          removed.push(v);
        }
        if (removed.length > 0) await reg.audit('registry.gc', { removed, keep });
        return removed;
      });
    },
    async cleanStaging() {
      let removed = 0;
      for (const e of readdirSync(stagingDir)) {
        rmSync(join(stagingDir, e), { recursive: true, force: true });
        removed++;
      }
      const audited = new Set(readAudit(auditPath).filter((r) => r.event === 'version.create').map((r) => r['version']));
      const recovered: string[] = [];
      for (const v of reg.list()) {
        if (audited.has(v.version)) continue;
        await reg.audit('version.create', { version: v.version, parent: v.manifest.parent, adapter_sha256: v.manifest.adapter_sha256, recovered: true });
        recovered.push(v.version);
      }
      if (opts.auditKey !== undefined && existsSync(auditPath) && !endsKeyed(auditPath)) {
        await reg.audit('audit.keyed', { note: 'from this record on every link is an HMAC-SHA256 with ALIGND_AUDIT_KEY' });
      }
      return { removed, recovered };
    },
    verifyVersion(version) {
      const v = info(version);
      if (v === undefined) return { ok: false, reason: `no version ${version}` };
      const d = adapterDigest(v.adapterDir);
      if (d.sha256 !== v.manifest.adapter_sha256) return { ok: false, reason: `adapter sha256 ${d.sha256} differs from the manifest's ${v.manifest.adapter_sha256}` };
      return { ok: true };
    },
  };
  return reg;
}

/** Models that have a registry under `root`. */
export function listModels(root: string): string[] {
  if (!isDir(root)) return [];
  return readdirSync(root).filter((n) => isDir(join(root, n, 'versions')));
}

export { servedName };
