// Offline validation of a Pod as the API server would see it:
//  - kubernetes-models' JSON schema (types, required fields);
//  - unknown fields, walked against @kubernetes/client-node's attribute maps (kubernetes-models
//    accepts any extra field; the API server's strict field validation rejects them);
//  - enum values (neither library checks them);
//  - a few of the API server's cross-field rules an injection could break (volume references,
//    unique names and mount paths, native sidecar rules).
import * as k8s from '@kubernetes/client-node';
import { Pod } from 'kubernetes-models/v1';

type AttributeMap = { name: string; baseName: string; type: string }[];
const models = k8s as unknown as Record<string, { attributeTypeMap?: AttributeMap } | undefined>;

const ENUMS: Record<string, readonly string[]> = {
  'V1Container.imagePullPolicy': ['Always', 'IfNotPresent', 'Never'],
  'V1Container.restartPolicy': ['Always'],
  'V1Container.terminationMessagePolicy': ['File', 'FallbackToLogsOnError'],
  'V1ContainerPort.protocol': ['TCP', 'UDP', 'SCTP'],
  'V1HTTPGetAction.scheme': ['HTTP', 'HTTPS'],
  'V1SeccompProfile.type': ['RuntimeDefault', 'Localhost', 'Unconfined'],
  'V1AppArmorProfile.type': ['RuntimeDefault', 'Localhost', 'Unconfined'],
  'V1SecurityContext.procMount': ['Default', 'Unmasked'],
  'V1PodSpec.restartPolicy': ['Always', 'OnFailure', 'Never'],
  'V1PodSpec.dnsPolicy': ['ClusterFirst', 'ClusterFirstWithHostNet', 'Default', 'None'],
  'V1PodSpec.preemptionPolicy': ['PreemptLowerPriority', 'Never'],
  'V1EmptyDirVolumeSource.medium': ['', 'Memory', 'HugePages'],
  'V1Toleration.operator': ['Exists', 'Equal'],
  'V1Toleration.effect': ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute'],
  'V1ObjectFieldSelector.fieldPath': [
    'metadata.name', 'metadata.namespace', 'metadata.uid', 'spec.nodeName', 'spec.serviceAccountName',
    'status.hostIP', 'status.hostIPs', 'status.podIP', 'status.podIPs',
  ],
};

function walk(value: unknown, type: string, path: string, problems: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, array[1]!, `${path}[${i}]`, problems));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, map[1]!, `${path}[${JSON.stringify(k)}]`, problems);
    return;
  }
  const attrs = models[type]?.attributeTypeMap;
  if (!attrs || typeof value !== 'object' || Array.isArray(value)) return;
  const byName = new Map(attrs.map((a) => [a.baseName, a]));
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const attr = byName.get(key);
    if (!attr) {
      problems.push(`${path}.${key}: unknown field (not in ${type})`);
      continue;
    }
    const allowed = ENUMS[`${type}.${key}`];
    if (allowed && typeof v === 'string') {
      const ok = allowed.includes(v) || (key === 'medium' && v.startsWith('HugePages-')) || (key === 'fieldPath' && /^metadata\.(labels|annotations)\['[^']+'\]$/.test(v));
      if (!ok) problems.push(`${path}.${key}: ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
    }
    walk(v, attr.type, `${path}.${key}`, problems);
  }
}

type J = Record<string, unknown>;
const list = (v: unknown): J[] => (Array.isArray(v) ? v as J[] : []);

function crossFieldRules(pod: J, problems: string[]): void {
  const spec = (pod.spec ?? {}) as J;
  const volumeNames = new Set<string>();
  for (const v of list(spec.volumes)) {
    if (volumeNames.has(v.name as string)) problems.push(`spec.volumes: duplicate name ${String(v.name)}`);
    volumeNames.add(v.name as string);
  }
  const containerNames = new Set<string>();
  const check = (c: J, path: string, init: boolean) => {
    if (containerNames.has(c.name as string)) problems.push(`${path}.name: duplicate container name ${String(c.name)}`);
    containerNames.add(c.name as string);
    const mountPaths = new Set<string>();
    for (const m of list(c.volumeMounts)) {
      if (!volumeNames.has(m.name as string)) problems.push(`${path}.volumeMounts: volume ${String(m.name)} not found`);
      if (mountPaths.has(m.mountPath as string)) problems.push(`${path}.volumeMounts: duplicate mountPath ${String(m.mountPath)}`);
      mountPaths.add(m.mountPath as string);
    }
    const portNames = new Set<string>();
    for (const p of list(c.ports)) {
      if (typeof p.name === 'string') {
        if (portNames.has(p.name)) problems.push(`${path}.ports: duplicate port name ${p.name}`);
        portNames.add(p.name);
      }
    }
    if (init && c.restartPolicy !== 'Always') {
      for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        if (c[probe] != null) problems.push(`${path}.${probe}: only allowed on init containers with restartPolicy Always`);
      }
    }
    if (!init && c.restartPolicy !== undefined) problems.push(`${path}.restartPolicy: only allowed on init containers`);
    const res = (c.resources ?? {}) as J;
    const req = (res.requests ?? {}) as J;
    const lim = (res.limits ?? {}) as J;
    for (const [k, v] of Object.entries(req)) {
      if (lim[k] !== undefined && quantity(v) > quantity(lim[k])) problems.push(`${path}.resources.requests.${k}: must be <= the limit`);
    }
  };
  list(spec.initContainers).forEach((c, i) => check(c, `spec.initContainers[${i}]`, true));
  list(spec.containers).forEach((c, i) => check(c, `spec.containers[${i}]`, false));
  if (spec.priority !== undefined && spec.priorityClassName !== undefined) {
    // Fine only when it is the value the Priority plugin computed for this class; we cannot know
    // it offline, so a Pod with both must come from the input unchanged (checked by the callers).
  }
}

function quantity(v: unknown): number {
  const m = /^([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(v));
  if (!m) return NaN;
  const f: Record<string, number> = { m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };
  return Number(m[1]) * (m[2] ? f[m[2]]! : 1);
}

/** Every problem found; empty when the Pod passes. */
export function validatePod(pod: unknown): string[] {
  const problems: string[] = [];
  try {
    new Pod(pod as ConstructorParameters<typeof Pod>[0]).validate();
  } catch (err) {
    problems.push(`schema: ${(err as Error).message}`);
  }
  walk(pod, 'V1Pod', '', problems);
  crossFieldRules(pod as J, problems);
  return problems;
}
