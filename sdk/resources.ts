// Resource requests in Kubernetes quantities, checked against the backend's ceiling for both
// backends (Kubernetes also enforces them through the webhook's limits and the LimitRange; Docker
// has nothing else). Parsed with the webhook's parser (lib/quantity.ts) rather than with
// @kubernetes/client-node's quantityToScalar so the Docker mode does not load the Kubernetes client
// (~100 ms and ~20 MB at start), and so both read a quantity alike.
import { parseQuantity } from '../lib/quantity.ts';
import type { Resources } from './backend.ts';
import { WorkspaceError } from './errors.ts';

export interface ResolvedResources {
  /** CPUs (0.5 = half a core). */
  cpu: number;
  memoryBytes: number;
  /** The quantities as given (Kubernetes renders them unchanged). */
  cpuQuantity: string;
  memoryQuantity: string;
}

/**
 * The least a workspace may ask for. Docker reads a zero limit (what 0.4n CPUs or 1m of memory
 * round to) as no limit at all, and refuses memory below 6 MiB.
 */
const MIN_CPU = 0.001;
const MIN_MEMORY_BYTES = 6 * 1024 * 1024;

/** The requested resources (or the defaults), refused when malformed, below the least or over the ceiling. */
export function resolveResources(requested: Resources | undefined, defaults: Required<Resources>, max: Required<Resources>): ResolvedResources {
  const cpuQuantity = requested?.cpu ?? defaults.cpu;
  const memoryQuantity = requested?.memory ?? defaults.memory;
  const cpu = parseQuantity(cpuQuantity);
  const memoryBytes = parseQuantity(memoryQuantity);
  const problems: string[] = [];
  if (cpu === undefined || cpu <= 0) problems.push(`cpu ${JSON.stringify(cpuQuantity)} is not a positive quantity (e.g. 500m, 2)`);
  else if (cpu < MIN_CPU) problems.push(`cpu ${cpuQuantity} is below 1m (a smaller limit reads as none)`);
  else if (cpu > parseQuantity(max.cpu)!) problems.push(`cpu ${cpuQuantity} is above the allowed ${max.cpu}`);
  if (memoryBytes === undefined || memoryBytes <= 0) problems.push(`memory ${JSON.stringify(memoryQuantity)} is not a positive quantity (e.g. 512Mi, 2Gi)`);
  else if (memoryBytes < MIN_MEMORY_BYTES) problems.push(`memory ${memoryQuantity} is below 6Mi (the least a container engine takes; a smaller limit reads as none)`);
  else if (memoryBytes > parseQuantity(max.memory)!) problems.push(`memory ${memoryQuantity} is above the allowed ${max.memory}`);
  if (problems.length > 0) throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `resources refused: ${problems.join('; ')}`, { details: problems });
  return { cpu: cpu!, memoryBytes: Math.floor(memoryBytes!), cpuQuantity, memoryQuantity };
}
