// `workspace-sandbox gateway`: config, the Kubernetes API client, the listeners, signals.
import { PRODUCT } from '../lib/constants.ts';
import { installProcessSafetyNet } from '../lib/guard.ts';
import { createLogger } from '../lib/log.ts';
import { createMetricsRegistry } from '../lib/metrics.ts';
import { createShutdown, exitOnSignals } from '../lib/server.ts';
import { GATEWAY_ENV_HELP, loadGatewayConfig } from './config.ts';
import { createKubernetesApi } from './kubernetes.ts';
import { createGateway } from './server.ts';

export function usage(): string {
  const width = Math.max(...Object.keys(GATEWAY_ENV_HELP).map((k) => k.length));
  return [
    `Usage: ${PRODUCT} gateway`,
    '',
    'The egress gateway: the only way out of the cluster for workspaces. Accepts CONNECT host:port from',
    'credential-proxy sidecars that present their pod\'s projected ServiceAccount token (TokenReview),',
    're-applies the SSRF guard and the cluster-wide ceiling, and writes one audit line per tunnel naming the pod.',
    '',
    'Environment:',
    ...Object.entries(GATEWAY_ENV_HELP).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
  ].join('\n');
}

export async function main(argv: string[]): Promise<number | void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const config = loadGatewayConfig();
  const logger = createLogger({ name: 'gateway', level: config.LOG_LEVEL });
  const registry = createMetricsRegistry({ program: 'gateway' });
  installProcessSafetyNet({ logger, registry });
  const api = await createKubernetesApi(config.KUBECONFIG);
  const gateway = createGateway(config, { logger, registry, api });
  const bound = await gateway.listen();
  logger.info({ gateway: bound.gateway.display, metrics: bound.metrics.display, audience: config.GATEWAY_AUDIENCE, ceiling: config.ceiling?.length ?? null }, 'egress gateway listening');
  const shutdown = createShutdown({
    servers: [gateway.server, gateway.metricsServer],
    drainTimeoutMs: config.DRAIN_TIMEOUT_MS,
    logger,
    afterDrain: () => gateway.close(),
  });
  exitOnSignals(shutdown, logger);
}
