// inject(pod, config): the whole injection as one pure function over the raw JSON Pod.
//
// The Pod is never decoded into typed models: fields a model doesn't know would be dropped
// (istio/istio#49054, `restartPolicy` on init containers). The HTTP layer diffs the raw original
// against the result.
//
// Re-injection is "strip what we injected, then render": the status annotation says a Pod was
// injected before, so our sidecar, volumes and mounts are removed and rendered again from the
// current config (credentials the old sidecar holds are carried over). Everything else is
// "absent → default, equal or stricter → kept, weaker → denied", which is a fixpoint by
// construction: inject(inject(p)) equals inject(p) byte for byte.
//
// The Pod arrives as the API server delivers it (defaults applied, built-in admission plugins run),
// and after a webhook's patch the built-in mutating plugins run again; see DELIVERED below.
import {
  ANNOTATION_ALLOWED_DOMAINS, ANNOTATION_RUNTIME, ANNOTATION_STATUS, ANNOTATION_TTL_SECONDS, CA_BUNDLE_FILE, CA_CERT_FILE,
  ANNOTATION_DO_NOT_DISRUPT, CA_VALIDITY_MARGIN_SECONDS, CONTAINER_PROXY, GATEWAY_TOKEN_DIR, LABEL_WORKSPACE, POD_TOKEN_PUBLIC_KEYS_DIR, PORTS, PROXY_ADMIN_PATHS, AGENT_PATHS,
  PROXY_ENV, PROXY_URL, SHARED_DIR, SIDECAR_STATE_DIR, UPSTREAM_CA_DIR, WORKSPACE_ROOT,
} from '../lib/constants.ts';
import { VERSION } from '../lib/version.ts';
import { configHash, DOMAIN_PATTERN, type InjectionConfig } from './config.ts';
import { parseQuantity } from '../lib/quantity.ts';
import { checkPodShape, isObject, type Json } from './shape.ts';

export type { Json } from './shape.ts';

import {
  checkContainer, checkPod, containerPaths, KUBE_API_ACCESS_PREFIX, SIDECAR_ONLY_VOLUMES, RESERVED_VOLUMES, VOLUME_GATEWAY_TOKEN, VOLUME_POD_TOKEN_KEYS,
  VOLUME_RULES_TOKEN, VOLUME_SHARED, VOLUME_SIDECAR_STATE, VOLUME_TMP, VOLUME_UPSTREAM_CA, VOLUME_WORKSPACE, Violations, type Violation,
} from './rules.ts';

export {
  KUBE_API_ACCESS_PREFIX, RESERVED_VOLUMES, VOLUME_GATEWAY_TOKEN, VOLUME_RULES_TOKEN, VOLUME_SHARED, VOLUME_TMP, VOLUME_WORKSPACE, type Violation,
} from './rules.ts';
export const RULES_TOKEN_DIR = '/var/run/secrets/workspace-sandbox/rules-token';
export const TMP_DIR = '/tmp';
/** The proxy always listens here; NO_PROXY starts with these. */
const LOOPBACK_NO_PROXY = ['localhost', '127.0.0.1', '::1'];
/** NO_PROXY (and no_proxy) of every container but the sidecar. */
export const noProxyOf = (config: InjectionConfig): string => [...LOOPBACK_NO_PROXY, ...config.workspace.noProxy].join(',');

export interface Injected {
  denied?: false;
  pod: Json;
  /** AdmissionResponse warnings (shown by kubectl). */
  warnings: string[];
  /** What was done, for `inject --explain` and logs. */
  notes: string[];
  /** Set when the Pod was left alone on purpose (e.g. a namespace this webhook does not serve). */
  skipped?: string;
  /** Set when the Pod runs under a fallback RuntimeClass (counted by the webhook's metrics). */
  runtimeFallback?: string;
}

export interface Denied {
  denied: true;
  /** 400: not a usable Pod; 403: a Pod this product refuses to run. */
  code: 400 | 403;
  message: string;
  violations: Violation[];
}

export type InjectResult = Injected | Denied;

export interface InjectOptions {
  /** The request's namespace (a Pod's own metadata.namespace may be empty at admission). */
  namespace?: string;
  /** Skip the namespace fence (the offline CLI renders any manifest). */
  ignoreNamespaces?: boolean;
  /** Version written into the status annotation. */
  version?: string;
}

/** What the status annotation records: enough to strip and re-render an injected Pod. */
export interface InjectionStatus {
  version: string;
  configHash: string;
  runtimeClassName: string | null;
  /** Present when derived from the config or the ttl annotation rather than the Pod's own value. */
  activeDeadlineSeconds?: number;
  initContainers: string[];
  workspaceContainer: string;
  containers: string[];
  volumes: string[];
  credentials: string[];
  /** The workspace container's probes this webhook set (the creator's own are kept). */
  probes: string[];
  /** The fallback RuntimeClass the runtime annotation selected instead of the config's (runc instead of gVisor). */
  runtimeFallback?: string;
}

export function readStatus(pod: unknown): Partial<InjectionStatus> | undefined {
  const raw = isObject(pod) && isObject(pod.metadata) && isObject(pod.metadata.annotations)
    ? pod.metadata.annotations[ANNOTATION_STATUS] : undefined;
  if (typeof raw !== 'string') return undefined;
  try {
    const parsed: unknown = JSON.parse(raw);
    return isObject(parsed) ? parsed as Partial<InjectionStatus> : {};
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------------------------------------

type Container = Json & { name: string };

const asArray = (v: unknown): Json[] => (Array.isArray(v) ? v as Json[] : []);
const normPath = (p: string): string => (p.length > 1 ? p.replace(/\/+$/, '') : p);
const normCap = (c: string): string => c.toUpperCase().replace(/^CAP_/, '');

function envValue(name: string, value: string): Json {
  return { name, value };
}

function setFieldEnv(container: Json, name: string, fieldPath: string): void {
  container.env = [...(container.env as Json[]).filter((e) => e.name !== name), fieldEnv(name, fieldPath)];
}

/**
 * The container's own memory limit, in bytes, from the downward API: under gVisor the programs
 * cannot read it from a cgroup of their own (the host sees only the Pod's), and they size their
 * buffers, caps and shedding from it.
 */
function memoryLimitEnv(name: string, containerName: string): Json {
  // divisor written out, so a re-invocation finds exactly what it wrote.
  return { name, valueFrom: { resourceFieldRef: { containerName, resource: 'limits.memory', divisor: '1' } } };
}

function fieldEnv(name: string, fieldPath: string): Json {
  // apiVersion is what the API server defaults; writing it keeps a re-invocation patch empty.
  return { name, valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } } };
}

function httpProbe(path: string, port: number, extra: Json): Json {
  // Every field the API server would default is written out (timeoutSeconds, successThreshold,
  // failureThreshold, scheme), so the Pod we return equals the Pod the API server stores.
  return { httpGet: { path, port, scheme: 'HTTP' }, ...extra };
}

// Probe timing. A cold start waits on these (docs/operations.md, "Cold start"), so no probe has an
// initial delay: a startup probe polls every second from the container's start, and the kubelet
// holds readiness and liveness back until it has passed (then runs readiness at once), so a delay
// would only add to the time to Ready.
const startupTiming = (budgetSeconds: number): Json => ({ periodSeconds: 1, timeoutSeconds: 1, successThreshold: 1, failureThreshold: budgetSeconds });
// Should the kubelet's immediate readiness run after startup miss, the next one is at most 2 s away.
const READINESS_TIMING: Json = { periodSeconds: 2, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 };
// A wedged agent is restarted after a minute without an answer; a busy one (its workspace using all
// of the container's CPU) has 5 s to answer each probe.
const LIVENESS_TIMING: Json = { periodSeconds: 10, timeoutSeconds: 5, successThreshold: 1, failureThreshold: 6 };

/** The workspace's probes, all on the agent's unauthenticated /health. */
function workspaceProbes(config: InjectionConfig): Record<'startupProbe' | 'readinessProbe' | 'livenessProbe', Json> {
  const probe = (timing: Json) => httpProbe(AGENT_PATHS.health, PORTS.agent, timing);
  return {
    startupProbe: probe(startupTiming(config.workspace.startupTimeoutSeconds)),
    readinessProbe: probe(READINESS_TIMING),
    livenessProbe: probe(LIVENESS_TIMING),
  };
}

/** Sets `name` to `value`; later entries of the same name go (Kubernetes uses the last one). */
function setEnv(container: Json, name: string, value: string): void {
  const env = container.env as Json[];
  const i = env.findIndex((e) => e.name === name);
  if (i < 0) return void env.push(envValue(name, value));
  env[i] = envValue(name, value);
  container.env = env.filter((e, j) => j <= i || e.name !== name);
}

class Context extends Violations {
  readonly warnings: string[] = [];
  readonly notes: string[] = [];
}

/**
 * Injects the workspace sidecar and hardening into `input` (never modified). Returns the new Pod
 * and warnings, or a denial naming every problem. Never throws on any input.
 */
export function inject(input: unknown, config: InjectionConfig, options: InjectOptions = {}): InjectResult {
  const shape = checkPodShape(input);
  if (shape.length > 0) {
    const violations = shape.map((p): Violation => ({ field: p.field, rule: 'pod-shape', message: `${p.field}: ${p.message}` }));
    return { denied: true, code: 400, message: `not a valid Pod: ${violations.map((v) => v.message).join('; ')}`, violations };
  }
  // Copy on write: every object on a path we change is copied, everything else is shared with
  // the input (never modified). Besides saving a deep clone, shared subtrees are skipped by the
  // HTTP layer's diff (patch.ts, like fast-json-patch compare, stops at identical references).
  const src = input as Json;
  const pod: Json = { ...src, metadata: { ...(isObject(src.metadata) ? src.metadata : {}) }, spec: { ...(src.spec as Json) } };
  const metadata = pod.metadata as Json;
  const namespace = options.namespace || (metadata.namespace as string | undefined) || '';
  if (!options.ignoreNamespaces && config.namespaces.length > 0 && !config.namespaces.includes(namespace)) {
    return { pod: src, warnings: [], notes: [`namespace ${JSON.stringify(namespace)} is not served`], skipped: 'namespace not served' };
  }
  const ctx = new Context();
  const spec = pod.spec as Json;
  if (Array.isArray(spec.containers)) spec.containers = (spec.containers as Json[]).map((c) => ({ ...c }));
  if (Array.isArray(spec.initContainers)) spec.initContainers = (spec.initContainers as Json[]).map((c) => ({ ...c }));
  const annotations = (metadata.annotations ?? {}) as Record<string, string>;
  const status = readStatus(pod);
  const wasInjected = status !== undefined;

  // --- 1. The rules (rules.ts), over the Pod as sent. ------------------------------------------
  checkPod(src, config, { wasInjected }, ctx);

  // --- 2. Strip what a previous injection added. ---------------------------------------------------
  let oldSidecar: Json | undefined;
  const initContainers = asArray(spec.initContainers).filter((c) => {
    if (c.name !== CONTAINER_PROXY || !wasInjected) return true;
    oldSidecar = c;
    return false;
  });
  const volumes = asArray(spec.volumes).filter((v) => {
    const name = v.name as string;
    if (RESERVED_VOLUMES.has(name)) return false;
    // DELIVERED: the ServiceAccount admission plugin has added the API token as a projected volume
    // mounted into every container. The workspace must not hold it (and automountServiceAccountToken
    // false, set below, keeps the re-run plugin from adding it back).
    if (name.startsWith(KUBE_API_ACCESS_PREFIX) && isObject(v.projected)) {
      ctx.notes.push(`removed the service account token volume ${name} and its mounts`);
      return false;
    }
    return true;
  });
  const volumeByName = new Map(volumes.map((v) => [v.name as string, v]));
  const dropMounts = (c: Json) => {
    if (!Array.isArray(c.volumeMounts)) return;
    c.volumeMounts = (c.volumeMounts as Json[]).filter((m) => {
      const name = m.name as string;
      return !RESERVED_VOLUMES.has(name) && !(name.startsWith(KUBE_API_ACCESS_PREFIX) && !volumeByName.has(name));
    });
  };

  const appContainers = [...initContainers, ...asArray(spec.containers)] as Container[];
  const containerPath = containerPaths(spec);
  const podSc = (isObject(spec.securityContext) ? spec.securityContext : {}) as Json;
  for (const c of appContainers) dropMounts(c);

  // --- 3. Which container is the workspace. ------------------------------------------------------
  const mainContainers = asArray(spec.containers) as Container[];
  const workspace = mainContainers.find((c) => c.name === config.workspaceContainerName)
    ?? (mainContainers.length === 1 ? mainContainers[0] : undefined);
  if (!workspace) {
    ctx.deny('spec.containers', 'no-workspace-container', `the Pod has ${mainContainers.length} containers and none is named ${JSON.stringify(config.workspaceContainerName)}: name the workspace container so`);
  }

  // --- 4. Annotations the creator may set. ---------------------------------------------------------
  const wantedRuntime = resolveRuntime(ctx, annotations, config);
  const ttl = parseTtl(ctx, annotations);
  const extraDomains = parseDomainsAnnotation(ctx, annotations, config);

  // --- 5. Every container but the sidecar: rules, credentials out, proxy in. ----------------------
  const moved = new Map<string, Json>();
  const movedMounts = new Map<string, Json>();
  const copied = new Map<string, Json>();
  const moveEnv = new Set(config.credentials.moveEnv);
  const copyEnv = new Set(config.credentials.copyEnv);
  const moveVolumes = new Set(config.credentials.moveVolumes);
  // Credentials a previous injection moved into the old sidecar stay with the new one.
  if (oldSidecar) {
    for (const e of asArray(oldSidecar.env)) if (moveEnv.has(e.name as string)) moved.set(e.name as string, e);
    for (const m of asArray(oldSidecar.volumeMounts)) if (moveVolumes.has(m.name as string) && volumeByName.has(m.name as string)) movedMounts.set(m.name as string, m);
  }

  const noProxy = noProxyOf(config);
  const setProbes: string[] = [];
  let usesTmp = false;
  let usesWorkspaceVolume = false;
  for (const c of appContainers) {
    const isWorkspace = c === workspace;
    hardenContainer(c, podSc, config);
    // Env: credentials move, the proxy and its CA come in.
    const env: Json[] = [];
    for (const e of asArray(c.env)) {
      const name = e.name as string;
      if (moveEnv.has(name)) {
        if (!moved.has(name)) moved.set(name, e);
        ctx.notes.push(`moved env ${name} from container ${c.name} to ${CONTAINER_PROXY}`);
        continue;
      }
      if (copyEnv.has(name) && !copied.has(name)) copied.set(name, e);
      env.push(e);
    }
    c.env = env;
    for (const [name, value] of [
      ['HTTP_PROXY', PROXY_URL], ['HTTPS_PROXY', PROXY_URL], ['http_proxy', PROXY_URL], ['https_proxy', PROXY_URL],
      ['NO_PROXY', noProxy], ['no_proxy', noProxy],
      ['SSL_CERT_FILE', `${SHARED_DIR}/${CA_BUNDLE_FILE}`], ['REQUESTS_CA_BUNDLE', `${SHARED_DIR}/${CA_BUNDLE_FILE}`],
      ['CURL_CA_BUNDLE', `${SHARED_DIR}/${CA_BUNDLE_FILE}`], ['AWS_CA_BUNDLE', `${SHARED_DIR}/${CA_BUNDLE_FILE}`],
      ['GIT_SSL_CAINFO', `${SHARED_DIR}/${CA_BUNDLE_FILE}`], ['NODE_EXTRA_CA_CERTS', `${SHARED_DIR}/${CA_CERT_FILE}`],
      ...(isWorkspace ? [['AGENT_LISTEN_MODE', 'tcp'], ['AGENT_PORT', String(PORTS.agent)]] : []),
      ...(isWorkspace && config.podTokens ? [['AGENT_TOKEN_PUBLIC_KEYS_FILE', `${POD_TOKEN_PUBLIC_KEYS_DIR}/${config.podTokens.key}`]] : []),
    ] as const) setEnv(c, name, value);
    // The agent accepts only tokens minted for its own Pod UID.
    if (isWorkspace && config.podTokens) setFieldEnv(c, 'AGENT_POD_UID', 'metadata.uid');
    if (isWorkspace) c.env = [...(c.env as Json[]).filter((e) => e.name !== 'AGENT_MEMORY_LIMIT_BYTES'), memoryLimitEnv('AGENT_MEMORY_LIMIT_BYTES', c.name as string)];

    // Mounts: credential tokens move, the shared dir (read-only) and scratch space come in.
    const mounts: Json[] = [];
    for (const m of asArray(c.volumeMounts)) {
      const name = m.name as string;
      if (moveVolumes.has(name) && volumeByName.has(name)) {
        if (!movedMounts.has(name)) movedMounts.set(name, m);
        ctx.notes.push(`moved the mount of volume ${name} from container ${c.name} to ${CONTAINER_PROXY}`);
        continue;
      }
      mounts.push(m);
    }
    const mountedAt = (dir: string) => mounts.some((m) => normPath(m.mountPath as string) === dir);
    mounts.push({ name: VOLUME_SHARED, mountPath: SHARED_DIR, readOnly: true });
    if (!mountedAt(TMP_DIR)) {
      mounts.push({ name: VOLUME_TMP, mountPath: TMP_DIR });
      usesTmp = true;
    }
    if (isWorkspace && config.podTokens) mounts.push({ name: VOLUME_POD_TOKEN_KEYS, mountPath: POD_TOKEN_PUBLIC_KEYS_DIR, readOnly: true });
    if (isWorkspace && !mountedAt(WORKSPACE_ROOT)) {
      mounts.push({ name: VOLUME_WORKSPACE, mountPath: WORKSPACE_ROOT });
      usesWorkspaceVolume = true;
    }
    c.volumeMounts = mounts;

    applyResources(ctx, c, containerPath.get(c)!, config);
    if (isWorkspace) {
      const ports = (c.ports = Array.isArray(c.ports) ? [...c.ports as Json[]] : []) as Json[];
      if (!ports.some((p) => p.containerPort === PORTS.agent)) {
        const named = ports.some((p) => p.name === 'agent');
        ports.push({ ...(named ? {} : { name: 'agent' }), containerPort: PORTS.agent, protocol: 'TCP' });
      }
      // Probes a previous injection set are re-rendered from this config; the creator's are kept.
      const previous = new Set(status?.workspaceContainer === c.name && Array.isArray(status.probes) ? status.probes : []);
      for (const [field, probe] of Object.entries(workspaceProbes(config))) {
        if (previous.has(field)) delete c[field];
        if (c[field] != null) continue;
        c[field] = probe;
        setProbes.push(field);
      }
    }
  }

  const runtimeChange = decideRuntime(ctx, spec, wantedRuntime, status);

  // --- 6. The sidecar. ---------------------------------------------------------------------------
  const deadline = applyDeadline(ctx, spec, ttl, status, config);
  const sidecar = renderSidecar(ctx, config, {
    podDeadlineSeconds: spec.activeDeadlineSeconds as number,
    domains: [...new Set([...config.allowedDomains.domains, ...extraDomains])],
    copied: [...copied.values()],
    moved: [...moved.values()],
    movedMounts: [...movedMounts.values()],
  });

  if (ctx.list.length > 0) {
    const v = ctx.list;
    const message = v.length === 1 ? v[0]!.message : `${v.length} problems: ${v.map((x) => x.message).join('; ')}`;
    return { denied: true, code: 403, message, violations: v };
  }

  // --- 7. Pod level. -----------------------------------------------------------------------------
  spec.initContainers = [sidecar, ...initContainers];
  const added: Json[] = [{ name: VOLUME_SHARED, emptyDir: {} }];
  if (usesWorkspaceVolume) added.push({ name: VOLUME_WORKSPACE, emptyDir: { sizeLimit: config.workspace.workspaceSizeLimit } });
  if (usesTmp) added.push({ name: VOLUME_TMP, emptyDir: { medium: 'Memory', sizeLimit: config.workspace.tmpSizeLimit } });
  const token = config.sidecar.rulesTokenSecret;
  if (token) added.push({ name: VOLUME_RULES_TOKEN, secret: { secretName: token.secretName, items: [{ key: token.key, path: token.key }], defaultMode: 0o644 } });
  // The gateway token is the pod's way out: projected for the sidecar alone (no other container mounts it).
  const gw = config.gateway;
  if (gw) added.push({ name: VOLUME_GATEWAY_TOKEN, projected: { defaultMode: 0o440, sources: [{ serviceAccountToken: { audience: gw.audience, expirationSeconds: gw.expirationSeconds, path: 'token' } }] } });
  added.push({ name: VOLUME_SIDECAR_STATE, emptyDir: { medium: 'Memory', sizeLimit: config.sidecar.stateSizeLimit } });
  const keys = config.podTokens;
  if (keys) added.push({ name: VOLUME_POD_TOKEN_KEYS, configMap: { name: keys.publicKeysConfigMap, items: [{ key: keys.key, path: keys.key }], defaultMode: 0o644 } });
  const upstreamCa = config.sidecar.upstreamCaBundle;
  if (upstreamCa) added.push({ name: VOLUME_UPSTREAM_CA, configMap: { name: upstreamCa.configMapName, items: [{ key: upstreamCa.key, path: upstreamCa.key }], defaultMode: 0o644 } });
  spec.volumes = [...volumes, ...added];

  if (runtimeChange !== undefined) {
    if (runtimeChange === null) delete spec.runtimeClassName;
    else spec.runtimeClassName = runtimeChange;
    // Never set spec.overhead: the RuntimeClass admission plugin owns it and, when it re-runs after
    // our patch, rejects a Pod whose overhead differs from the new class's. A stale value goes.
    delete spec.overhead;
    ctx.notes.push(runtimeChange === null ? 'runtimeClassName removed' : `runtimeClassName set to ${runtimeChange}`);
  }
  if (config.priorityClassName !== null && spec.priorityClassName !== config.priorityClassName) {
    // DELIVERED: the Priority admission plugin has resolved the old class into spec.priority (and
    // spec.preemptionPolicy). When it re-runs after our patch it rejects a Pod whose priority
    // differs from the new class's value, so the computed fields go with the old name.
    spec.priorityClassName = config.priorityClassName;
    delete spec.priority;
    delete spec.preemptionPolicy;
    ctx.notes.push(`priorityClassName set to ${config.priorityClassName}`);
  }
  spec.automountServiceAccountToken = false;
  // The API server defaults this to true; service env vars would tell the workspace about every Service.
  spec.enableServiceLinks = false;
  const podSecurity = (spec.securityContext = isObject(spec.securityContext) ? { ...spec.securityContext } : {}) as Json;
  if (podSecurity.fsGroup === undefined) podSecurity.fsGroup = config.workspace.fsGroup;

  metadata.labels = { ...(isObject(metadata.labels) ? metadata.labels : {}), [LABEL_WORKSPACE]: 'true' };
  const finalStatus: InjectionStatus = {
    version: options.version ?? VERSION,
    configHash: configHash(config),
    runtimeClassName: (spec.runtimeClassName as string | undefined) ?? null,
    ...(deadline === undefined ? {} : { activeDeadlineSeconds: deadline }),
    initContainers: [CONTAINER_PROXY],
    workspaceContainer: workspace!.name,
    containers: appContainers.map((c) => c.name),
    volumes: added.map((v) => v.name as string),
    credentials: [...moved.keys(), ...movedMounts.keys()],
    probes: setProbes,
  };
  const runtimeFallback = wantedRuntime !== null && wantedRuntime !== config.runtime.runtimeClassName ? wantedRuntime : undefined;
  if (runtimeFallback !== undefined) {
    finalStatus.runtimeFallback = runtimeFallback;
    ctx.warnings.push(`this Pod runs under the fallback RuntimeClass ${runtimeFallback}, not ${config.runtime.runtimeClassName ?? '(none)'}`);
  }
  // A workspace is a live conversation with its files in an emptyDir: Karpenter must not evict it to repack nodes.
  metadata.annotations = { ...annotations, [ANNOTATION_DO_NOT_DISRUPT]: 'true', [ANNOTATION_STATUS]: JSON.stringify(finalStatus) };
  return { pod, warnings: ctx.warnings, notes: ctx.notes, ...(runtimeFallback === undefined ? {} : { runtimeFallback }) };
}

/**
 * UPDATE and the pods/ephemeralcontainers subresource, for a Pod this webhook injected. After
 * creation a Pod's spec is immutable but for container images, a lower activeDeadlineSeconds and
 * new ephemeral containers (`kubectl debug`): a new ephemeral container gets the same rules and
 * security defaults as any other (it shares the Pod's network namespace, so it reaches the proxy's
 * ports), and the sidecar's image may change only to the config's.
 */
export function injectUpdate(input: unknown, old: unknown, config: InjectionConfig, options: InjectOptions = {}): InjectResult {
  const shape = checkPodShape(input);
  if (shape.length > 0) {
    const violations = shape.map((p): Violation => ({ field: p.field, rule: 'pod-shape', message: `${p.field}: ${p.message}` }));
    return { denied: true, code: 400, message: `not a valid Pod: ${violations.map((v) => v.message).join('; ')}`, violations };
  }
  const src = input as Json;
  const namespace = options.namespace || ((isObject(src.metadata) ? src.metadata.namespace : undefined) as string | undefined) || '';
  if (!options.ignoreNamespaces && config.namespaces.length > 0 && !config.namespaces.includes(namespace)) {
    return { pod: src, warnings: [], notes: [], skipped: 'namespace not served' };
  }
  if (readStatus(src) === undefined) return { pod: src, warnings: [], notes: [], skipped: 'not injected by this webhook' };
  const ctx = new Context();
  const spec = { ...(src.spec as Json) };
  const pod: Json = { ...src, spec };
  const oldSpec = (isObject(old) && isObject(old.spec) ? old.spec : {}) as Json;
  const sidecar = asArray(spec.initContainers)[0];
  const oldSidecar = asArray(oldSpec.initContainers)[0];
  if (sidecar?.name === CONTAINER_PROXY && oldSidecar?.name === CONTAINER_PROXY && sidecar.image !== oldSidecar.image && sidecar.image !== config.sidecar.image) {
    ctx.deny('spec.initContainers[0].image', 'sidecar-image', `the ${CONTAINER_PROXY} sidecar's image may change only to ${config.sidecar.image}`);
  }
  const existing = new Set(asArray(oldSpec.ephemeralContainers).map((c) => c.name));
  const volumeByName = new Map(asArray(spec.volumes).map((v) => [v.name as string, v]));
  const podSc = (isObject(spec.securityContext) ? spec.securityContext : {}) as Json;
  const moveEnv = new Set(config.credentials.moveEnv);
  spec.ephemeralContainers = asArray(spec.ephemeralContainers).map((c, i) => {
    if (existing.has(c.name)) return c;
    const path = `spec.ephemeralContainers[${i}]`;
    const copy = { ...c };
    checkContainer(ctx, copy, path, volumeByName, config);
    asArray(copy.volumeMounts).forEach((m, j) => {
      if (SIDECAR_ONLY_VOLUMES.includes(m.name as string)) ctx.deny(`${path}.volumeMounts[${j}]`, 'reserved-volume', `${m.name as string} is the sidecar's alone`);
      if (m.name === VOLUME_SHARED && m.readOnly !== true) ctx.deny(`${path}.volumeMounts[${j}].readOnly`, 'reserved-volume', `${VOLUME_SHARED} is read-only outside the sidecar`);
    });
    asArray(copy.env).forEach((e, j) => {
      if (moveEnv.has(e.name as string)) ctx.deny(`${path}.env[${j}]`, 'credential-env', `${e.name as string} carries a credential; only the sidecar may hold it`);
    });
    hardenContainer(copy, podSc, config);
    ctx.notes.push(`hardened ephemeral container ${c.name as string}`);
    return copy;
  });
  if (asArray(src.spec && (src.spec as Json).ephemeralContainers).length === 0) delete spec.ephemeralContainers;
  if (ctx.list.length > 0) {
    const v = ctx.list;
    return { denied: true, code: 403, message: v.length === 1 ? v[0]!.message : `${v.length} problems: ${v.map((x) => x.message).join('; ')}`, violations: v };
  }
  return { pod, warnings: ctx.warnings, notes: ctx.notes };
}

// ---------------------------------------------------------------------------------------------

/** Absent security values → the defaults (the rules have refused weaker ones already). */
function hardenContainer(c: Json, podSc: Json, config: InjectionConfig): void {
  const sc = (c.securityContext = isObject(c.securityContext) ? { ...c.securityContext } : {}) as Json;
  // Absent → the default. A Pod-level value (already checked) is inherited instead.
  inheritOrDefault(sc, podSc, 'runAsUser', config.workspace.runAsUser);
  inheritOrDefault(sc, podSc, 'runAsGroup', config.workspace.runAsGroup);
  inheritOrDefault(sc, podSc, 'runAsNonRoot', true);
  if (sc.readOnlyRootFilesystem === undefined) sc.readOnlyRootFilesystem = true;
  if (sc.allowPrivilegeEscalation === undefined) sc.allowPrivilegeEscalation = false;
  const caps = (sc.capabilities = isObject(sc.capabilities) ? { ...sc.capabilities } : {}) as Json;
  if (!Array.isArray(caps.drop)) caps.drop = ['ALL'];
  else if (!(caps.drop as string[]).some((d) => normCap(d) === 'ALL')) caps.drop = [...(caps.drop as string[]), 'ALL'];
  // An empty list is not written: the API server drops it (omitempty) and a reinvocation would add it back.
  if (!Array.isArray(caps.add) && config.workspace.capabilities.length > 0) caps.add = [...config.workspace.capabilities];
  inheritOrDefault(sc, podSc, 'seccompProfile', { type: 'RuntimeDefault' });
}

/** Defaults that a Pod-level securityContext value also satisfies. */
function inheritOrDefault(sc: Json, podSc: Json, key: string, value: unknown): void {
  if (sc[key] === undefined && podSc[key] === undefined) sc[key] = value;
}

function applyResources(ctx: Context, c: Json, path: string, config: InjectionConfig): void {
  const res = (c.resources = isObject(c.resources) ? { ...c.resources } : {}) as Json;
  const requests = (isObject(res.requests) ? { ...res.requests } : {}) as Record<string, string>;
  const limits = (isObject(res.limits) ? { ...res.limits } : {}) as Record<string, string>;
  const defaults = config.workspace.resources;
  for (const key of ['cpu', 'memory'] as const) {
    if (limits[key] === undefined) {
      // A request above the default limit raises the limit to the request (request <= limit).
      const req = requests[key];
      limits[key] = req !== undefined && parseQuantity(req)! > parseQuantity(defaults.limits[key])! ? req : defaults.limits[key];
    }
    if (requests[key] === undefined) {
      const lim = limits[key]!;
      requests[key] = parseQuantity(defaults.requests[key])! > parseQuantity(lim)! ? lim : defaults.requests[key];
    }
  }
  for (const [key, max] of Object.entries(config.workspace.maxResources)) {
    const maxValue = parseQuantity(max)!;
    for (const [kind, list] of [['limits', limits], ['requests', requests]] as const) {
      const v = list[key];
      if (v !== undefined && parseQuantity(v)! > maxValue) {
        list[key] = max;
        ctx.warnings.push(`${path}.resources.${kind}.${key} ${v} is above the maximum ${max}: clamped to ${max}`);
      }
    }
  }
  res.requests = requests;
  res.limits = limits;
}

function resolveRuntime(ctx: Context, annotations: Record<string, string>, config: InjectionConfig): string | null {
  const wanted = config.runtime.runtimeClassName;
  const asked = annotations[ANNOTATION_RUNTIME];
  if (asked === undefined || asked === wanted) return wanted;
  if (config.runtime.allowedFallbacks.includes(asked)) {
    ctx.notes.push(`runtime ${asked} selected by the ${ANNOTATION_RUNTIME} annotation`);
    return asked;
  }
  const allowed = [wanted, ...config.runtime.allowedFallbacks].filter((x) => x !== null).join(', ');
  ctx.deny(`metadata.annotations[${ANNOTATION_RUNTIME}]`, 'runtime-class', `RuntimeClass ${JSON.stringify(asked)} is not allowed (allowed: ${allowed || 'none'})`);
  return wanted;
}

/** The runtimeClassName to write (null: remove it), or undefined to leave the field alone. */
function decideRuntime(ctx: Context, spec: Json, wanted: string | null, status: Partial<InjectionStatus> | undefined): string | null | undefined {
  let current = spec.runtimeClassName as string | undefined;
  // A RuntimeClass we set before is ours to change.
  if (current !== undefined && status?.runtimeClassName === current) current = undefined;
  if (current !== undefined && current !== wanted) {
    ctx.deny('spec.runtimeClassName', 'runtime-class', `${JSON.stringify(current)} is not allowed: workspaces run under ${JSON.stringify(wanted)} (select a fallback with the ${ANNOTATION_RUNTIME} annotation)`);
    return undefined;
  }
  return spec.runtimeClassName === (wanted ?? undefined) ? undefined : wanted;
}

function parseTtl(ctx: Context, annotations: Record<string, string>): number | undefined {
  const raw = annotations[ANNOTATION_TTL_SECONDS];
  if (raw === undefined) return undefined;
  if (!/^[1-9][0-9]{0,9}$/.test(raw)) {
    ctx.deny(`metadata.annotations[${ANNOTATION_TTL_SECONDS}]`, 'ttl', `${JSON.stringify(raw)} is not a positive number of seconds`);
    return undefined;
  }
  return Number(raw);
}

/** Sets spec.activeDeadlineSeconds; returns it when it was derived from the config or annotation (ours to re-render). */
function applyDeadline(ctx: Context, spec: Json, ttl: number | undefined, status: Partial<InjectionStatus> | undefined, config: InjectionConfig): number | undefined {
  const { default: def, max } = config.activeDeadlineSeconds;
  let own = spec.activeDeadlineSeconds as number | undefined;
  if (own !== undefined && status?.activeDeadlineSeconds === own) own = undefined; // ours: re-render
  let deadline = own ?? def;
  if (ttl !== undefined) deadline = own === undefined ? ttl : Math.min(own, ttl);
  if (deadline > max) {
    ctx.warnings.push(`activeDeadlineSeconds ${deadline} is above the maximum ${max}: clamped to ${max}`);
    deadline = max;
  }
  spec.activeDeadlineSeconds = deadline;
  // A value derived from the Pod's own is kept as the Pod's own on the next pass (a fixpoint either way).
  return own === undefined ? deadline : undefined;
}

function parseDomainsAnnotation(ctx: Context, annotations: Record<string, string>, config: InjectionConfig): string[] {
  const raw = annotations[ANNOTATION_ALLOWED_DOMAINS];
  if (raw === undefined) return [];
  if (!config.allowedDomains.allowAnnotation) {
    ctx.warnings.push(`annotation ${ANNOTATION_ALLOWED_DOMAINS} ignored: this cluster does not allow Pods to extend the allowed domains`);
    return [];
  }
  const domains = raw.split(',').map((d) => d.trim()).filter(Boolean);
  for (const d of domains) {
    if (!DOMAIN_PATTERN.test(d)) ctx.deny(`metadata.annotations[${ANNOTATION_ALLOWED_DOMAINS}]`, 'allowed-domains', `${JSON.stringify(d)} is not a host name, *.suffix or host:port`);
  }
  return domains;
}

interface SidecarInputs {
  podDeadlineSeconds: number;
  domains: string[];
  copied: Json[];
  moved: Json[];
  movedMounts: Json[];
}

function renderSidecar(ctx: Context, config: InjectionConfig, inputs: SidecarInputs): Json {
  const sc = config.sidecar;
  const env: Json[] = [
    // An empty value is left out: the API server drops empty strings (omitempty), so writing one
    // would make every reinvocation add it back.
    ...(inputs.domains.length > 0 ? [envValue('ALLOWED_DOMAINS', inputs.domains.join(','))] : []),
    fieldEnv('POD_NAME', 'metadata.name'),
    fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
    fieldEnv('POD_UID', 'metadata.uid'),
    // The pod's rule set and its per-pod /rules tokens are keyed by the Pod UID.
    fieldEnv('RULES_SCOPE', 'metadata.uid'),
    // The sidecar's own state volume: its CA and its rule sets survive a sidecar restart there.
    envValue('PROXY_STATE_DIR', SIDECAR_STATE_DIR),
    envValue(PROXY_ENV.rulesStateDir, SIDECAR_STATE_DIR),
    envValue('CA_VALIDITY_SECONDS', String(inputs.podDeadlineSeconds + CA_VALIDITY_MARGIN_SECONDS)),
    // The proxy derives its tunnel cap and shedding threshold from its memory limit.
    memoryLimitEnv('MEMORY_LIMIT_BYTES', CONTAINER_PROXY),
  ];
  if (config.podTokens) env.push(envValue(PROXY_ENV.podTokenPublicKeysFile, `${POD_TOKEN_PUBLIC_KEYS_DIR}/${config.podTokens.key}`));
  if (sc.redisUrl !== null) env.push(envValue('REDIS_URL', sc.redisUrl));
  if (sc.upstreamCaBundle) env.push(envValue('UPSTREAM_CA_FILE', `${UPSTREAM_CA_DIR}/${sc.upstreamCaBundle.key}`));
  if (sc.rulesTokenSecret) env.push(envValue('RULES_TOKEN_FILE', `${RULES_TOKEN_DIR}/${sc.rulesTokenSecret.key}`));
  if (config.gateway) env.push(envValue('GATEWAY_URL', config.gateway.url), envValue('GATEWAY_TOKEN_FILE', `${GATEWAY_TOKEN_DIR}/token`));
  const names = new Set(env.map((e) => e.name));
  for (const e of [...sc.env.map((x) => ({ name: x.name, value: x.value })), ...inputs.copied, ...inputs.moved]) {
    if (names.has(e.name)) continue;
    names.add(e.name);
    env.push(JSON.parse(JSON.stringify(e)) as Json); // a copy: the Pod must not share objects between containers
  }
  const mounts: Json[] = [{ name: VOLUME_SHARED, mountPath: SHARED_DIR }, { name: VOLUME_SIDECAR_STATE, mountPath: SIDECAR_STATE_DIR }];
  if (sc.rulesTokenSecret) mounts.push({ name: VOLUME_RULES_TOKEN, mountPath: RULES_TOKEN_DIR, readOnly: true });
  if (config.gateway) mounts.push({ name: VOLUME_GATEWAY_TOKEN, mountPath: GATEWAY_TOKEN_DIR, readOnly: true });
  if (config.podTokens) mounts.push({ name: VOLUME_POD_TOKEN_KEYS, mountPath: POD_TOKEN_PUBLIC_KEYS_DIR, readOnly: true });
  if (sc.upstreamCaBundle) mounts.push({ name: VOLUME_UPSTREAM_CA, mountPath: UPSTREAM_CA_DIR, readOnly: true });
  for (const m of inputs.movedMounts) {
    if (mounts.some((x) => normPath(x.mountPath as string) === normPath(m.mountPath as string))) {
      ctx.deny(`volumeMounts[${JSON.stringify(m.name)}].mountPath`, 'reserved-path', `${m.mountPath} is used by the credential proxy`);
      continue;
    }
    mounts.push({ ...m });
  }
  const probe = (extra: Json) => httpProbe(PROXY_ADMIN_PATHS.readyz, PORTS.proxyAdmin, extra);
  return {
    name: CONTAINER_PROXY,
    image: sc.image,
    imagePullPolicy: sc.imagePullPolicy,
    // A native sidecar (KEP-753): starts before, and outlives, the workspace.
    restartPolicy: 'Always',
    ports: [
      { name: 'proxy', containerPort: PORTS.proxy, protocol: 'TCP' },
      { name: 'admin', containerPort: PORTS.proxyAdmin, protocol: 'TCP' },
    ],
    env,
    resources: {
      requests: { cpu: sc.resources.requests.cpu, memory: sc.resources.requests.memory },
      limits: { cpu: sc.resources.limits.cpu, memory: sc.resources.limits.memory },
    },
    volumeMounts: mounts,
    // The kubelet starts the next container only after the sidecar's startupProbe passes, and the
    // proxy turns ready only after it has written its CA into the shared dir: the workspace starts
    // within a second of the CA being there. A sidecar's readiness counts toward the Pod's Ready.
    startupProbe: probe(startupTiming(sc.startupTimeoutSeconds)),
    readinessProbe: probe(READINESS_TIMING),
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    securityContext: {
      runAsUser: sc.runAsUser,
      runAsGroup: sc.runAsUser,
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}
