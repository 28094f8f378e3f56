// `workspace-sandbox webhook`: load config, wire, listen, handle SIGTERM. Wiring is in server.ts.
import { installProcessSafetyNet } from '../lib/guard.ts';
import { createLogger } from '../lib/log.ts';
import { exitOnSignals } from '../lib/server.ts';
import { PRODUCT, WEBHOOK_PATHS } from '../lib/constants.ts';
import { VERSION } from '../lib/version.ts';
import { configHash, ENV_HELP, loadWebhookConfig } from './config.ts';
import { createWebhookServer } from './server.ts';

export function usage(): string {
  const width = Math.max(...Object.keys(ENV_HELP).map((k) => k.length));
  return [
    `Usage: ${PRODUCT} webhook`,
    '',
    `The mutating admission webhook: HTTPS POST ${WEBHOOK_PATHS.mutate} (AdmissionReview v1), ${WEBHOOK_PATHS.healthz}, ${WEBHOOK_PATHS.readyz};`,
    `plain HTTP ${WEBHOOK_PATHS.metrics} on METRICS_PORT. The injection config file is documented in`,
    'webhook/injection-config.example.yaml; an invalid file at start exits 1 listing every problem.',
    '',
    'Environment:',
    ...Object.entries(ENV_HELP).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
  ].join('\n');
}

export async function main(argv: string[]): Promise<number | void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const config = loadWebhookConfig();
  const logger = createLogger({ name: 'webhook', level: config.env.LOG_LEVEL });
  const webhook = createWebhookServer({ env: config.env, injection: config.injection, logger });
  // An error that escaped every handler guard is logged and counted (uncaught_errors_total), not a restart.
  installProcessSafetyNet({ logger, registry: webhook.registry });
  const { webhook: addr, metrics } = await webhook.listen();
  logger.info({ version: VERSION, webhook: addr.display, metrics: metrics.display, configHash: configHash(config.injection), configFile: config.env.WEBHOOK_CONFIG_FILE ?? null }, 'webhook listening');
  exitOnSignals(webhook.shutdown, logger);
}
