// `workspace-sandbox proxy`: load config, wire, listen, stop cleanly on SIGTERM.
import { PRODUCT } from '../lib/constants.ts';
import { createLogger } from '../lib/log.ts';
import { createMetricsRegistry } from '../lib/metrics.ts';
import { createShutdown, exitOnSignals } from '../lib/server.ts';
import { credentialEnvironment, loadProxyConfig, PROXY_ENV_HELP } from './config.ts';
import { createInterceptor } from './intercept.ts';
import type { Interceptor } from './interception.ts';
import { createRulesStore } from './rules-store-factory.ts';
import { createProxy } from './server.ts';

export function usage(): string {
  const width = Math.max(...Object.keys(PROXY_ENV_HELP).map((k) => k.length));
  return [
    `Usage: ${PRODUCT} proxy`,
    '',
    'The credential proxy sidecar: an egress allowlist proxy for the workspace (HTTP_PROXY/HTTPS_PROXY),',
    'with an SSRF guard, CONNECT tunnels, plain-HTTP forwarding and the /rules admin API.',
    '',
    'Environment:',
    ...Object.entries(PROXY_ENV_HELP).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
  ].join('\n');
}

export async function main(argv: string[]): Promise<number | void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  if (argv.length > 0) {
    process.stderr.write(`${PRODUCT} proxy: unexpected arguments: ${argv.join(' ')}\n\n${usage()}\n`);
    return 2;
  }
  const config = loadProxyConfig();
  const logger = createLogger({ name: 'credential-proxy', level: config.LOG_LEVEL });
  const registry = createMetricsRegistry({ program: 'credential-proxy' });
  const store = createRulesStore(config, logger);

  // ── Interception (credential injection): created here and handed to the proxy. ──
  // The per-pod CA is made and written to CA_DIR in the background; /readyz waits for it.
  const interceptor: Interceptor | undefined = createInterceptor(config, { logger, registry, env: credentialEnvironment() });
  // ─────────────────────────────────────────────────────────────────────────────

  const proxy = createProxy(config, { logger, registry, store, ...(interceptor ? { interceptor } : {}) });
  const bound = await proxy.listen();
  logger.info({ proxy: bound.proxy.display, admin: bound.admin.display, store: store.kind, rules: proxy.rules().length }, 'credential proxy listening');
  const shutdown = createShutdown({
    servers: [proxy.proxyServer, proxy.adminServer],
    drainTimeoutMs: config.DRAIN_TIMEOUT_MS,
    logger,
    afterDrain: () => proxy.close(),
  });
  exitOnSignals(shutdown, logger);
}
