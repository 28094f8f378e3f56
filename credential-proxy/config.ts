// The proxy's configuration: environment only (plus the rules file it names), validated once into
// one frozen object with every problem listed. The only module of the proxy that reads process.env.
import { isIP } from 'node:net';
import { z } from 'zod';
import { env, parseConfig, pickEnv, readConfigFile, ConfigError, type DeepReadonly } from '../lib/config.ts';
import { PORTS, PROXY_LOOPBACK_HOST, SHARED_DIR } from '../lib/constants.ts';
import { rulesFromAllowedDomains, validateRules, RuleSetError, type Rule } from './rules.ts';

export const proxyEnvSchema = z.object({
  PROXY_HOST: env.string().default(PROXY_LOOPBACK_HOST),
  PROXY_PORT: env.port().default(PORTS.proxy),
  /** Listen on this Unix socket instead of PROXY_HOST:PROXY_PORT (Docker mode: reached through the agent's relay). */
  PROXY_SOCKET: env.string().refine((p) => p.startsWith('/'), 'must be an absolute path').optional(),
  ADMIN_HOST: env.string().default('0.0.0.0'),
  ADMIN_PORT: env.port().default(PORTS.proxyAdmin),
  /** Comma-separated hosts (`*.example.com`, optional `:port`): tunnel-only rules. */
  ALLOWED_DOMAINS: env.list().default([]),
  /** YAML or JSON: a list of rules, or `{ rules: [...] }`. */
  RULES_FILE: env.string().optional(),
  /** Bearer tokens for /rules, one per line (`id:token`, or a bare token). */
  RULES_TOKEN_FILE: env.string().optional(),
  /** Development only: allow /rules writes without a token when RULES_TOKEN_FILE is unset. */
  RULES_ALLOW_UNAUTHENTICATED: env.bool().default(false),
  /** The key of this pod's rule set in Redis (the webhook sets it to the pod UID). */
  RULES_SCOPE: env.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'must be 1-128 characters of letters, digits, ".", "_", ":", "-"').optional(),
  /** Key prefix of the Redis rule sets and pub/sub channel. */
  RULES_REDIS_PREFIX: env.string().default('workspace-sandbox:rules'),
  REDIS_URL: env.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
  /** `name=address` pairs answered without DNS (like /etc/hosts); the answers are still SSRF-checked. */
  STATIC_HOSTS: env.list().pipe(z.array(z.string().regex(/^[A-Za-z0-9.-]+=[0-9A-Fa-f:.]+$/, 'each entry must be name=address'))
    .refine((l) => l.every((e) => isIP(e.slice(e.indexOf('=') + 1)) !== 0), 'each address must be an IPv4 or IPv6 literal')).default([]),
  CA_DIR: env.string().default(SHARED_DIR),
  UPSTREAM_CA_FILE: env.string().optional(),
  /** Largest request body buffered for SigV4 signing (Bedrock needs the payload hash); over it → 413. */
  SIGNING_BODY_CAP_BYTES: env.int(1024, 1024 * 1024 * 1024).default(10 * 1024 * 1024),
  /** Pod name (downward API), written in every audit line. */
  POD_NAME: env.string().optional(),
  LOG_LEVEL: env.logLevel().default('info'),
  MAX_TUNNELS: env.int(1, 1_000_000).default(4096),
  /** A tunnel or forwarded connection with no bytes either way for this long is closed. */
  IDLE_TIMEOUT_MS: env.int(1000, 24 * 3600_000).default(300_000),
  /** A client that has not sent complete request headers by then gets 408 (slowloris). */
  HEADER_TIMEOUT_MS: env.int(100, 600_000).default(10_000),
  UPSTREAM_CONNECT_TIMEOUT_MS: env.int(100, 600_000).default(10_000),
  DRAIN_TIMEOUT_MS: env.int(0, 600_000).default(10_000),
}).superRefine((c, ctx) => {
  if (c.REDIS_URL && !c.RULES_SCOPE) {
    // Without a scope every pod would share one rule set: refuse rather than guess.
    ctx.addIssue({ code: 'custom', path: ['RULES_SCOPE'], message: 'is required with REDIS_URL (set it to the pod UID from the downward API)' });
  }
  // Other pods must never be able to use the proxy as an open relay: loopback only.
  if (!/^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/.test(c.PROXY_HOST)) {
    ctx.addIssue({ code: 'custom', path: ['PROXY_HOST'], message: 'must be a loopback address (127.0.0.1, ::1): the proxy must not be reachable from other pods' });
  }
  if (c.PROXY_PORT !== 0 && c.PROXY_PORT === c.ADMIN_PORT) {
    ctx.addIssue({ code: 'custom', path: ['ADMIN_PORT'], message: 'must differ from PROXY_PORT' });
  }
});

export type ProxyEnv = z.output<typeof proxyEnvSchema>;

export interface ProxyConfig extends DeepReadonly<ProxyEnv> {
  /** Rules from ALLOWED_DOMAINS and RULES_FILE, validated. */
  readonly staticRules: { readonly env: readonly Rule[]; readonly file: readonly Rule[] };
  readonly rulesScope: string;
}

export const PROXY_ENV_HELP: Readonly<Record<keyof ProxyEnv, string>> = {
  PROXY_HOST: `proxy listener address (${PROXY_LOOPBACK_HOST}; keep it loopback)`,
  PROXY_PORT: `proxy listener port (${PORTS.proxy})`,
  PROXY_SOCKET: 'listen on this Unix socket instead of PROXY_HOST:PROXY_PORT (Docker mode)',
  ADMIN_HOST: 'admin listener address (0.0.0.0)',
  ADMIN_PORT: `admin listener port (${PORTS.proxyAdmin}): /healthz /readyz /metrics /rules`,
  ALLOWED_DOMAINS: 'comma-separated hosts allowed as plain tunnels, e.g. api.example.com,*.example.org:8443',
  RULES_FILE: 'YAML/JSON rules file (a list of rules or { rules: [...] })',
  RULES_TOKEN_FILE: 'bearer tokens for /rules, one per line ("id:token" or a bare token)',
  RULES_ALLOW_UNAUTHENTICATED: 'development only: allow /rules writes when no token file is set (false)',
  RULES_SCOPE: 'key of this pod\'s rule set in Redis, the pod UID (required with REDIS_URL)',
  RULES_REDIS_PREFIX: 'Redis key prefix and pub/sub channel of the rule sets (workspace-sandbox:rules)',
  REDIS_URL: 'redis:// URL of the shared rules store (default: in-memory store)',
  STATIC_HOSTS: 'name=address pairs answered without DNS, e.g. api.internal.test=10.1.2.3 (answers are still SSRF-checked)',
  CA_DIR: `where the CA certificate and bundle are written (${SHARED_DIR})`,
  UPSTREAM_CA_FILE: 'extra CA bundle trusted for upstream TLS (tests, private CAs)',
  SIGNING_BODY_CAP_BYTES: 'largest request body buffered for AWS SigV4 signing; larger → 413 (10485760)',
  POD_NAME: 'pod name written in every audit line',
  LOG_LEVEL: 'fatal|error|warn|info|debug|trace|silent (info)',
  MAX_TUNNELS: 'open tunnels allowed at once; more get 429 (4096)',
  IDLE_TIMEOUT_MS: 'close tunnels and connections idle this long (300000)',
  HEADER_TIMEOUT_MS: 'time allowed for a client to send request headers (10000)',
  UPSTREAM_CONNECT_TIMEOUT_MS: 'upstream TCP connect timeout (10000)',
  DRAIN_TIMEOUT_MS: 'graceful shutdown limit (10000)',
};

const fileSchema = z.union([z.array(z.unknown()), z.object({ rules: z.array(z.unknown()) }).strict()]);

function loadRulesFile(path: string, reserved: ReadonlySet<string>): Rule[] {
  const raw = readConfigFile(path);
  const shaped = fileSchema.safeParse(raw);
  if (!shaped.success) {
    throw new ConfigError(`rules file ${path}`, [{ field: '(file)', value: undefined, message: 'must be a list of rules or { rules: [...] }' }]);
  }
  const list = Array.isArray(shaped.data) ? shaped.data : shaped.data.rules;
  try {
    return validateRules(list, `rules file ${path}`, reserved);
  } catch (err) {
    if (err instanceof RuleSetError) throw new ConfigError(`rules file ${path}`, err.problems.map((p) => ({ ...p, field: `rules${p.field.startsWith('[') ? '' : '.'}${p.field}` })));
    throw err;
  }
}

/** Parses `source` (default: the process environment) into the proxy's frozen config. */
export function loadProxyConfig(source: Record<string, string | undefined> = process.env): ProxyConfig {
  const parsed = parseConfig(proxyEnvSchema, pickEnv(proxyEnvSchema, source), 'proxy environment');
  let envRules: Rule[];
  try {
    envRules = rulesFromAllowedDomains(parsed.ALLOWED_DOMAINS);
  } catch (err) {
    if (err instanceof RuleSetError) {
      throw new ConfigError('proxy environment', err.problems.map((p) => ({ field: 'ALLOWED_DOMAINS', value: parsed.ALLOWED_DOMAINS.join(','), message: p.message })));
    }
    throw err;
  }
  const fileRules = parsed.RULES_FILE ? loadRulesFile(parsed.RULES_FILE, new Set(envRules.map((r) => r.id))) : [];
  return Object.freeze({
    ...parsed,
    staticRules: Object.freeze({ env: Object.freeze(envRules), file: Object.freeze(fileRules) }),
    rulesScope: parsed.RULES_SCOPE ?? 'local',
  });
}

/**
 * The environment `{ env: NAME }` credential sources read (header credentials in rules). Handed to
 * the interceptor here so that no other module reads process.env.
 */
export function credentialEnvironment(source: Record<string, string | undefined> = process.env): Readonly<Record<string, string | undefined>> {
  return source;
}
