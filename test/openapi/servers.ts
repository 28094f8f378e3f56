// The real servers the API documents describe, started in-process through their factories on
// port 0 (or a temporary Unix socket), with captured logs.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadAgentConfig, SOCKET_MODE } from '../../agent/config.ts';
import { createAgentServer, type AgentServer } from '../../agent/server.ts';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import type { Resolver } from '../../credential-proxy/resolve.ts';
import { createProxy, type ProxyDeps, type ProxyInstance } from '../../credential-proxy/server.ts';
import { createLogger, type AppLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { listen } from '../../lib/server.ts';
import { captureLogs, type LogCapture } from '../helpers/log-capture.ts';
import { closeServer } from '../helpers/listen.ts';
import { IN_PROCESS_PROXY_ENV } from '../credential-proxy/fixtures/proxy-harness.ts';

export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

export function tempDir(t: TeardownHost, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface RunningAgent {
  agent: AgentServer;
  root: string;
  /** Set for TCP. */
  url: string | undefined;
  port: number | undefined;
  /** Set for a Unix socket. */
  socketPath: string | undefined;
  logs: LogCapture;
}

/** An agent on 127.0.0.1:0 (or a socket in a temp dir) with a fresh workspace root. */
export async function startAgent(t: TeardownHost, options: { token?: string; env?: Record<string, string>; uds?: boolean } = {}): Promise<RunningAgent> {
  const dir = tempDir(t, 'ws-openapi-agent-');
  const root = join(dir, 'workspace');
  // The root is a subdirectory so tests can place things (symlink targets) outside it.
  mkdirSync(root);
  const env: Record<string, string> = { AGENT_WORKSPACE_ROOT: root, AGENT_KILL_GRACE_MS: '300', ...options.env };
  if (options.token !== undefined) {
    writeFileSync(join(dir, 'token'), `${options.token}\n`);
    env.AGENT_TOKEN_FILE = join(dir, 'token');
  }
  const config = loadAgentConfig(env);
  const logs = captureLogs();
  const logger = createLogger({ name: 'agent', level: 'info', destination: logs.destination, secrets: options.token ? [options.token] : [] });
  const agent = createAgentServer(config, { logger });
  const socketPath = options.uds ? join(dir, 'agent.sock') : undefined;
  const bound = socketPath ? await listen(agent.server, { path: socketPath, mode: SOCKET_MODE }) : await listen(agent.server, { port: 0, host: '127.0.0.1' });
  t.teardown(async () => {
    await agent.shutdown('test end');
    await closeServer(agent.server);
  });
  return {
    agent, root, logs, socketPath,
    port: bound.port,
    url: bound.port === undefined ? undefined : `http://127.0.0.1:${bound.port}`,
  };
}

export interface RunningProxy {
  proxy: ProxyInstance;
  adminUrl: string;
  adminPort: number;
  logs: LogCapture;
  logger: AppLogger;
  dir: string;
}

/** Every name resolves to loopback (the admin tests never reach upstreams). */
const loopbackResolver: Resolver = async () => [{ address: '127.0.0.1', family: 4 }];

/** A credential proxy with both listeners on 127.0.0.1:0; `tokens` become its RULES_TOKEN_FILE. */
export async function startProxy(t: TeardownHost, options: { tokens?: string[]; env?: Record<string, string>; rules?: unknown[]; deps?: Partial<ProxyDeps> } = {}): Promise<RunningProxy> {
  const dir = tempDir(t, 'ws-openapi-proxy-');
  const env: Record<string, string> = { PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', LOG_LEVEL: 'info', ...IN_PROCESS_PROXY_ENV, ...options.env };
  if (options.tokens) {
    writeFileSync(join(dir, 'tokens'), `${options.tokens.join('\n')}\n`);
    env.RULES_TOKEN_FILE = join(dir, 'tokens');
  }
  if (options.rules) {
    writeFileSync(join(dir, 'rules.json'), JSON.stringify(options.rules));
    env.RULES_FILE = join(dir, 'rules.json');
  }
  const config = loadProxyConfig(env);
  const logs = captureLogs();
  const logger = createLogger({ name: 'credential-proxy', level: 'info', destination: logs.destination });
  const proxy = createProxy(config, {
    logger,
    registry: createMetricsRegistry({ program: 'credential-proxy', defaultMetrics: false }),
    resolver: loopbackResolver,
    ...options.deps,
  });
  const bound = await proxy.listen();
  t.teardown(() => proxy.close());
  return { proxy, logs, logger, dir, adminPort: bound.admin.port!, adminUrl: `http://127.0.0.1:${bound.admin.port}` };
}
