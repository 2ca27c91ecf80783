/**
 * File-drop target for servers that watch a path: each version is copied to `<dir>/<model>-vN/`
 * (complete before it appears: copied under a temp name, fsynced, renamed), and `<dir>/<model>`
 * is a symlink switched atomically (new link under a temp name, rename over the old one) to the
 * current version. vLLM's lora_filesystem_resolver (VLLM_LORA_RESOLVER_CACHE_DIR=<dir>) loads
 * `<dir>/<model>-vN/` when a request names that adapter.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AligndError } from '../../daemon/base/errors.js';
import { adapterDigest } from '../../daemon/registry/registry.js';
import { fsyncDir, fsyncTree } from '../../daemon/base/fs-durable.js';
import { servedNamePattern } from '../../daemon/base/names.js';
import type { ServerTarget } from '../../daemon/registry/targets.js';

export function fileDropTarget(cfg: { dir: string }): ServerTarget {
  return {
    id: `file:${cfg.dir}`,
    // What a watcher of the directory serves: the version the model's link points at, when that
    // version's directory exists (a directory without the link is not what a watcher loads).
    async observe(model) {
      const link = join(cfg.dir, model);
      const current = existsSync(link) ? readlinkSync(link) : undefined;
      return current !== undefined && servedNamePattern(model).test(current) && existsSync(join(cfg.dir, current, 'adapter_config.json')) ? [current] : [];
    },
    async deploy(req) {
      mkdirSync(cfg.dir, { recursive: true });
      const dest = join(cfg.dir, req.name);
      if (existsSync(dest)) {
        const d = adapterDigest(dest);
        if (d.sha256 !== req.adapterSha256) {
          throw new AligndError('SERVER_FAILED', `${dest} exists with other content (sha256 ${d.sha256}, expected ${req.adapterSha256})`, { action: 'names are immutable; remove the stray directory after checking who wrote it' });
        }
      } else {
        const tmp = join(cfg.dir, `.${req.name}.${randomBytes(4).toString('hex')}.tmp`);
        try {
          cpSync(req.adapterDir, tmp, { recursive: true, dereference: true });
          fsyncTree(tmp);
          renameSync(tmp, dest);
        } finally {
          rmSync(tmp, { recursive: true, force: true });
        }
      }
      const link = join(cfg.dir, req.model);
      const tmpLink = join(cfg.dir, `.${req.model}.${randomBytes(4).toString('hex')}.link`);
      symlinkSync(req.name, tmpLink);
      renameSync(tmpLink, link);
      fsyncDir(cfg.dir);
    },
    async retire(model, keep) {
      if (!existsSync(cfg.dir)) return [];
      const link = join(cfg.dir, model);
      const current = existsSync(link) ? readlinkSync(link) : undefined;
      const esc = model.replace(/[.]/g, '\\.');
      const re = servedNamePattern(model);
      // Leftovers of a copy or link switch interrupted by a crash.
      const junk = new RegExp(`^\\.(?:${esc}-v[0-9]+\\.[0-9a-f]+\\.tmp|${esc}\\.[0-9a-f]+\\.link)$`);
      const removed: string[] = [];
      for (const e of readdirSync(cfg.dir)) {
        if (junk.test(e)) {
          rmSync(join(cfg.dir, e), { recursive: true, force: true });
          continue;
        }
        if (!re.test(e) || keep.includes(e) || e === current) continue;
        rmSync(join(cfg.dir, e), { recursive: true, force: true });
        removed.push(e);
      }
      if (removed.length > 0) fsyncDir(cfg.dir);
      return removed;
    },
  };
}
