// The hardening rules of a workspace Pod: one table, two readers.
//  - `inject` refuses a Pod as its creator sent it (`checkPod` returns the violations; rendering
//    lives in inject.ts);
//  - the ValidatingAdmissionPolicy (the guard, guard.ts) checks the Pod as it is finally stored,
//    with the CEL each rule carries, parameterised by the same injection config. It is what
//    stops a Pod when the webhook was bypassed, failed open or drifted.
// Every rule `inject` can deny names its guard counterpart here (test/webhook/rules.test.ts fails
// otherwise): its own CEL, or the rule that covers it and why.
import { CONTAINER_PROXY, GATEWAY_TOKEN_VOLUME, SHARED_DIR } from '../lib/constants.ts';
import type { InjectionConfig } from './config.ts';
import { isObject, type Json } from './shape.ts';

/** Volumes the webhook adds; their names are reserved (a Pod that was not injected may not use them). */
export const VOLUME_SHARED = 'workspace-sandbox-shared';
export const VOLUME_WORKSPACE = 'workspace-sandbox-workspace';
export const VOLUME_TMP = 'workspace-sandbox-tmp';
export const VOLUME_RULES_TOKEN = 'workspace-sandbox-rules-token';
/** The sidecar's projected token for the egress gateway (rendered when the config names a gateway). */
export const VOLUME_GATEWAY_TOKEN = GATEWAY_TOKEN_VOLUME;
/** The sidecar's own state (CA key pair, rule set), memory-backed, mounted into the sidecar alone. */
export const VOLUME_SIDECAR_STATE = 'workspace-sandbox-sidecar-state';
/** Public keys that verify per-pod tokens, mounted into the workspace (agent) and the sidecar (/rules). */
export const VOLUME_POD_TOKEN_KEYS = 'workspace-sandbox-pod-token-keys';
/** A private upstream CA bundle (ConfigMap) for the proxy's UPSTREAM_CA_FILE, mounted into the sidecar alone. */
export const VOLUME_UPSTREAM_CA = 'workspace-sandbox-upstream-ca';
export const RESERVED_VOLUMES: ReadonlySet<string> = new Set([
  VOLUME_SHARED, VOLUME_WORKSPACE, VOLUME_TMP, VOLUME_RULES_TOKEN, VOLUME_GATEWAY_TOKEN, VOLUME_SIDECAR_STATE, VOLUME_POD_TOKEN_KEYS, VOLUME_UPSTREAM_CA,
]);
/** Reserved volumes no container but the sidecar may mount. */
export const SIDECAR_ONLY_VOLUMES: readonly string[] = [VOLUME_RULES_TOKEN, VOLUME_GATEWAY_TOKEN, VOLUME_SIDECAR_STATE, VOLUME_UPSTREAM_CA];

/** The ServiceAccount admission plugin's token volume: `kube-api-access-<5 random chars>`. */
export const KUBE_API_ACCESS_PREFIX = 'kube-api-access-';

export interface Violation {
  /** Kubernetes-style path of the offending field. */
  field: string;
  /** Stable rule id (tests and dashboards match on it); pod-shape: not a usable Pod (400). */
  rule: RuleId | 'pod-shape';
  message: string;
}

/** What the guard knows of the injection config. */
export interface GuardParams {
  allowedRuntimeClasses: string[];
  capabilities: string[];
  sidecarImage: string;
  workspaceContainerName: string;
  credentialEnv: string[];
  proxyUrl: string;
  noProxy: string;
  maxDeadlineSeconds: number;
  /** The sidecar's ALLOWED_DOMAINS must be exactly this; undefined: it may add to `domains` (annotation allowed). */
  exactDomains: string | undefined;
  domains: string[];
  /** AGENT_TOKEN_PUBLIC_KEYS_FILE the workspace container must have; undefined: per-pod tokens off. */
  agentPublicKeysFile: string | undefined;
  /** spec.serviceAccountName every workspace Pod must have; undefined: not checked. */
  serviceAccount: string | undefined;
}

interface GuardRule {
  /** CEL over the stored Pod (`object`, `variables`), true when the Pod complies. */
  cel: (p: GuardParams) => string;
  /** The guard's message: the field and what it must be. */
  message: (p: GuardParams) => string;
}
interface CoveredRule {
  /** The guard rule that refuses what this inject rule refuses, and why that suffices. */
  coveredBy: GuardRuleId;
  why: string;
}

// ---------------------------------------------------------------------------------------------
// CEL building blocks. Containers and init containers share one type (io.k8s.api.core.v1.Container);
// ephemeral containers have their own, which Kubernetes' type checker will not concatenate with
// those, so container rules are written once per list.

const q = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
const list = (xs: readonly string[]): string => `[${xs.map(q).join(', ')}]`;
const has = (path: string): string => {
  const parts = path.split('.');
  return parts.slice(1).map((_, i) => `has(${parts.slice(0, i + 2).join('.')})`).join(' && ');
};
/** A securityContext field of container `c`, or else the Pod's. */
const effective = (c: string, key: string, pred: (v: string) => string, absent: string): string =>
  `(${has(`${c}.securityContext.${key}`)} ? ${pred(`${c}.securityContext.${key}`)} : `
  + `(${has(`object.spec.securityContext.${key}`)} ? ${pred(`object.spec.securityContext.${key}`)} : ${absent}))`;
const allContainers = (pred: string): string =>
  `variables.containers.all(c, ${pred}) && (!has(object.spec.ephemeralContainers) || object.spec.ephemeralContainers.all(c, ${pred}))`;
/** Every container that is not the sidecar: where credentials must never be. */
const untrusted = (pred: string): string =>
  `variables.appContainers.all(c, ${pred}) && (!has(object.spec.ephemeralContainers) || object.spec.ephemeralContainers.all(c, ${pred}))`;
const capName = (v: string): string => `(${v}.upperAscii().startsWith('CAP_') ? ${v}.upperAscii().substring(4) : ${v}.upperAscii())`;
/** Env `name` is present and every entry of that name (the last one wins in Kubernetes) has exactly `value`. */
const envIs = (c: string, name: string, value: string): string =>
  `has(${c}.env) && ${c}.env.exists(e, e.name == ${q(name)}) && ${c}.env.all(e, e.name != ${q(name)} || (has(e.value) && e.value == ${q(value)}))`;

/** Variables the rules read; the guard declares them in this order. */
export const GUARD_VARIABLES = (p: GuardParams): { name: string; expression: string }[] => [
  { name: 'initContainers', expression: 'has(object.spec.initContainers) ? object.spec.initContainers : []' },
  { name: 'containers', expression: 'object.spec.containers + variables.initContainers' },
  { name: 'sidecarPresent', expression: `size(variables.initContainers) > 0 && variables.initContainers[0].name == ${q(CONTAINER_PROXY)}` },
  { name: 'appContainers', expression: `variables.containers.filter(c, c.name != ${q(CONTAINER_PROXY)})` },
  {
    name: 'secretVolumes',
    expression: '!has(object.spec.volumes) ? [] : object.spec.volumes.filter(v, has(v.secret) || has(v.csi) || '
      + '(has(v.projected) && has(v.projected.sources) && v.projected.sources.exists(s, has(s.secret)))).map(v, v.name)',
  },
  {
    name: 'tokenVolumes',
    expression: '!has(object.spec.volumes) ? [] : object.spec.volumes.filter(v, has(v.projected) && has(v.projected.sources) && '
      + 'v.projected.sources.exists(s, has(s.serviceAccountToken))).map(v, v.name)',
  },
  { name: 'credentialEnv', expression: list(p.credentialEnv) },
];

// ---------------------------------------------------------------------------------------------
// The table.

export const GUARD_RULES = {
  'runtime-class': {
    cel: (p) => `has(object.spec.runtimeClassName) && object.spec.runtimeClassName in ${list(p.allowedRuntimeClasses)}`,
    message: (p) => `spec.runtimeClassName must be one of ${p.allowedRuntimeClasses.join(', ')} (was the Pod injected?)`,
  },
  sidecar: {
    cel: () => `variables.sidecarPresent && has(variables.initContainers[0].restartPolicy) && variables.initContainers[0].restartPolicy == 'Always'`
      + ` && size(variables.containers.filter(c, c.name == ${q(CONTAINER_PROXY)})) == 1`,
    message: () => `spec.initContainers[0] must be the ${CONTAINER_PROXY} native sidecar (restartPolicy: Always), the only container of that name`,
  },
  'sidecar-image': {
    cel: (p) => `!variables.sidecarPresent || variables.initContainers[0].image == ${q(p.sidecarImage)}`,
    message: (p) => `spec.initContainers[0].image (the ${CONTAINER_PROXY} sidecar) must be ${p.sidecarImage}`,
  },
  'allowed-domains': {
    cel: (p) => {
      const env = 'variables.initContainers[0].env';
      const entries = `${env}.filter(e, e.name == 'ALLOWED_DOMAINS')`;
      if (p.exactDomains === '') return `!variables.sidecarPresent || !has(${env}) || ${entries}.all(e, !has(e.value) || e.value == '')`;
      if (p.exactDomains !== undefined) return `!variables.sidecarPresent || (${envIs('variables.initContainers[0]', 'ALLOWED_DOMAINS', p.exactDomains)})`;
      return `!variables.sidecarPresent || ${list(p.domains)}.all(d, has(${env}) && ${entries}.all(e, has(e.value) && d in e.value.split(',')))`;
    },
    message: (p) => (p.exactDomains !== undefined
      ? `spec.initContainers[0].env[ALLOWED_DOMAINS] must be ${JSON.stringify(p.exactDomains)} (the injection config's domains)`
      : `spec.initContainers[0].env[ALLOWED_DOMAINS] must include ${p.domains.join(', ')}`),
  },
  'no-workspace-container': {
    cel: (p) => `object.spec.containers.exists(c, c.name == ${q(p.workspaceContainerName)}) || size(object.spec.containers) == 1`,
    message: (p) => `spec.containers must have a container named ${p.workspaceContainerName} (or only one container)`,
  },
  'agent-auth': {
    cel: (p) => (p.agentPublicKeysFile === undefined ? 'true'
      : `object.spec.containers.filter(c, c.name == ${q(p.workspaceContainerName)} || size(object.spec.containers) == 1).all(c, `
        + `(${envIs('c', 'AGENT_TOKEN_PUBLIC_KEYS_FILE', p.agentPublicKeysFile)}) && c.env.exists(e, e.name == 'AGENT_POD_UID')`
        + ` && c.env.all(e, e.name != 'AGENT_POD_UID' || (${has('e.valueFrom.fieldRef.fieldPath')} && e.valueFrom.fieldRef.fieldPath == 'metadata.uid')))`),
    message: (p) => (p.agentPublicKeysFile === undefined ? 'per-pod agent tokens are off in this injection config'
      : `spec.containers[workspace].env: AGENT_TOKEN_PUBLIC_KEYS_FILE must be ${p.agentPublicKeysFile} and AGENT_POD_UID the Pod's metadata.uid (the agent requires per-pod tokens)`),
  },
  'proxy-env': {
    cel: (p) => `variables.appContainers.all(c, ${['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'].map((n) => envIs('c', n, p.proxyUrl))
      .concat(['NO_PROXY', 'no_proxy'].map((n) => envIs('c', n, p.noProxy))).map((x) => `(${x})`).join(' && ')})`,
    message: (p) => `spec.containers[*].env and spec.initContainers[*].env: HTTP_PROXY, HTTPS_PROXY (and lower case) must be ${p.proxyUrl}, NO_PROXY ${p.noProxy}`,
  },
  limits: {
    cel: () => `variables.containers.all(c, has(c.resources) && has(c.resources.limits) && 'cpu' in c.resources.limits && 'memory' in c.resources.limits)`,
    message: () => 'spec.containers[*].resources.limits and spec.initContainers[*].resources.limits must set cpu and memory',
  },
  deadline: {
    cel: (p) => `has(object.spec.activeDeadlineSeconds) && object.spec.activeDeadlineSeconds <= ${p.maxDeadlineSeconds}`,
    message: (p) => `spec.activeDeadlineSeconds must be set, at most ${p.maxDeadlineSeconds}`,
  },
  'run-as-root': {
    cel: () => allContainers(
      effective('c', 'runAsNonRoot', (v) => v, 'false')
      + ` && ${effective('c', 'runAsUser', (v) => `${v} != 0`, 'true')}`
      + ` && ${effective('c', 'runAsGroup', (v) => `${v} != 0`, 'true')}`,
    ) + ` && !(${has('object.spec.securityContext.fsGroup')} && object.spec.securityContext.fsGroup == 0)`,
    message: () => 'securityContext of every container (or the Pod): runAsNonRoot must be true, runAsUser, runAsGroup and fsGroup not 0',
  },
  'writable-root': {
    cel: () => allContainers(`${has('c.securityContext.readOnlyRootFilesystem')} && c.securityContext.readOnlyRootFilesystem`),
    message: () => 'securityContext.readOnlyRootFilesystem of every container must be true',
  },
  'privilege-escalation': {
    cel: () => allContainers(`${has('c.securityContext.allowPrivilegeEscalation')} && !c.securityContext.allowPrivilegeEscalation`),
    message: () => 'securityContext.allowPrivilegeEscalation of every container must be false',
  },
  capability: {
    cel: (p) => allContainers(
      `${has('c.securityContext.capabilities.drop')} && c.securityContext.capabilities.drop.exists(d, ${capName('d')} == 'ALL')`
      + ` && (!has(c.securityContext.capabilities.add) || c.securityContext.capabilities.add.all(a, ${capName('a')} in ${list(p.capabilities)}))`,
    ),
    message: (p) => `securityContext.capabilities of every container must drop ALL and add only ${p.capabilities.length > 0 ? p.capabilities.join(', ') : 'nothing'}`,
  },
  seccomp: {
    cel: () => allContainers(effective('c', 'seccompProfile', (v) => `${v}.type in ['RuntimeDefault', 'Localhost']`, 'false')),
    message: () => 'securityContext.seccompProfile.type of every container (or the Pod) must be RuntimeDefault or Localhost',
  },
  apparmor: {
    cel: () => allContainers(`!(${has('c.securityContext.appArmorProfile')} && c.securityContext.appArmorProfile.type == 'Unconfined')`)
      + ` && !(${has('object.spec.securityContext.appArmorProfile')} && object.spec.securityContext.appArmorProfile.type == 'Unconfined')`,
    message: () => 'securityContext.appArmorProfile.type must not be Unconfined',
  },
  'proc-mount': {
    cel: () => allContainers(`!(${has('c.securityContext.procMount')} && c.securityContext.procMount == 'Unmasked')`),
    message: () => 'securityContext.procMount must not be Unmasked',
  },
  'host-namespace': {
    cel: () => ['hostNetwork', 'hostPID', 'hostIPC'].map((k) => `!(has(object.spec.${k}) && object.spec.${k})`).join(' && ')
      + ` && ${allContainers(`!(${has('c.securityContext.windowsOptions.hostProcess')} && c.securityContext.windowsOptions.hostProcess)`)}`,
    message: () => 'spec.hostNetwork, spec.hostPID, spec.hostIPC and securityContext.windowsOptions.hostProcess must not be true',
  },
  'service-account': {
    cel: (p) => (p.serviceAccount === undefined ? 'true'
      : `has(object.spec.serviceAccountName) && object.spec.serviceAccountName == ${q(p.serviceAccount)}`),
    message: (p) => (p.serviceAccount === undefined ? 'spec.serviceAccountName is not checked in this injection config'
      : `spec.serviceAccountName must be ${p.serviceAccount} (the subject of the Pod Identity association the sidecar signs with)`),
  },
  'share-process-namespace': {
    cel: () => '!(has(object.spec.shareProcessNamespace) && object.spec.shareProcessNamespace)',
    message: () => 'spec.shareProcessNamespace must not be true (the workspace would see the proxy\'s processes)',
  },
  'host-path': {
    cel: () => '!has(object.spec.volumes) || object.spec.volumes.all(v, !has(v.hostPath))',
    message: () => 'spec.volumes[*].hostPath is not allowed',
  },
  'host-port': {
    cel: () => allContainers('!has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == 0)'),
    message: () => 'ports[*].hostPort is not allowed',
  },
  'service-account-token': {
    cel: () => 'has(object.spec.automountServiceAccountToken) && !object.spec.automountServiceAccountToken && '
      + untrusted('!has(c.volumeMounts) || c.volumeMounts.all(m, !(m.name in variables.tokenVolumes))'),
    message: () => 'spec.automountServiceAccountToken must be false, and no container but the sidecar may mount a service account token volume',
  },
  'secret-env': {
    cel: () => untrusted('(!has(c.env) || c.env.all(e, !(has(e.valueFrom) && has(e.valueFrom.secretKeyRef))))'
      + ' && (!has(c.envFrom) || c.envFrom.all(e, !has(e.secretRef)))'),
    message: () => 'env[*].valueFrom.secretKeyRef and envFrom[*].secretRef are allowed only in the sidecar',
  },
  'credential-env': {
    cel: () => untrusted('!has(c.env) || c.env.all(e, !(e.name in variables.credentialEnv))'),
    message: (p) => `env of containers other than the sidecar must not carry credentials (${p.credentialEnv.join(', ')})`,
  },
  'secret-volume': {
    cel: () => untrusted('!has(c.volumeMounts) || c.volumeMounts.all(m, !(m.name in variables.secretVolumes))'),
    message: () => 'volumeMounts of Secret, projected Secret and CSI volumes are allowed only in the sidecar',
  },
  'reserved-volume': {
    cel: () => untrusted(`!has(c.volumeMounts) || c.volumeMounts.all(m, !(m.name in ${list(SIDECAR_ONLY_VOLUMES)})`
      + ` && (m.name != ${q(VOLUME_SHARED)} || (has(m.readOnly) && m.readOnly)))`),
    message: () => `volumeMounts: ${SIDECAR_ONLY_VOLUMES.join(', ')} are the sidecar's alone, and ${VOLUME_SHARED} is read-only elsewhere`,
  },
} satisfies Record<string, GuardRule>;

export type GuardRuleId = keyof typeof GUARD_RULES;

/** Rules `inject` enforces on the incoming Pod whose guard counterpart is another rule. */
export const COVERED_RULES = {
  privileged: {
    coveredBy: 'privilege-escalation',
    why: 'the API server refuses privileged: true with allowPrivilegeEscalation: false, which the guard requires, so a privileged rule could never fire',
  },
  'reserved-container': { coveredBy: 'sidecar', why: 'only the first init container may be named credential-proxy' },
  'reserved-path': { coveredBy: 'reserved-volume', why: 'the shared dir is mounted read-only outside the sidecar' },
  ttl: { coveredBy: 'deadline', why: 'the annotation only ever lowers activeDeadlineSeconds, which the guard bounds' },
} satisfies Record<string, CoveredRule>;

export type RuleId = GuardRuleId | keyof typeof COVERED_RULES;

// ---------------------------------------------------------------------------------------------
// The same rules over the Pod as its creator sent it.

const asArray = (v: unknown): Json[] => (Array.isArray(v) ? v as Json[] : []);
const normCap = (c: string): string => c.toUpperCase().replace(/^CAP_/, '');
const normPath = (p: string): string => (p.length > 1 ? p.replace(/\/+$/, '') : p);

export class Violations {
  readonly list: Violation[] = [];

  deny(field: string, rule: RuleId, message: string): void {
    this.list.push({ field, rule, message: `${field}: ${message}` });
  }
}

export interface CheckOptions {
  /** The Pod carries the status annotation of an earlier injection (its sidecar and volumes are ours). */
  wasInjected: boolean;
}

/** A container's path in the Pod, e.g. spec.containers[1]. */
export function containerPaths(spec: Json): Map<Json, string> {
  const paths = new Map<Json, string>();
  for (const list of ['containers', 'initContainers', 'ephemeralContainers']) {
    asArray(spec[list]).forEach((c, i) => paths.set(c, `spec.${list}[${i}]`));
  }
  return paths;
}

/**
 * Every rule `inject` refuses a Pod for that does not depend on rendering, over the Pod as sent
 * (shape already checked). The injection's own sidecar (an injected Pod's first init container)
 * is not checked: it is rendered again.
 */
export function checkPod(pod: Json, config: InjectionConfig, options: CheckOptions, out = new Violations()): Violations {
  const spec = pod.spec as Json;
  const paths = containerPaths(spec);
  for (const [k, what] of [['hostNetwork', 'network'], ['hostPID', 'PID'], ['hostIPC', 'IPC']] as const) {
    if (spec[k] === true) out.deny(`spec.${k}`, 'host-namespace', `sharing the node's ${what} namespace is not allowed (it breaks the sandbox)`);
  }
  const serviceAccount = typeof spec.serviceAccountName === 'string' && spec.serviceAccountName !== '' ? spec.serviceAccountName : 'default';
  if (config.workspaceServiceAccount !== null && serviceAccount !== config.workspaceServiceAccount) {
    out.deny('spec.serviceAccountName', 'service-account', `must be ${config.workspaceServiceAccount}, the subject of the Pod Identity association the sidecar signs with (got ${serviceAccount}); create the Pod with it`);
  }
  if (spec.shareProcessNamespace === true) {
    out.deny('spec.shareProcessNamespace', 'share-process-namespace', 'a shared process namespace would let the workspace see the credential proxy\'s processes');
  }
  if (spec.automountServiceAccountToken === true) {
    out.deny('spec.automountServiceAccountToken', 'service-account-token', 'must not be true: the workspace must not hold the Pod\'s Kubernetes API token');
  }
  const podSc = (isObject(spec.securityContext) ? spec.securityContext : {}) as Json;
  checkSecurityContext(out, podSc, 'spec.securityContext', config);
  if (podSc.fsGroup === 0) out.deny('spec.securityContext.fsGroup', 'run-as-root', 'must not be 0 (root group)');
  const volumes = asArray(spec.volumes);
  volumes.forEach((v, i) => {
    if (v.hostPath !== undefined && v.hostPath !== null) out.deny(`spec.volumes[${i}]`, 'host-path', `hostPath volume ${JSON.stringify(v.name)} is not allowed (it exposes the node's filesystem)`);
    if (RESERVED_VOLUMES.has(v.name as string) && !options.wasInjected) {
      out.deny(`spec.volumes[${i}].name`, 'reserved-volume', `the volume name ${v.name as string} is reserved for the injected sidecar`);
    }
  });
  for (const c of asArray(spec.containers)) {
    if (c.name === CONTAINER_PROXY) out.deny(`${paths.get(c)}.name`, 'reserved-container', `a container named ${CONTAINER_PROXY} may only be the injected sidecar (an init container with restartPolicy: Always)`);
  }
  const volumeByName = new Map(volumes.map((v) => [v.name as string, v]));
  const initContainers = asArray(spec.initContainers);
  for (const c of initContainers) {
    if (c.name === CONTAINER_PROXY && !options.wasInjected) out.deny(`${paths.get(c)}.name`, 'reserved-container', `a container named ${CONTAINER_PROXY} that this webhook did not inject is not allowed`);
  }
  for (const [c, path] of paths) {
    // An earlier injection's sidecar is ours: it is rendered again.
    if (options.wasInjected && c.name === CONTAINER_PROXY && initContainers.includes(c)) continue;
    checkContainer(out, c, path, volumeByName, config);
  }
  return out;
}

/** The rules of one container other than the injected sidecar. */
export function checkContainer(out: Violations, c: Json, path: string, volumeByName: ReadonlyMap<string, Json>, config: InjectionConfig): void {
  checkSecurityContext(out, (isObject(c.securityContext) ? c.securityContext : {}) as Json, `${path}.securityContext`, config);
  asArray(c.ports).forEach((p, i) => {
    if (typeof p.hostPort === 'number' && p.hostPort !== 0) out.deny(`${path}.ports[${i}].hostPort`, 'host-port', 'host ports are not allowed');
  });
  const moveEnv = new Set(config.credentials.moveEnv);
  asArray(c.env).forEach((e, i) => {
    // Credentials by name are moved to the sidecar, not refused.
    if (moveEnv.has(e.name as string)) return;
    if (isObject(e.valueFrom) && e.valueFrom.secretKeyRef != null) {
      out.deny(`${path}.env[${i}].valueFrom.secretKeyRef`, 'secret-env', `env ${e.name as string} comes from a Secret; the workspace holds no secrets (give the credential to the proxy instead)`);
    }
  });
  asArray(c.envFrom).forEach((e, i) => {
    if (e.secretRef != null) out.deny(`${path}.envFrom[${i}].secretRef`, 'secret-env', 'env from a Secret is not allowed in the workspace');
  });
  const moveVolumes = new Set(config.credentials.moveVolumes);
  asArray(c.volumeMounts).forEach((m, i) => {
    const name = m.name as string;
    const vol = volumeByName.get(name);
    // Ours (rendered again), or the API token volume `inject` removes.
    if (RESERVED_VOLUMES.has(name) || (name.startsWith(KUBE_API_ACCESS_PREFIX) && (vol === undefined || isObject(vol.projected)))) return;
    if (vol && !moveVolumes.has(name)) checkMountedVolume(out, vol, `${path}.volumeMounts[${i}]`);
    if (normPath(m.mountPath as string) === SHARED_DIR) {
      out.deny(`${path}.volumeMounts[${i}].mountPath`, 'reserved-path', `${SHARED_DIR} is reserved for the proxy's CA files`);
    }
  });
}

function checkSecurityContext(out: Violations, sc: Json, path: string, config: InjectionConfig): void {
  if (sc.privileged === true) out.deny(`${path}.privileged`, 'privileged', 'privileged containers are not allowed (gVisor cannot run them and they break isolation)');
  if (sc.allowPrivilegeEscalation === true) out.deny(`${path}.allowPrivilegeEscalation`, 'privilege-escalation', 'must be false');
  if (sc.runAsUser === 0) out.deny(`${path}.runAsUser`, 'run-as-root', 'must not be 0 (root)');
  if (sc.runAsGroup === 0) out.deny(`${path}.runAsGroup`, 'run-as-root', 'must not be 0 (root group)');
  if (sc.runAsNonRoot === false) out.deny(`${path}.runAsNonRoot`, 'run-as-root', 'must be true');
  if (sc.readOnlyRootFilesystem === false) out.deny(`${path}.readOnlyRootFilesystem`, 'writable-root', 'must be true (write to /workspace or /tmp)');
  if (sc.procMount === 'Unmasked') out.deny(`${path}.procMount`, 'proc-mount', 'Unmasked /proc is not allowed');
  if (isObject(sc.seccompProfile) && sc.seccompProfile.type === 'Unconfined') out.deny(`${path}.seccompProfile.type`, 'seccomp', 'Unconfined is not allowed');
  if (isObject(sc.appArmorProfile) && sc.appArmorProfile.type === 'Unconfined') out.deny(`${path}.appArmorProfile.type`, 'apparmor', 'Unconfined is not allowed');
  if (isObject(sc.windowsOptions) && sc.windowsOptions.hostProcess === true) out.deny(`${path}.windowsOptions.hostProcess`, 'host-namespace', 'host processes are not allowed');
  if (isObject(sc.capabilities) && Array.isArray(sc.capabilities.add)) {
    const allowed = new Set(config.workspace.capabilities);
    (sc.capabilities.add as string[]).forEach((cap, i) => {
      if (!allowed.has(normCap(cap))) {
        out.deny(`${path}.capabilities.add[${i}]`, 'capability', `capability ${cap} is not allowed (allowed: ${[...allowed].join(', ') || 'none'})`);
      }
    });
  }
}

function checkMountedVolume(out: Violations, vol: Json, path: string): void {
  const name = JSON.stringify(vol.name);
  if (vol.secret != null) {
    out.deny(path, 'secret-volume', `Secret volume ${name} may not be mounted into the workspace (give the credential to the proxy instead)`);
    return;
  }
  if (isObject(vol.csi)) {
    out.deny(path, 'secret-volume', `CSI volume ${name} may not be mounted into the workspace (CSI drivers deliver secrets)`);
    return;
  }
  if (isObject(vol.projected)) {
    for (const s of asArray(vol.projected.sources)) {
      if (s.secret != null) return out.deny(path, 'secret-volume', `projected volume ${name} carries a Secret; it may not be mounted into the workspace`);
      if (s.serviceAccountToken != null) return out.deny(path, 'service-account-token', `projected volume ${name} carries a service account token; it may not be mounted into the workspace`);
    }
  }
}
