// The webhook's configuration, the only place it reads process.env:
//  - the environment (ports, files, log level, drain timeout), and
//  - the injection config file (a ConfigMap mount): what `inject` puts into a Pod.
// The file schema is strict (unknown fields are errors: a typo must not silently fall back to a
// default) and every field has a secure default, so a ConfigMap names only what differs.
// webhook/injection-config.example.yaml documents every field.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import {
  ConfigError, deepFreeze, env, fieldName, parseConfig, pickEnv, problemsFromZod, readConfigFile, type ConfigProblem, type DeepReadonly,
} from '../lib/config.ts';
import {
  CA_VALIDITY_MARGIN_SECONDS, GATEWAY_AUDIENCE, MAX_CA_VALIDITY_SECONDS, POD_TOKEN_PUBLIC_KEYS_CONFIGMAP, POD_TOKEN_PUBLIC_KEYS_KEY, PORTS,
  PRIORITY_CLASS_WORKSPACE, RULES_TOKEN_KEY, RUNTIME_CLASS_GVISOR,
} from '../lib/constants.ts';
import { VERSION } from '../lib/version.ts';
import { isQuantity } from '../lib/quantity.ts';

// ---------------------------------------------------------------------------------------------
// Environment

export const envSchema = z.object({
  WEBHOOK_HOST: env.string().default('0.0.0.0'),
  WEBHOOK_PORT: env.port().default(PORTS.webhook),
  METRICS_HOST: env.string().default('0.0.0.0'),
  METRICS_PORT: env.port().default(PORTS.webhookMetrics),
  WEBHOOK_CONFIG_FILE: env.string().optional(),
  TLS_CERT_FILE: env.string().optional(),
  TLS_KEY_FILE: env.string().optional(),
  LOG_LEVEL: env.logLevel().default('info'),
  /** In-flight reviews get this long to finish on SIGTERM (the API server's own timeout is 10 s by default). */
  DRAIN_TIMEOUT_MS: env.int(0, 600_000).default(10_000),
  /** Fallback poll of the config and TLS files; fs.watch usually reacts first. */
  RELOAD_POLL_INTERVAL_MS: env.int(50, 3_600_000).default(10_000),
}).superRefine((c, ctx) => {
  if ((c.TLS_CERT_FILE === undefined) !== (c.TLS_KEY_FILE === undefined)) {
    const missing = c.TLS_CERT_FILE === undefined ? 'TLS_CERT_FILE' : 'TLS_KEY_FILE';
    ctx.addIssue({ code: 'custom', path: [missing], message: 'TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither for a dev self-signed pair' });
  }
});

export const ENV_HELP: Record<string, string> = {
  WEBHOOK_HOST: 'address of the HTTPS listener (0.0.0.0)',
  WEBHOOK_PORT: `HTTPS port of /mutate, /healthz, /readyz (${PORTS.webhook})`,
  METRICS_HOST: 'address of the metrics listener (0.0.0.0)',
  METRICS_PORT: `plain HTTP port of /metrics (${PORTS.webhookMetrics})`,
  WEBHOOK_CONFIG_FILE: 'injection config YAML (a ConfigMap mount), hot-reloaded; unset: built-in defaults',
  TLS_CERT_FILE: 'serving certificate (cert-manager Secret mount), reloaded on rotation; unset with TLS_KEY_FILE: dev self-signed pair',
  TLS_KEY_FILE: 'serving private key',
  LOG_LEVEL: 'fatal, error, warn, info, debug, trace or silent (info)',
  DRAIN_TIMEOUT_MS: 'how long in-flight reviews may finish on SIGTERM (10000)',
  RELOAD_POLL_INTERVAL_MS: 'fallback poll of the config and TLS files (10000)',
};

export type WebhookEnv = DeepReadonly<z.output<typeof envSchema>>;

// ---------------------------------------------------------------------------------------------
// Injection config file

const quantity = z.union([z.string(), z.number()])
  .transform((v) => String(v))
  .refine(isQuantity, { message: 'must be a Kubernetes quantity such as 500m, 2 or 2Gi' });

const cpuMemory = z.strictObject({ cpu: quantity, memory: quantity });
const resourceList = z.record(z.string().min(1), quantity);

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dnsLabel = z.string().max(63).regex(DNS_LABEL, 'must be a DNS label (lowercase letters, digits, "-")');
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const dnsSubdomain = z.string().max(253).regex(DNS_SUBDOMAIN, 'must be a DNS subdomain (lowercase letters, digits, "-", ".")');

/** `host`, `*.host` or either with `:port`: the credential proxy's ALLOWED_DOMAINS entry syntax. */
export const DOMAIN_PATTERN = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$/;
const domain = z.string().regex(DOMAIN_PATTERN, 'must be a host name, *.suffix, optionally with :port (lowercase)');

const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
const envName = z.string().regex(ENV_NAME, 'must be an environment variable name');

/** Linux capability names as Kubernetes takes them (without the CAP_ prefix). */
const capability = z.string().regex(/^[A-Z][A-Z_]*$/, 'must be a capability name such as CHOWN (no CAP_ prefix)')
  .refine((c) => !c.startsWith('CAP_'), 'write capabilities without the CAP_ prefix')
  .refine((c) => c !== 'ALL', 'ALL cannot be allowed');

const uid = z.number().int().min(1, 'must be a non-root id (>= 1)').max(2_147_483_647);

export const DEFAULT_PROXY_IMAGE = `workspace-sandbox/credential-proxy:${VERSION}`;

export const injectionConfigSchema = z.strictObject({
  /** Namespaces served, a second fence behind the MutatingWebhookConfiguration's namespaceSelector; empty: every namespace sent. */
  namespaces: z.array(dnsLabel).default([]),
  /** The container that runs the workspace when a Pod has several; a single-container Pod's container is the workspace. */
  workspaceContainerName: dnsLabel.default('workspace'),
  runtime: z.strictObject({
    /** RuntimeClass set on every Pod; null: none (local clusters without gVisor). */
    runtimeClassName: dnsSubdomain.nullable().default(RUNTIME_CLASS_GVISOR),
    /**
     * RuntimeClasses the `workspace-sandbox.io/runtime` annotation may select instead. None by
     * default: a fallback (runc) exists only where an overlay says so, and every use of it is
     * visible (status annotation, admission_runtime_fallbacks_total).
     */
    allowedFallbacks: z.array(dnsSubdomain).default([]),
  }).prefault({}),
  /** PriorityClass set on every Pod; null: leave the Pod's own. */
  priorityClassName: dnsSubdomain.nullable().default(PRIORITY_CLASS_WORKSPACE),
  /**
   * The ServiceAccount every workspace Pod must run as: the subject of the Pod Identity association
   * whose credentials the sidecar signs with (EKS overlays: workspace-sandbox-workspace). Refused,
   * not set: the ServiceAccount admission and EKS's Pod Identity webhook act on the Pod as it
   * arrives, so the backend creates it with this name (the SDK does). null: not checked.
   */
  workspaceServiceAccount: dnsSubdomain.nullable().default(null),
  activeDeadlineSeconds: z.strictObject({
    default: z.number().int().min(1).default(14_400),
    /** Neither the Pod nor the `workspace-sandbox.io/ttl-seconds` annotation may go above this. */
    max: z.number().int().min(1).default(86_400),
  }).prefault({}).refine((d) => d.default <= d.max, { message: 'default must be <= max', path: ['default'] })
    // The sidecar's CA must outlive the Pod (CA_VALIDITY_SECONDS = deadline + margin), and the proxy makes none longer.
    .refine((d) => d.max + CA_VALIDITY_MARGIN_SECONDS <= MAX_CA_VALIDITY_SECONDS, {
      message: `must leave ${CA_VALIDITY_MARGIN_SECONDS} s under the proxy's longest CA (${MAX_CA_VALIDITY_SECONDS} s)`, path: ['max'],
    }),
  allowedDomains: z.strictObject({
    /** ALLOWED_DOMAINS of every sidecar. */
    domains: z.array(domain).default([]),
    /** Whether the `workspace-sandbox.io/allowed-domains` annotation may add domains (it can never remove any). */
    allowAnnotation: z.boolean().default(false),
  }).prefault({}),
  sidecar: z.strictObject({
    image: z.string().min(1).default(DEFAULT_PROXY_IMAGE),
    imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).default('IfNotPresent'),
    runAsUser: uid.default(1337),
    // Under gVisor the host enforces only the Pod's (sandbox's) memory, so this limit and the
    // workspace's are one budget there; the request covers the proxy's measured RSS inside gVisor
    // (about 150 MiB) so the scheduler reserves it (docs/operations.md, "Memory under gVisor").
    resources: z.strictObject({ requests: cpuMemory, limits: cpuMemory }).default({
      requests: { cpu: '100m', memory: '192Mi' },
      limits: { cpu: '500m', memory: '256Mi' },
    }),
    /** Seconds the sidecar may take to turn ready (its startupProbe) before the kubelet restarts it. */
    startupTimeoutSeconds: z.number().int().min(1).max(3600).default(60),
    /** REDIS_URL of the proxy's shared rules store; null: rules in memory. */
    redisUrl: z.string().regex(/^rediss?:\/\/\S+$/, 'must be a redis:// or rediss:// URL').nullable().default(null),
    /**
     * Secret holding a static /rules bearer token, mounted into the sidecar only: development
     * clusters without per-pod tokens. null (the default): /rules takes per-pod tokens (podTokens).
     */
    rulesTokenSecret: z.strictObject({ secretName: dnsSubdomain, key: z.string().min(1).default(RULES_TOKEN_KEY) })
      .nullable().default(null),
    /**
     * A CA bundle (ConfigMap key) the proxy trusts for upstreams besides the system roots: a
     * corporate API or a TLS-inspecting egress. Mounted into the sidecar alone (UPSTREAM_CA_FILE).
     */
    upstreamCaBundle: z.strictObject({ configMapName: dnsSubdomain, key: z.string().min(1).default('ca-bundle.crt') }).nullable().default(null),
    /** Size of the sidecar's memory-backed state volume (its CA key pair and rule set survive a sidecar restart there). */
    stateSizeLimit: quantity.default('16Mi'),
    /** Extra plain env of the sidecar (e.g. LOG_LEVEL). */
    env: z.array(z.strictObject({ name: envName, value: z.string() })).default([]),
  }).prefault({}),
  gateway: z.strictObject({
    url: z.string().regex(/^http:\/\/(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):\d{1,5}$/, 'must be http://<IP>:<port>: workspace pods have no DNS, so the gateway Service is named by its ClusterIP')
      .describe('`GATEWAY_URL` of every sidecar: the egress gateway Service by its ClusterIP (`http://10.100.0.53:3128`); workspace pods have no DNS egress.'),
    audience: z.string().min(1).default(GATEWAY_AUDIENCE).describe('Audience of the projected ServiceAccount token mounted into the sidecar alone; the gateway\'s `GATEWAY_AUDIENCE`.'),
    expirationSeconds: z.number().int().min(600).max(86_400).default(3600).describe('Lifetime of that token; the kubelet rotates it before it expires.'),
  }).nullable().default(null).describe('The egress gateway every sidecar connection goes through; null: sidecars connect directly (no enforced egress).'),
  workspace: z.strictObject({
    runAsUser: uid.default(1000),
    runAsGroup: uid.default(1000),
    fsGroup: uid.default(1000),
    /**
     * Capabilities a container may add (after drop ALL); also what is added when it names none.
     * None by default: to a non-root process with allowPrivilegeEscalation false they give nothing
     * (no ambient capabilities), and any added one fails Pod Security `restricted`.
     */
    capabilities: z.array(capability).default([]),
    /** Set on containers that name none; the Pod's own values are kept. */
    resources: z.strictObject({ requests: cpuMemory, limits: cpuMemory }).default({
      requests: { cpu: '500m', memory: '512Mi' },
      limits: { cpu: '2', memory: '2Gi' },
    }),
    /** Requests and limits above these are clamped (with a warning). */
    maxResources: resourceList.default({ cpu: '4', memory: '8Gi' }),
    /** NO_PROXY entries after localhost,127.0.0.1,::1. */
    noProxy: z.array(z.string().regex(/^[^,\s]+$/, 'must be one NO_PROXY entry (no commas or spaces)')).default([]),
    workspaceSizeLimit: quantity.default('5Gi'),
    tmpSizeLimit: quantity.default('512Mi'),
    /** Seconds the agent may take to answer /health (the workspace's startupProbe) before the kubelet restarts the container. */
    startupTimeoutSeconds: z.number().int().min(1).max(3600).default(60),
  }).prefault({}),
  /**
   * Per-pod tokens (lib/pod-token.ts): the ConfigMap of public keys that verify them, mounted
   * read-only into the workspace (the agent requires a token signed for its own Pod UID) and the
   * sidecar (/rules). null: no per-pod tokens (local clusters only; the agent is then open).
   */
  podTokens: z.strictObject({
    publicKeysConfigMap: dnsSubdomain.default(POD_TOKEN_PUBLIC_KEYS_CONFIGMAP),
    key: z.string().min(1).default(POD_TOKEN_PUBLIC_KEYS_KEY),
  }).nullable().default({ publicKeysConfigMap: POD_TOKEN_PUBLIC_KEYS_CONFIGMAP, key: POD_TOKEN_PUBLIC_KEYS_KEY }),
  credentials: z.strictObject({
    /** Env names that carry cloud credentials: moved from workspace containers to the sidecar. */
    moveEnv: z.array(envName).default([
      'AWS_CONTAINER_CREDENTIALS_FULL_URI', 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE', // EKS Pod Identity
      'AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_SESSION_NAME', // IRSA
      'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', // static keys
    ]),
    /** Env names the sidecar needs too (e.g. for SigV4 region): copied, also left in place. */
    copyEnv: z.array(envName).default(['AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_STS_REGIONAL_ENDPOINTS']),
    /** Volumes that carry credentials (token projections): their mounts move to the sidecar. */
    moveVolumes: z.array(dnsLabel).default(['eks-pod-identity-token', 'aws-iam-token']),
  }).prefault({}),
});

export type InjectionConfig = DeepReadonly<z.output<typeof injectionConfigSchema>>;

/** Validates an injection config object; throws one ConfigError listing every problem. */
export function parseInjectionConfig(obj: unknown, source = 'injection config'): InjectionConfig {
  const input = obj ?? {};
  const result = injectionConfigSchema.safeParse(input);
  if (!result.success) throw new ConfigError(source, problemsWithUnknownKeys(result.error, input));
  const config = deepFreeze(result.data) as InjectionConfig;
  const problems = crossCheck(config);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/** zod reports unknown keys once per object; name each one as its own field so a typo is obvious. */
function problemsWithUnknownKeys(error: z.ZodError, input: unknown): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const known = problemsFromZod(error, input);
  error.issues.forEach((issue, i) => {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const path = [...issue.path, key];
        let value: unknown = input;
        for (const k of path) value = (value as Record<PropertyKey, unknown> | undefined)?.[k];
        problems.push({ field: fieldName(path), value, message: 'unknown field (see webhook/injection-config.example.yaml)' });
      }
    } else {
      problems.push(known[i]!);
    }
  });
  return problems;
}

function crossCheck(c: InjectionConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const moved = new Set(c.credentials.moveEnv);
  for (const [i, name] of c.credentials.copyEnv.entries()) {
    if (moved.has(name)) problems.push({ field: `credentials.copyEnv[${i}]`, value: name, message: 'is also in credentials.moveEnv' });
  }
  // The proxy refuses a static /rules token next to per-pod ones, and Redis rule sets without the keys that verify them.
  if (c.sidecar.rulesTokenSecret !== null && c.podTokens !== null) {
    problems.push({ field: 'sidecar.rulesTokenSecret', value: c.sidecar.rulesTokenSecret, message: 'is for clusters without per-pod tokens: set podTokens to null, or this to null' });
  }
  if (c.sidecar.redisUrl !== null && c.podTokens === null) {
    problems.push({ field: 'sidecar.redisUrl', value: c.sidecar.redisUrl, message: 'needs podTokens: the proxy uses rule sets from Redis only when their signature verifies' });
  }
  if (c.runtime.runtimeClassName !== null && c.runtime.allowedFallbacks.includes(c.runtime.runtimeClassName)) {
    problems.push({ field: 'runtime.allowedFallbacks', value: c.runtime.allowedFallbacks, message: 'must not repeat runtime.runtimeClassName' });
  }
  return problems;
}

/** Reads and validates the injection config file (YAML). */
export function loadInjectionConfigFile(path: string): InjectionConfig {
  return parseInjectionConfig(readConfigFile(path), `injection config ${path}`);
}

/** The built-in config: what `npm start` and `inject` without --config use. */
export const DEFAULT_INJECTION_CONFIG: InjectionConfig = parseInjectionConfig({}, 'built-in injection config');

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const hashes = new WeakMap<object, string>();

/** Short content hash of a validated config (key order and comments don't matter). */
export function configHash(config: InjectionConfig): string {
  let h = hashes.get(config);
  if (h === undefined) {
    h = createHash('sha256').update(canonicalJson(config)).digest('hex').slice(0, 16);
    hashes.set(config, h);
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// The program's config: environment plus the initial injection config.

export interface WebhookConfig {
  env: WebhookEnv;
  injection: InjectionConfig;
}

/** Reads the environment and the injection config file; throws a ConfigError listing every problem. */
export function loadWebhookConfig(source: Record<string, string | undefined> = process.env): WebhookConfig {
  const e = parseConfig(envSchema, pickEnv(envSchema, source), 'webhook environment');
  const injection = e.WEBHOOK_CONFIG_FILE ? loadInjectionConfigFile(e.WEBHOOK_CONFIG_FILE) : DEFAULT_INJECTION_CONFIG;
  return deepFreeze({ env: e, injection });
}
