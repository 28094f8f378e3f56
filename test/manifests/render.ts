// Renders the manifests' overlays with `kubectl kustomize` (offline) into plain objects.
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MANIFESTS = join(REPO_ROOT, 'manifests');
export const OVERLAYS = ['local', 'staging', 'prod'] as const;
export type Overlay = (typeof OVERLAYS)[number];

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

/**
 * Why rendering cannot run here, or undefined when it can. Local runs without kubectl skip
 * (loudly); CI sets REQUIRE_KUBECTL=1 so a missing kubectl fails instead.
 */
export function kubectlSkipReason(): string | undefined {
  const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  if (probe.status === 0) return undefined;
  const why = 'kubectl not found: manifests NOT rendered or checked (install kubectl; CI sets REQUIRE_KUBECTL=1)';
  if (process.env.REQUIRE_KUBECTL === '1') throw new Error(`REQUIRE_KUBECTL=1 but ${why}`);
  return why;
}

export function renderDir(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(out)) {
    if (doc.errors.length > 0) throw new Error(`kubectl kustomize ${dir}: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as K8sObject | null;
    if (value !== null) objects.push(value);
  }
  return objects;
}

const cache = new Map<Overlay, K8sObject[]>();

/** The overlay's objects; each test gets its own deep copy so tampering stays local. */
export function renderOverlay(overlay: Overlay): K8sObject[] {
  let objects = cache.get(overlay);
  if (objects === undefined) {
    objects = renderDir(join(MANIFESTS, 'overlays', overlay));
    cache.set(overlay, objects);
  }
  return structuredClone(objects);
}

export function idOf(o: K8sObject): string {
  return `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}

export function find<T = K8sObject>(objects: K8sObject[], kind: string, name: string, namespace?: string): T {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name && (namespace === undefined || x.metadata.namespace === namespace));
  if (o === undefined) throw new Error(`${kind} ${namespace ? `${namespace}/` : ''}${name} is not in the rendered output`);
  return o as unknown as T;
}

export function findAll<T = K8sObject>(objects: K8sObject[], kind: string): T[] {
  return objects.filter((x) => x.kind === kind) as unknown as T[];
}
