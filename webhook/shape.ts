// The Pod shape `inject` relies on, checked before it touches anything, so that no input can make
// it throw. Only the fields `inject` reads are checked; the API server validates the rest after
// admission. Field paths are written the way Kubernetes writes them (spec.containers[0].env[2]).
import { parseQuantity } from '../lib/quantity.ts';

export type Json = Record<string, unknown>;

export function isObject(value: unknown): value is Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

export interface ShapeProblem {
  field: string;
  message: string;
}

class Checker {
  readonly problems: ShapeProblem[] = [];

  fail(field: string, message: string): void {
    if (this.problems.length < 20) this.problems.push({ field, message });
  }

  object(value: unknown, field: string, required = false): value is Json {
    if (value === undefined || value === null) {
      if (required) this.fail(field, 'is required');
      return false;
    }
    if (!isObject(value)) {
      this.fail(field, 'must be an object');
      return false;
    }
    return true;
  }

  array(value: unknown, field: string): value is unknown[] {
    if (value === undefined || value === null) return false;
    if (!Array.isArray(value)) {
      this.fail(field, 'must be a list');
      return false;
    }
    return true;
  }

  string(value: unknown, field: string, required = false): void {
    if (value === undefined || value === null) {
      if (required) this.fail(field, 'is required');
    } else if (typeof value !== 'string') this.fail(field, 'must be a string');
    else if (required && value === '') this.fail(field, 'must not be empty');
  }

  int(value: unknown, field: string): void {
    if (value !== undefined && value !== null && !Number.isSafeInteger(value)) this.fail(field, 'must be an integer');
  }

  bool(value: unknown, field: string): void {
    if (value !== undefined && value !== null && typeof value !== 'boolean') this.fail(field, 'must be true or false');
  }

  stringMap(value: unknown, field: string): void {
    if (!this.object(value, field)) return;
    for (const [k, v] of Object.entries(value)) if (typeof v !== 'string') this.fail(`${field}[${JSON.stringify(k)}]`, 'must be a string');
  }

  stringList(value: unknown, field: string): void {
    if (!this.array(value, field)) return;
    value.forEach((v, i) => { if (typeof v !== 'string') this.fail(`${field}[${i}]`, 'must be a string'); });
  }

  securityContext(sc: unknown, field: string): void {
    if (!this.object(sc, field)) return;
    for (const k of ['runAsUser', 'runAsGroup', 'fsGroup']) this.int(sc[k], `${field}.${k}`);
    for (const k of ['runAsNonRoot', 'privileged', 'allowPrivilegeEscalation', 'readOnlyRootFilesystem']) this.bool(sc[k], `${field}.${k}`);
    this.string(sc.procMount, `${field}.procMount`);
    if (this.object(sc.capabilities, `${field}.capabilities`)) {
      this.stringList(sc.capabilities.add, `${field}.capabilities.add`);
      this.stringList(sc.capabilities.drop, `${field}.capabilities.drop`);
    }
    for (const k of ['seccompProfile', 'appArmorProfile']) {
      if (this.object(sc[k], `${field}.${k}`)) this.string((sc[k] as Json).type, `${field}.${k}.type`);
    }
    if (this.object(sc.windowsOptions, `${field}.windowsOptions`)) this.bool(sc.windowsOptions.hostProcess, `${field}.windowsOptions.hostProcess`);
  }

  container(c: unknown, field: string): void {
    if (!this.object(c, field, true)) return;
    this.string(c.name, `${field}.name`, true);
    if (this.array(c.env, `${field}.env`)) {
      c.env.forEach((e, i) => {
        const f = `${field}.env[${i}]`;
        if (!this.object(e, f, true)) return;
        this.string(e.name, `${f}.name`, true);
        this.string(e.value, `${f}.value`);
        this.object(e.valueFrom, `${f}.valueFrom`);
      });
    }
    if (this.array(c.envFrom, `${field}.envFrom`)) c.envFrom.forEach((e, i) => this.object(e, `${field}.envFrom[${i}]`, true));
    if (this.array(c.volumeMounts, `${field}.volumeMounts`)) {
      c.volumeMounts.forEach((m, i) => {
        const f = `${field}.volumeMounts[${i}]`;
        if (!this.object(m, f, true)) return;
        this.string(m.name, `${f}.name`, true);
        this.string(m.mountPath, `${f}.mountPath`, true);
      });
    }
    if (this.array(c.ports, `${field}.ports`)) {
      c.ports.forEach((p, i) => {
        const f = `${field}.ports[${i}]`;
        if (!this.object(p, f, true)) return;
        this.int(p.containerPort, `${f}.containerPort`);
        this.int(p.hostPort, `${f}.hostPort`);
        this.string(p.name, `${f}.name`);
      });
    }
    if (this.object(c.resources, `${field}.resources`)) {
      for (const k of ['requests', 'limits']) {
        const list = c.resources[k];
        if (!this.object(list, `${field}.resources.${k}`)) continue;
        for (const [name, q] of Object.entries(list)) {
          if (parseQuantity(q) === undefined) this.fail(`${field}.resources.${k}.${name}`, `${JSON.stringify(q)} is not a valid quantity`);
        }
      }
    }
    this.securityContext(c.securityContext, `${field}.securityContext`);
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) this.object(c[probe], `${field}.${probe}`);
  }
}

/** Problems that make `pod` unusable as a Pod; empty when `inject` can work on it. */
export function checkPodShape(pod: unknown): ShapeProblem[] {
  const ch = new Checker();
  if (!ch.object(pod, '(object)', true)) return ch.problems;
  if (pod.kind !== undefined && pod.kind !== 'Pod') ch.fail('kind', `must be Pod (got ${JSON.stringify(pod.kind)})`);
  if (ch.object(pod.metadata, 'metadata')) {
    const m = pod.metadata;
    for (const k of ['name', 'generateName', 'namespace']) ch.string(m[k], `metadata.${k}`);
    ch.stringMap(m.labels, 'metadata.labels');
    ch.stringMap(m.annotations, 'metadata.annotations');
  }
  if (!ch.object(pod.spec, 'spec', true)) return ch.problems;
  const spec = pod.spec;
  const names = new Set<string>();
  for (const list of ['containers', 'initContainers', 'ephemeralContainers'] as const) {
    if (!ch.array(spec[list], `spec.${list}`)) {
      if (list === 'containers') ch.fail('spec.containers', 'must list at least one container');
      continue;
    }
    const containers = spec[list] as unknown[];
    if (list === 'containers' && containers.length === 0) ch.fail('spec.containers', 'must list at least one container');
    containers.forEach((c, i) => {
      ch.container(c, `spec.${list}[${i}]`);
      const name = isObject(c) ? c.name : undefined;
      if (typeof name === 'string') {
        if (names.has(name)) ch.fail(`spec.${list}[${i}].name`, `duplicate container name ${JSON.stringify(name)}`);
        names.add(name);
      }
    });
  }
  if (ch.array(spec.volumes, 'spec.volumes')) {
    spec.volumes.forEach((v, i) => {
      const f = `spec.volumes[${i}]`;
      if (!ch.object(v, f, true)) return;
      ch.string(v.name, `${f}.name`, true);
      if (ch.object(v.projected, `${f}.projected`) && ch.array(v.projected.sources, `${f}.projected.sources`)) {
        v.projected.sources.forEach((s, j) => ch.object(s, `${f}.projected.sources[${j}]`, true));
      }
    });
  }
  ch.securityContext(spec.securityContext, 'spec.securityContext');
  for (const k of ['hostNetwork', 'hostPID', 'hostIPC', 'shareProcessNamespace', 'automountServiceAccountToken', 'enableServiceLinks']) ch.bool(spec[k], `spec.${k}`);
  ch.int(spec.activeDeadlineSeconds, 'spec.activeDeadlineSeconds');
  ch.string(spec.runtimeClassName, 'spec.runtimeClassName');
  ch.string(spec.priorityClassName, 'spec.priorityClassName');
  return ch.problems;
}
