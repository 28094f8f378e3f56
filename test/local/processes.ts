// What the local stack's tests need to watch real processes: free ports, a process's children,
// whether a pid lives, waiting for a condition, and the environment of a stack of one's own.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, async () => {
    const s = createServer();
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    return s;
  }));
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export function childPids(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)]).toString().split('\n').map((l) => Number(l.trim())).filter((n) => n > 0);
  } catch {
    return [];
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What these helpers need of a tap test. */
export interface Test { teardown: (fn: () => unknown) => void }

/** The environment of a stack of its own: free ports and a state directory removed after the test. */
export async function stackEnv(t: Test): Promise<Record<string, string>> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-life-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [webhook, metrics, proxy, admin, agent, demoApi] = await freePorts(6);
  return {
    ...process.env,
    LOCAL_STATE_DIR: join(dir, 'state'),
    LOCAL_WEBHOOK_PORT: String(webhook),
    LOCAL_WEBHOOK_METRICS_PORT: String(metrics),
    LOCAL_PROXY_PORT: String(proxy),
    LOCAL_PROXY_ADMIN_PORT: String(admin),
    LOCAL_AGENT_PORT: String(agent),
    LOCAL_DEMO_API_PORT: String(demoApi),
    LOCAL_RESTART_BACKOFF_MS: '200',
  } as Record<string, string>;
}
