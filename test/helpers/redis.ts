// A real redis-server per test, on a free port. When REDIS_URL is set, tests that don't need to
// stop Redis use that server instead. A missing binary skips the Redis tests loudly, or fails
// them when REQUIRE_REDIS=1 (CI sets it, so a machine without Redis cannot pass silently).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { freePort } from './listen.ts';
import { once } from 'node:events';

export const REDIS_BINARY = process.env.REDIS_SERVER_BIN ?? 'redis-server';

function binaryPresent(): boolean {
  return spawnSync(REDIS_BINARY, ['--version'], { stdio: 'ignore' }).status === 0;
}

let warned = false;

/**
 * `undefined` when Redis tests can run, else the skip reason. Throws when REQUIRE_REDIS=1 and no
 * server can be had.
 */
export function redisSkipReason(needsControl = false): string | undefined {
  if (!needsControl && process.env.REDIS_URL) return undefined;
  if (binaryPresent()) return undefined;
  const reason = `${REDIS_BINARY} not found: Redis tests SKIPPED (install redis-server, or set REDIS_URL)`;
  if (process.env.REQUIRE_REDIS === '1') throw new Error(`REQUIRE_REDIS=1 but ${reason}`);
  if (!warned) {
    warned = true;
    process.stderr.write(`\n${'!'.repeat(72)}\n!! ${reason}\n${'!'.repeat(72)}\n\n`);
  }
  return reason;
}


async function waitForPort(port: number, child: ChildProcess, timeoutMs: number, tls: boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s: Socket = tls ? tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : connect(port, '127.0.0.1');
      s.once(tls ? 'secureConnect' : 'connect', () => {
        s.write('PING\r\n');
        s.once('data', (d) => {
          s.destroy();
          // With the default user disabled (an ACL file), PING answers NOAUTH: the server is up.
          resolve(/^(\+PONG|-NOAUTH)/.test(d.toString()));
        });
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`redis-server did not answer on port ${port} within ${timeoutMs} ms`);
}

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** True when this helper started the server (only then can it be killed and restarted). */
  readonly owned: boolean;
  /** SIGKILL: the outage a crashed Redis causes (no clean goodbye to clients). */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: it keeps nothing on disk). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

export interface StartRedisOptions {
  /** A server this test can kill and restart (never the external REDIS_URL one). */
  needsControl?: boolean;
  /** `--aclfile` to load (the default user then is whatever the file says). */
  aclFile?: string;
  /** TLS only (`--tls-port`, no plain port) with this key pair; clients need not present a certificate. */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

/** Starts a server for the test `t` and stops it at teardown. */
export async function startRedis(t: TeardownHost, options: StartRedisOptions = {}): Promise<RedisServer> {
  const external = process.env.REDIS_URL;
  if (external && !options.needsControl && !options.aclFile && !options.tls) {
    const port = Number(new URL(external).port || 6379);
    const noop = async () => {
      throw new Error('an external REDIS_URL server cannot be stopped by tests');
    };
    return { url: external, port, owned: false, kill: noop, start: noop, stop: async () => {} };
  }
  let child: ChildProcess | undefined;
  let port = 0;
  const tls = options.tls;
  const listenArgs = (p: number) => tls
    ? ['--port', '0', '--tls-port', String(p), '--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile, '--tls-ca-cert-file', tls.caFile, '--tls-auth-clients', 'no']
    : ['--port', String(p)];
  const spawnOn = (p: number) => spawn(REDIS_BINARY, [
    ...listenArgs(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning',
    ...(options.aclFile ? ['--aclfile', options.aclFile] : []),
  ], { stdio: 'ignore' });
  // The free port can be taken between our probe and Redis binding it: retry on another.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    child = spawnOn(port);
    try {
      await waitForPort(port, child, 5000, tls !== undefined);
      break;
    } catch (err) {
      child.kill('SIGKILL');
      if (attempt === 5) throw err;
    }
  }
  const killChild = async (signal: NodeJS.Signals) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, 'exit');
    c.kill(signal);
    await exited;
  };
  const server: RedisServer = {
    get url() { return `${tls ? 'rediss' : 'redis'}://${tls ? 'localhost' : '127.0.0.1'}:${port}`; },
    get port() { return port; },
    owned: true,
    kill: () => killChild('SIGKILL'),
    // Same port: clients reconnect to where Redis was.
    start: async () => {
      child = spawnOn(port);
      await waitForPort(port, child, 5000, tls !== undefined);
    },
    stop: () => killChild('SIGTERM'),
  };
  t.teardown(() => server.stop());
  return server;
}
