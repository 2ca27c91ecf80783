/**
 * Debian's chromium for browser tests. Installed by the test setup itself when missing (as root,
 * with apt-get), so `npm test` on a fresh machine needs no manual step; playwright-core drives it
 * (no browser download: its own download cannot reach the network here).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const CHROMIUM = process.env['ALIGND_CHROMIUM'] ?? '/usr/bin/chromium';

export function ensureChromium(): string {
  if (existsSync(CHROMIUM)) return CHROMIUM;
  if (process.getuid?.() !== 0) {
    throw new Error(`${CHROMIUM} is missing and this is not root: install Debian's chromium (apt-get install chromium) or set ALIGND_CHROMIUM`);
  }
  // apt's progress goes to stderr: on stdout it would be read as this test file's TAP stream (tap then
  // reported the file as "no tests found" and skipped it on every fresh machine).
  const toStderr = ['ignore', process.stderr, process.stderr] as const;
  execFileSync('apt-get', ['update', '-qq'], { stdio: [...toStderr], timeout: 300_000 });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'chromium'], {
    stdio: [...toStderr], timeout: 600_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (!existsSync(CHROMIUM)) throw new Error(`apt-get installed chromium but ${CHROMIUM} does not exist`);
  return CHROMIUM;
}

/** Flags for a headless run on a closed network (no background fetches, no sandbox as root). */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];
