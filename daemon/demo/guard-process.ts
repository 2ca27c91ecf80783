/**
 * `node dist/daemon/demo/guard-process.js [PORT]`: the demo's simulated guard model in its own
 * process (`alignd demo` starts it). Prints one JSON line `{"url": ...}` once listening; exits on
 * SIGTERM/SIGINT.
 */
import { startDemoGuard } from './guard.js';

const server = await startDemoGuard(Number(process.argv[2] ?? 0));
process.stdout.write(JSON.stringify({ url: server.url }) + '\n');
const stop = (): void => { void server.close().then(() => process.exit(0)); };
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
