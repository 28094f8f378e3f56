// The workspace SDK's configuration, for a backend service that drives workspaces: environment
// variables → one validated, frozen object, every problem listed at once. CONTAINER_BACKEND is the
// one setting that switches between Kubernetes and Docker (the plan's rollback path).
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, env, parseConfig, pickEnv, type DeepReadonly } from '../lib/config.ts';
import { NAMESPACES } from '../lib/constants.ts';
import { parseQuantity } from '../lib/quantity.ts';

const quantity = (what: string) => env.string().refine((q) => (parseQuantity(q) ?? 0) > 0, `must be a positive ${what} quantity`);
const LABEL_VALUE = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

export const sdkEnvObject = z.object({
  CONTAINER_BACKEND: z.enum(['kubernetes', 'docker'], { message: 'must be kubernetes or docker' }).default('docker'),
  WORKSPACE_OWNER: env.string().regex(LABEL_VALUE, 'must be a label value (63 letters, digits, ".", "_", "-")').default('backend'),
  WORKSPACE_IMAGE: env.string().default('workspace-sandbox/workspace:dev'),
  WORKSPACE_DEFAULT_CPU: quantity('CPU').default('1'),
  WORKSPACE_DEFAULT_MEMORY: quantity('memory').default('1Gi'),
  WORKSPACE_MAX_CPU: quantity('CPU').default('4'),
  WORKSPACE_MAX_MEMORY: quantity('memory').default('8Gi'),
  WORKSPACE_READY_TIMEOUT_MS: env.int(1_000, 3_600_000).default(120_000),
  WORKSPACE_TTL_SECONDS: env.int(1, 30 * 86_400).default(86_400),
  WORKSPACE_IDLE_SECONDS: env.int(1, 30 * 86_400).default(3_600),
  KUBE_NAMESPACE: env.string().default(NAMESPACES.sandboxes),
  POD_TOKEN_PRIVATE_KEY_FILE: env.string().optional(),
  RULES_TOKEN_FILE: env.string().optional(),
  AGENT_TOKEN_FILE: env.string().optional(),
  DOCKER_HOST: env.string().regex(/^unix:\/\//, 'must be a unix:// socket (the Docker mode runs on the engine\'s host)').optional(),
  DOCKER_RUNTIME: z.enum(['auto', 'runc', 'runsc'], { message: 'must be auto, runc or runsc' }).default('auto'),
  DOCKER_STATE_DIR: env.string().refine((p) => p.startsWith('/'), 'must be an absolute path').default('/var/lib/workspace-sandbox/docker'),
  REDIS_URL: env.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
  POOL_MIN: env.int(0, 10_000).default(0),
  POOL_MAX: env.int(0, 10_000).default(0),
  GC_INTERVAL_MS: env.int(1_000, 3_600_000).default(30_000),
  GC_ORPHAN_GRACE_MS: env.int(0, 86_400_000).default(600_000),
  LOG_LEVEL: env.logLevel().default('info'),
});

export const sdkEnvSchema = sdkEnvObject.superRefine((c, ctx) => {
  if (c.POOL_MIN > c.POOL_MAX) ctx.addIssue({ code: 'custom', path: ['POOL_MAX'], message: `must be >= POOL_MIN (${c.POOL_MIN})` });
  if (c.POOL_MAX > 0 && !c.REDIS_URL) ctx.addIssue({ code: 'custom', path: ['REDIS_URL'], message: 'is required for the warm pool (POOL_MAX > 0)' });
  if (parseQuantity(c.WORKSPACE_DEFAULT_CPU)! > (parseQuantity(c.WORKSPACE_MAX_CPU) ?? Infinity)) ctx.addIssue({ code: 'custom', path: ['WORKSPACE_DEFAULT_CPU'], message: 'must be <= WORKSPACE_MAX_CPU' });
  if (parseQuantity(c.WORKSPACE_DEFAULT_MEMORY)! > (parseQuantity(c.WORKSPACE_MAX_MEMORY) ?? Infinity)) ctx.addIssue({ code: 'custom', path: ['WORKSPACE_DEFAULT_MEMORY'], message: 'must be <= WORKSPACE_MAX_MEMORY' });
});

export const SDK_ENV_HELP: Readonly<Record<keyof z.output<typeof sdkEnvObject>, string>> = {
  CONTAINER_BACKEND: 'kubernetes (plain Pods the webhook hardens) or docker (local and rollback mode)',
  WORKSPACE_OWNER: 'owner label of every workspace this backend makes; list() and the collector see only these',
  WORKSPACE_IMAGE: 'image of new workspaces (it must run the agent as its entrypoint in Docker mode)',
  WORKSPACE_DEFAULT_CPU: 'CPU of a workspace that asks for none (Kubernetes quantity)',
  WORKSPACE_DEFAULT_MEMORY: 'memory of a workspace that asks for none (Kubernetes quantity)',
  WORKSPACE_MAX_CPU: 'largest CPU a workspace may ask for; keep it within the webhook\'s limits',
  WORKSPACE_MAX_MEMORY: 'largest memory a workspace may ask for; keep it within the webhook\'s limits',
  WORKSPACE_READY_TIMEOUT_MS: 'create waits this long for scheduling, image pull and the agent',
  WORKSPACE_TTL_SECONDS: 'default lifetime of a conversation\'s workspace (the collector removes it after)',
  WORKSPACE_IDLE_SECONDS: 'default idle expiry: removed this long after its last exec',
  KUBE_NAMESPACE: 'namespace of workspace Pods (the one with injection enabled)',
  POD_TOKEN_PRIVATE_KEY_FILE: 'Ed25519 signing key (PEM) for per-workspace agent and /rules tokens (Kubernetes)',
  RULES_TOKEN_FILE: 'static /rules token shared by all sidecars, when no signing key is set (older clusters)',
  AGENT_TOKEN_FILE: 'static agent token, when no signing key is set',
  DOCKER_HOST: 'unix:// socket of the Docker engine (default /var/run/docker.sock)',
  DOCKER_RUNTIME: 'auto (runsc when the engine has it), runc or runsc',
  DOCKER_STATE_DIR: 'host directory of the per-workspace sockets, tokens and proxy state',
  REDIS_URL: 'Redis of the warm pool, the conversation map and the collector\'s lease',
  POOL_MIN: 'ready workspaces the replenisher keeps (0: no pool)',
  POOL_MAX: 'most workspaces in the pool at once (ready, warming, being claimed)',
  GC_INTERVAL_MS: 'time between the collector\'s sweeps',
  GC_ORPHAN_GRACE_MS: 'an unrecorded workspace younger than this is a create in progress, not an orphan',
  LOG_LEVEL: 'fatal, error, warn, info, debug, trace or silent',
};

export interface SdkConfig extends DeepReadonly<z.output<typeof sdkEnvObject>> {
  /** Content of POD_TOKEN_PRIVATE_KEY_FILE. */
  readonly podTokenPrivateKey: string | undefined;
  readonly rulesToken: string | undefined;
  readonly agentToken: string | undefined;
}

function readSecret(field: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  try {
    const text = readFileSync(path, 'utf8').trim();
    if (text === '') throw new Error('empty');
    return text;
  } catch (err) {
    throw new ConfigError('workspace SDK configuration', [{ field, value: path, message: `cannot read: ${(err as Error).message}` }]);
  }
}

export function loadSdkConfig(source: Record<string, string | undefined> = process.env): SdkConfig {
  const c = parseConfig(sdkEnvSchema, pickEnv(sdkEnvObject, source), 'workspace SDK configuration');
  return Object.freeze({
    ...c,
    podTokenPrivateKey: readSecret('POD_TOKEN_PRIVATE_KEY_FILE', c.POD_TOKEN_PRIVATE_KEY_FILE),
    // A rules token file may hold `id:token` lines (the proxy's format): the first token is ours.
    rulesToken: readSecret('RULES_TOKEN_FILE', c.RULES_TOKEN_FILE)?.split('\n')[0]?.replace(/^[^:\s]+:/, ''),
    agentToken: readSecret('AGENT_TOKEN_FILE', c.AGENT_TOKEN_FILE),
  });
}
