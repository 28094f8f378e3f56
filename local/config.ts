// Configuration of the local stack (`npm start`) and the demo (`npm run demo`). Ports default to
// the in-pod ones plus 10000 so a developer can run the stack beside a port-forwarded cluster.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { env, parseConfig, pickEnv } from '../lib/config.ts';
import { PORTS } from '../lib/constants.ts';

const schema = z.object({
  LOCAL_STATE_DIR: env.string().default(join(tmpdir(), 'workspace-sandbox-local')),
  LOCAL_WEBHOOK_PORT: env.port().default(PORTS.webhook + 10000),
  LOCAL_WEBHOOK_METRICS_PORT: env.port().default(PORTS.webhookMetrics + 10000),
  LOCAL_PROXY_PORT: env.port().default(PORTS.proxy + 10000),
  LOCAL_PROXY_ADMIN_PORT: env.port().default(PORTS.proxyAdmin + 10000),
  LOCAL_AGENT_PORT: env.port().default(PORTS.agent + 10000),
  /** Port of the demo's fake credentialed API, named in the default rules. */
  LOCAL_DEMO_API_PORT: env.port().default(19443),
  LOCAL_RULES_FILE: env.string().optional(),
  LOCAL_LOG_LEVEL: env.logLevel().default('info'),
  /** First restart delay after a crash; doubles up to 30 s. */
  LOCAL_RESTART_BACKOFF_MS: env.int(10, 60_000).default(500),
  LOCAL_READY_TIMEOUT_MS: env.int(1000, 300_000).default(30_000),
}).transform((e) => ({
  stateDir: e.LOCAL_STATE_DIR,
  ports: {
    webhook: e.LOCAL_WEBHOOK_PORT,
    webhookMetrics: e.LOCAL_WEBHOOK_METRICS_PORT,
    proxy: e.LOCAL_PROXY_PORT,
    proxyAdmin: e.LOCAL_PROXY_ADMIN_PORT,
    agent: e.LOCAL_AGENT_PORT,
    demoApi: e.LOCAL_DEMO_API_PORT,
  },
  rulesFile: e.LOCAL_RULES_FILE,
  logLevel: e.LOCAL_LOG_LEVEL,
  restartBackoffMs: e.LOCAL_RESTART_BACKOFF_MS,
  readyTimeoutMs: e.LOCAL_READY_TIMEOUT_MS,
}));

export type LocalConfig = ReturnType<typeof loadLocalConfig>;

export const LOCAL_ENV_SCHEMA = schema;

export function loadLocalConfig(source: Record<string, string | undefined> = process.env) {
  return parseConfig(schema, pickEnv(schema.in as z.ZodObject, source), 'local stack environment');
}

/** The variables every program of the stack inherits from the developer's shell. */
export function inheritedEnvironment(source: Record<string, string | undefined> = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of ['PATH', 'HOME', 'LANG', 'TMPDIR']) if (source[name]) out[name] = source[name]!;
  return out;
}
