// Resource requests in Kubernetes quantities, checked against the backend's ceiling for both
// backends (Kubernetes also enforces them through the webhook's limits and the LimitRange; Docker
// has nothing else). Parsed here rather than with @kubernetes/client-node's quantityToScalar so
// the Docker mode does not load the Kubernetes client (~100 ms and ~20 MB at start).
import type { Resources } from './backend.ts';
import { WorkspaceError } from './errors.ts';

const SUFFIX: Readonly<Record<string, number>> = {
  '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40,
};

/** `500m` → 0.5, `2Gi` → 2147483648; undefined when it is not a quantity this SDK accepts. */
export function parseQuantity(q: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(q);
  if (!m) return undefined;
  return Number(m[1]) * SUFFIX[m[2] ?? '']!;
}

export interface ResolvedResources {
  /** CPUs (0.5 = half a core). */
  cpu: number;
  memoryBytes: number;
  /** The quantities as given (Kubernetes renders them unchanged). */
  cpuQuantity: string;
  memoryQuantity: string;
}

/** The requested resources (or the defaults), refused when malformed or over the ceiling. */
export function resolveResources(requested: Resources | undefined, defaults: Required<Resources>, max: Required<Resources>): ResolvedResources {
  const cpuQuantity = requested?.cpu ?? defaults.cpu;
  const memoryQuantity = requested?.memory ?? defaults.memory;
  const cpu = parseQuantity(cpuQuantity);
  const memoryBytes = parseQuantity(memoryQuantity);
  const problems: string[] = [];
  if (cpu === undefined || cpu <= 0) problems.push(`cpu ${JSON.stringify(cpuQuantity)} is not a positive quantity (e.g. 500m, 2)`);
  else if (cpu > parseQuantity(max.cpu)!) problems.push(`cpu ${cpuQuantity} is above the allowed ${max.cpu}`);
  if (memoryBytes === undefined || memoryBytes <= 0) problems.push(`memory ${JSON.stringify(memoryQuantity)} is not a positive quantity (e.g. 512Mi, 2Gi)`);
  else if (memoryBytes > parseQuantity(max.memory)!) problems.push(`memory ${memoryQuantity} is above the allowed ${max.memory}`);
  if (problems.length > 0) throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `resources refused: ${problems.join('; ')}`, { details: problems });
  return { cpu: cpu!, memoryBytes: Math.floor(memoryBytes!), cpuQuantity, memoryQuantity };
}
