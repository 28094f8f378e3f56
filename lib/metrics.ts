// prom-client registry per program (never the global one: tests build many servers in one process).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { collectDefaultMetrics, Registry } from 'prom-client';

export interface MetricsRegistryOptions {
  /** Program name, added as a `program` label to every series. */
  program: string;
  /** Default process metrics (CPU, memory, event-loop lag, GC); off in tests that build many registries. */
  defaultMetrics?: boolean;
}

export function createMetricsRegistry(options: MetricsRegistryOptions): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ program: options.program });
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}

/** A node:http / express handler serving the registry in the Prometheus text format. */
export function metricsHandler(registry: Registry) {
  return async (_req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType });
    res.end(body);
  };
}
