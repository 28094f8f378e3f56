// The proxy's configuration: environment only (plus the rules file it names), validated once into
// one frozen object with every problem listed. The only module of the proxy that reads process.env.
import { isIP } from 'node:net';
import { z } from 'zod';
import { env, parseConfig, pickEnv, readConfigFile, ConfigError, type DeepReadonly } from '../lib/config.ts';
import { MAX_CA_VALIDITY_SECONDS, PORTS, PROXY_LOOPBACK_HOST, REDIS_RULES_READER_USER, SHARED_DIR } from '../lib/constants.ts';
import { CA_VALIDITY_MS } from './ca.ts';
import { EMPTY_CATALOG, loadCredentialCatalog, type CredentialCatalog } from './credential-catalog.ts';
import { rulesFromAllowedDomains, validateRules, RuleSetError, type RuleSpec } from './rules.ts';
import { DEFAULT_MEMORY_LIMIT_BYTES, memoryBudget, type MemoryBudget } from './memory.ts';

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
  /** The credentials this sidecar may inject: name → source, header template, hosts (credential-catalog.ts). */
  CREDENTIALS_FILE: env.string().optional(),
  /** Ed25519 public keys (PEM) checking per-pod /rules tokens and rule sets signed by the backend. */
  POD_TOKEN_PUBLIC_KEYS_FILE: env.string().optional(),
  /** Development only: static bearer tokens for /rules, one per line (`id:token`, or a bare token). */
  RULES_TOKEN_FILE: env.string().optional(),
  /** Development only: allow /rules writes without a token when RULES_TOKEN_FILE is unset. */
  RULES_ALLOW_UNAUTHENTICATED: env.bool().default(false),
  /** The key of this pod's rule set in Redis (the webhook sets it to the pod UID). */
  RULES_SCOPE: env.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'must be 1-128 characters of letters, digits, ".", "_", ":", "-"').optional(),
  /** Where the enforced rule sets are kept across a sidecar restart (a memory-backed volume only the sidecar mounts). */
  RULES_STATE_DIR: env.string().optional(),
  /** Key prefix of the Redis rule sets and their channels. */
  RULES_REDIS_PREFIX: env.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be 1-64 characters of letters, digits, ".", "_", ":", "-"').default('workspace-sandbox:rules'),
  REDIS_URL: env.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
  /** The Redis ACL user the proxy reads rule sets as (read-only). */
  REDIS_USERNAME: env.string().default(REDIS_RULES_READER_USER),
  /** File holding that user's password (a Secret mounted into the sidecar only). */
  REDIS_PASSWORD_FILE: env.string().optional(),
  /** CA bundle that signs the Redis server's certificate (rediss://). */
  REDIS_CA_FILE: env.string().optional(),
  /** `name=address` pairs answered without DNS (like /etc/hosts); the answers are still SSRF-checked. */
  STATIC_HOSTS: env.list().pipe(z.array(z.string().regex(/^[A-Za-z0-9.-]+=[0-9A-Fa-f:.]+$/, 'each entry must be name=address'))
    .refine((l) => l.every((e) => isIP(e.slice(e.indexOf('=') + 1)) !== 0), 'each address must be an IPv4 or IPv6 literal')).default([]),
  CA_DIR: env.string().default(SHARED_DIR),
  /** The sidecar's own memory-backed volume: the CA kept there survives a sidecar restart. */
  PROXY_STATE_DIR: env.string().refine((p) => p.startsWith('/'), 'must be an absolute path').optional(),
  /** Lifetime of the per-pod CA; the webhook sets the Pod's deadline plus a margin. */
  CA_VALIDITY_SECONDS: env.int(600, MAX_CA_VALIDITY_SECONDS).default(CA_VALIDITY_MS / 1000),
  UPSTREAM_CA_FILE: env.string().optional(),
  /** The egress gateway (`http://address:port`): every upstream connection goes through it by CONNECT. */
  GATEWAY_URL: env.string().regex(/^http:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}\/?$/, 'must be http://address:port (the gateway Service address)').optional(),
  /** The pod's projected ServiceAccount token with the gateway's audience (mounted into this container alone). */
  GATEWAY_TOKEN_FILE: env.string().optional(),
  /** Largest request body buffered for SigV4 signing (Bedrock needs the payload hash); over it → 413. */
  SIGNING_BODY_CAP_BYTES: env.int(1024, 1024 * 1024 * 1024).default(10 * 1024 * 1024),
  /** Pod name (downward API), written in every audit line. */
  POD_NAME: env.string().optional(),
  LOG_LEVEL: env.logLevel().default('info'),
  /** The sidecar container's memory limit: the tunnel cap, the signing budget and shedding derive from it. */
  MEMORY_LIMIT_BYTES: env.int(160 * 1024 * 1024, 64 * 1024 * 1024 * 1024).default(DEFAULT_MEMORY_LIMIT_BYTES),
  /** Unset: derived from MEMORY_LIMIT_BYTES (credential-proxy/memory.ts); set: may only be lower. */
  MAX_TUNNELS: env.int(1, 1_000_000).optional(),
  /** A tunnel or forwarded connection with no bytes either way for this long is closed. */
  IDLE_TIMEOUT_MS: env.int(1000, 24 * 3600_000).default(300_000),
  /** A client that has not sent complete request headers by then gets 408 (slowloris). */
  HEADER_TIMEOUT_MS: env.int(100, 600_000).default(10_000),
  UPSTREAM_CONNECT_TIMEOUT_MS: env.int(100, 600_000).default(10_000),
  DRAIN_TIMEOUT_MS: env.int(0, 600_000).default(10_000),
}).superRefine((c, ctx) => {
  if (Boolean(c.GATEWAY_URL) !== Boolean(c.GATEWAY_TOKEN_FILE)) {
    // Half a gateway config would either leak egress around it or fail every connection: refuse.
    ctx.addIssue({ code: 'custom', path: [c.GATEWAY_URL ? 'GATEWAY_TOKEN_FILE' : 'GATEWAY_URL'], message: 'GATEWAY_URL and GATEWAY_TOKEN_FILE are set together or not at all' });
  }
  if ((c.REDIS_URL || c.POD_TOKEN_PUBLIC_KEYS_FILE) && !c.RULES_SCOPE) {
    // Without a scope every pod would share one rule set and accept every pod's tokens: refuse rather than guess.
    ctx.addIssue({ code: 'custom', path: ['RULES_SCOPE'], message: `is required with ${c.REDIS_URL ? 'REDIS_URL' : 'POD_TOKEN_PUBLIC_KEYS_FILE'} (set it to the pod UID from the downward API)` });
  }
  if (c.REDIS_URL && !c.POD_TOKEN_PUBLIC_KEYS_FILE) {
    ctx.addIssue({ code: 'custom', path: ['POD_TOKEN_PUBLIC_KEYS_FILE'], message: 'is required with REDIS_URL: rule sets from Redis are used only when their signature verifies' });
  }
  if (c.REDIS_URL && /^rediss?:\/\/[^/@]*:[^/@]*@/.test(c.REDIS_URL)) {
    ctx.addIssue({ code: 'custom', path: ['REDIS_URL'], message: 'must not carry a password (it would show in the Pod spec): use REDIS_PASSWORD_FILE' });
  }
  if (c.REDIS_CA_FILE && !c.REDIS_URL?.startsWith('rediss://')) {
    ctx.addIssue({ code: 'custom', path: ['REDIS_CA_FILE'], message: 'is only used with a rediss:// (TLS) REDIS_URL' });
  }
  if (c.RULES_TOKEN_FILE && c.POD_TOKEN_PUBLIC_KEYS_FILE) {
    // A static token is one secret for every pod it is mounted into: it must not linger next to per-pod tokens.
    ctx.addIssue({ code: 'custom', path: ['RULES_TOKEN_FILE'], message: 'is for local development only and cannot be combined with per-pod tokens (POD_TOKEN_PUBLIC_KEYS_FILE)' });
  }
  // Other pods must never be able to use the proxy as an open relay: loopback only.
  if (!/^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/.test(c.PROXY_HOST)) {
    ctx.addIssue({ code: 'custom', path: ['PROXY_HOST'], message: 'must be a loopback address (127.0.0.1, ::1): the proxy must not be reachable from other pods' });
  }
  if (c.PROXY_PORT !== 0 && c.PROXY_PORT === c.ADMIN_PORT) {
    ctx.addIssue({ code: 'custom', path: ['ADMIN_PORT'], message: 'must differ from PROXY_PORT' });
  }
  // Every cap must fit the memory limit: a config that could be OOM-killed by its own clients is refused.
  try {
    const budget = memoryBudget(c.MEMORY_LIMIT_BYTES, c.MAX_TUNNELS);
    if (c.SIGNING_BODY_CAP_BYTES > budget.signingBudgetBytes) {
      ctx.addIssue({ code: 'custom', path: ['SIGNING_BODY_CAP_BYTES'], message: `must be at most ${budget.signingBudgetBytes} (the signing share of MEMORY_LIMIT_BYTES=${c.MEMORY_LIMIT_BYTES})` });
    }
  } catch (err) {
    ctx.addIssue({ code: 'custom', path: [c.MAX_TUNNELS === undefined ? 'MEMORY_LIMIT_BYTES' : 'MAX_TUNNELS'], message: (err as Error).message });
  }
});

export type ProxyEnv = z.output<typeof proxyEnvSchema>;

export interface ProxyConfig extends DeepReadonly<ProxyEnv> {
  /** Rules from ALLOWED_DOMAINS and RULES_FILE, validated. */
  readonly staticRules: { readonly env: readonly RuleSpec[]; readonly file: readonly RuleSpec[] };
  readonly rulesScope: string;
  /** The credentials of CREDENTIALS_FILE (empty without it: no rule can inject anything). */
  readonly credentials: CredentialCatalog;
  /** Caps derived from MEMORY_LIMIT_BYTES (and MAX_TUNNELS when set). */
  readonly memory: MemoryBudget;
}

export const PROXY_ENV_HELP: Readonly<Record<keyof ProxyEnv, string>> = {
  PROXY_HOST: `proxy listener address (${PROXY_LOOPBACK_HOST}; keep it loopback)`,
  PROXY_PORT: `proxy listener port (${PORTS.proxy})`,
  PROXY_SOCKET: 'listen on this Unix socket instead of PROXY_HOST:PROXY_PORT (Docker mode)',
  ADMIN_HOST: 'admin listener address (0.0.0.0)',
  ADMIN_PORT: `admin listener port (${PORTS.proxyAdmin}): /healthz /readyz /metrics /rules`,
  ALLOWED_DOMAINS: 'comma-separated hosts allowed as plain tunnels, e.g. api.example.com,*.example.org:8443',
  RULES_FILE: 'YAML/JSON rules file (a list of rules or { rules: [...] })',
  CREDENTIALS_FILE: 'YAML/JSON file declaring the credentials rules may name: name → header or aws-sigv4, value source (env/file), the hosts it may be sent to',
  POD_TOKEN_PUBLIC_KEYS_FILE: 'PEM file of Ed25519 public keys checking per-pod /rules tokens (purpose rules, subject RULES_SCOPE) and signed rule sets from Redis',
  RULES_TOKEN_FILE: 'development only (npm start): static bearer tokens for /rules, one per line ("id:token" or a bare token); refused with POD_TOKEN_PUBLIC_KEYS_FILE',
  RULES_ALLOW_UNAUTHENTICATED: 'development only: allow /rules writes when no token file is set (false)',
  RULES_SCOPE: 'this pod\'s UID (downward API): the subject of its /rules tokens and the key of its rule set in Redis (required with REDIS_URL or POD_TOKEN_PUBLIC_KEYS_FILE)',
  RULES_STATE_DIR: 'directory on a sidecar-only memory-backed volume where the enforced rule sets and their version survive a sidecar restart (unset: a restarted sidecar starts empty at version 0)',
  RULES_REDIS_PREFIX: 'Redis key prefix of the rule sets and their channels (workspace-sandbox:rules)',
  REDIS_URL: 'redis:// or rediss:// (TLS) URL where the backend publishes signed rule sets; no password in it (default: no Redis)',
  REDIS_USERNAME: `Redis ACL user the proxy reads as (${REDIS_RULES_READER_USER}, read-only)`,
  REDIS_PASSWORD_FILE: 'file holding the Redis user\'s password (a Secret mounted into the sidecar only)',
  REDIS_CA_FILE: 'CA bundle that signs the Redis server certificate (rediss://); default: the system trust store',
  STATIC_HOSTS: 'name=address pairs answered without DNS, e.g. api.internal.test=10.1.2.3 (answers are still SSRF-checked)',
  CA_DIR: `where the CA certificate and bundle are written (${SHARED_DIR})`,
  PROXY_STATE_DIR: 'the sidecar\'s own memory-backed volume; the CA certificate and key kept there are reused after a restart (unset: a new CA per start)',
  CA_VALIDITY_SECONDS: `lifetime of the per-pod CA (${CA_VALIDITY_MS / 1000}); the webhook sets the Pod's activeDeadlineSeconds plus 1800`,
  UPSTREAM_CA_FILE: 'extra CA bundle trusted for upstream TLS (tests, private CAs)',
  GATEWAY_URL: 'egress gateway, http://address:port: every upstream connection goes through it by CONNECT (unset: direct, e.g. npm start)',
  GATEWAY_TOKEN_FILE: 'projected ServiceAccount token presented to the gateway (required with GATEWAY_URL)',
  SIGNING_BODY_CAP_BYTES: 'largest request body buffered for AWS SigV4 signing; larger → 413 (10485760)',
  POD_NAME: 'pod name written in every audit line',
  LOG_LEVEL: 'fatal|error|warn|info|debug|trace|silent (info)',
  MEMORY_LIMIT_BYTES: 'the sidecar container\'s memory limit (268435456 = 256 MiB); the tunnel cap, the signing budget and shedding (503 above 90% resident) derive from it: set it from the container\'s limits.memory',
  MAX_TUNNELS: 'open tunnels plus plain-HTTP requests in flight; more get 429 (default: derived from MEMORY_LIMIT_BYTES, 256 at 256 MiB; a set value may only be lower)',
  IDLE_TIMEOUT_MS: 'close tunnels and connections idle this long (300000)',
  HEADER_TIMEOUT_MS: 'time allowed for a client to send request headers (10000)',
  UPSTREAM_CONNECT_TIMEOUT_MS: 'upstream TCP connect timeout (10000)',
  DRAIN_TIMEOUT_MS: 'graceful shutdown limit (10000)',
};

const fileSchema = z.union([z.array(z.unknown()), z.object({ rules: z.array(z.unknown()) }).strict()]);

function loadRulesFile(path: string, reserved: ReadonlySet<string>, catalog: CredentialCatalog): RuleSpec[] {
  const raw = readConfigFile(path);
  const shaped = fileSchema.safeParse(raw);
  if (!shaped.success) {
    throw new ConfigError(`rules file ${path}`, [{ field: '(file)', value: undefined, message: 'must be a list of rules or { rules: [...] }' }]);
  }
  const list = Array.isArray(shaped.data) ? shaped.data : shaped.data.rules;
  try {
    return validateRules(list, `rules file ${path}`, reserved, catalog);
  } catch (err) {
    if (err instanceof RuleSetError) throw new ConfigError(`rules file ${path}`, err.problems.map((p) => ({ ...p, field: `rules${p.field.startsWith('[') ? '' : '.'}${p.field}` })));
    throw err;
  }
}

/** Parses `source` (default: the process environment) into the proxy's frozen config. */
export function loadProxyConfig(source: Record<string, string | undefined> = process.env): ProxyConfig {
  const parsed = parseConfig(proxyEnvSchema, pickEnv(proxyEnvSchema, source), 'proxy environment');
  let envRules: RuleSpec[];
  try {
    envRules = rulesFromAllowedDomains(parsed.ALLOWED_DOMAINS);
  } catch (err) {
    if (err instanceof RuleSetError) {
      throw new ConfigError('proxy environment', err.problems.map((p) => ({ field: 'ALLOWED_DOMAINS', value: parsed.ALLOWED_DOMAINS.join(','), message: p.message })));
    }
    throw err;
  }
  const credentials = parsed.CREDENTIALS_FILE ? loadCredentialCatalog(parsed.CREDENTIALS_FILE) : EMPTY_CATALOG;
  const fileRules = parsed.RULES_FILE ? loadRulesFile(parsed.RULES_FILE, new Set(envRules.map((r) => r.id)), credentials) : [];
  return Object.freeze({
    ...parsed,
    staticRules: Object.freeze({ env: Object.freeze(envRules), file: Object.freeze(fileRules) }),
    rulesScope: parsed.RULES_SCOPE ?? 'local',
    credentials,
    memory: memoryBudget(parsed.MEMORY_LIMIT_BYTES, parsed.MAX_TUNNELS),
  });
}

/**
 * The environment `{ env: NAME }` credential sources read (declared in CREDENTIALS_FILE). Handed to
 * the interceptor here so that no other module reads process.env.
 */
export function credentialEnvironment(source: Record<string, string | undefined> = process.env): Readonly<Record<string, string | undefined>> {
  return source;
}
