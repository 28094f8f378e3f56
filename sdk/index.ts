// The workspace SDK: one interface (backend.ts), a Kubernetes and a Docker implementation chosen by
// CONTAINER_BACKEND, a Redis warm pool and a collector that work with either.
//
//   const config = loadSdkConfig();
//   const backend = await createBackend(config);
//   const redis = new Redis(config.REDIS_URL);
//   const pool = createPool(config, backend, redis);   pool.start();
//   const gc = createCollector(config, pool);            gc.start();
//   const { workspace } = await pool.acquire('conv-42', { allowedDomains: ['api.github.com'] });
//   const { stdout } = await pool.exec(workspace.id, ['ls', '-la']);
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { WorkspaceBackend } from './backend.ts';
import type { SdkConfig } from './config.ts';
import { GarbageCollector } from './gc.ts';
import { WarmPool } from './pool.ts';
import { PodTokenSource, StaticTokenSource } from './tokens.ts';

export * from './backend.ts';
export { WorkspaceError, isWorkspaceError, WORKSPACE_ERROR_STATUS, type WorkspaceErrorCode } from './errors.ts';
export { loadSdkConfig, type SdkConfig } from './config.ts';
export { WarmPool, type AcquireOptions, type AcquireResult } from './pool.ts';
export { GarbageCollector, type SweepResult } from './gc.ts';

export interface SdkDeps {
  logger?: Logger;
  metrics?: Registry;
  /** Docker mode: more environment for the workspaces' proxies (what their CREDENTIALS_FILE reads). */
  proxyEnv?: Record<string, string>;
}

/** The backend CONTAINER_BACKEND names; the other one's client library is never loaded. */
export async function createBackend(config: SdkConfig, deps: SdkDeps = {}): Promise<WorkspaceBackend> {
  const resources = {
    defaultResources: { cpu: config.WORKSPACE_DEFAULT_CPU, memory: config.WORKSPACE_DEFAULT_MEMORY },
    maxResources: { cpu: config.WORKSPACE_MAX_CPU, memory: config.WORKSPACE_MAX_MEMORY },
  };
  if (config.CONTAINER_BACKEND === 'docker') {
    const [{ default: Docker }, { DockerBackend }] = await Promise.all([import('dockerode'), import('./docker-backend.ts')]);
    const docker = new Docker({ socketPath: config.DOCKER_HOST ? config.DOCKER_HOST.slice('unix://'.length) : '/var/run/docker.sock' });
    return new DockerBackend({
      docker, image: config.WORKSPACE_IMAGE, stateDir: config.DOCKER_STATE_DIR, owner: config.WORKSPACE_OWNER,
      runtime: config.DOCKER_RUNTIME, readyTimeoutMs: config.WORKSPACE_READY_TIMEOUT_MS, ...resources,
      proxyEnv: { ...deps.proxyEnv, LOG_LEVEL: config.LOG_LEVEL }, ...(config.podTokenPrivateKey ? { podTokenPrivateKeyPem: config.podTokenPrivateKey } : {}),
    });
  }
  const { KubernetesBackend, KubeConfig } = await import('./kubernetes-backend.ts');
  const kubeConfig = new KubeConfig();
  // In-cluster ServiceAccount, else KUBECONFIG / ~/.kube/config.
  kubeConfig.loadFromDefault();
  const tokens = config.podTokenPrivateKey
    ? new PodTokenSource(config.podTokenPrivateKey)
    : new StaticTokenSource({ ...(config.agentToken ? { agent: config.agentToken } : {}), ...(config.rulesToken ? { rules: config.rulesToken } : {}) });
  return new KubernetesBackend({
    kubeConfig, namespace: config.KUBE_NAMESPACE, owner: config.WORKSPACE_OWNER, image: config.WORKSPACE_IMAGE,
    readyTimeoutMs: config.WORKSPACE_READY_TIMEOUT_MS, tokens, ...resources, ...(deps.logger ? { logger: deps.logger } : {}),
  });
}

export function createPool(config: SdkConfig, backend: WorkspaceBackend, redis: Redis, deps: SdkDeps = {}): WarmPool {
  return new WarmPool({
    backend, redis, owner: config.WORKSPACE_OWNER, min: config.POOL_MIN, max: config.POOL_MAX,
    createTimeoutMs: config.WORKSPACE_READY_TIMEOUT_MS,
    defaults: { ttlSeconds: config.WORKSPACE_TTL_SECONDS, idleSeconds: config.WORKSPACE_IDLE_SECONDS },
    ...(deps.metrics ? { metrics: deps.metrics } : {}), ...(deps.logger ? { logger: deps.logger } : {}),
  });
}

export function createCollector(config: SdkConfig, pool: WarmPool, deps: SdkDeps = {}): GarbageCollector {
  return new GarbageCollector({
    backend: pool.backend, records: pool.records, pools: [pool.name],
    idleSeconds: config.WORKSPACE_IDLE_SECONDS, orphanGraceMs: Math.max(config.GC_ORPHAN_GRACE_MS, config.WORKSPACE_READY_TIMEOUT_MS * 2),
    intervalMs: config.GC_INTERVAL_MS,
    ...(deps.metrics ? { metrics: deps.metrics } : {}), ...(deps.logger ? { logger: deps.logger } : {}),
  });
}
