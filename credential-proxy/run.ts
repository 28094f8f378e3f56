// The proxy program once its arguments are checked: config, wiring, listeners, signals.
import { installProcessSafetyNet } from '../lib/guard.ts';
import { createLogger } from '../lib/log.ts';
import { createMetricsRegistry } from '../lib/metrics.ts';
import { createShutdown, exitOnSignals } from '../lib/server.ts';
import { credentialEnvironment, loadProxyConfig } from './config.ts';
import { createInterceptor } from './intercept.ts';
import type { Interceptor } from './interception.ts';
import { createRulesStore } from './rules-store-factory.ts';
import { staticHostsResolver, systemResolver } from './resolve.ts';
import { createProxy } from './server.ts';
import { createUpstream, gatewayEndpoint } from './upstream.ts';

export async function runProxy(): Promise<void> {
  const config = loadProxyConfig();
  const logger = createLogger({ name: 'credential-proxy', level: config.LOG_LEVEL });
  const registry = createMetricsRegistry({ program: 'credential-proxy' });
  // Restarting the sidecar drops every tunnel, every /rules change and the CA: an error that
  // escaped every handler guard is logged and counted (uncaught_errors_total), not a restart.
  installProcessSafetyNet({ logger, registry });
  const store = createRulesStore(config, logger, registry);

  // ── Interception (credential injection): created here and handed to the proxy. ──
  // The per-pod CA is made and written to CA_DIR in the background; /readyz waits for it.
  const resolver = staticHostsResolver(config.STATIC_HOSTS, systemResolver);
  const upstream = createUpstream({ resolver, gateway: gatewayEndpoint(config), onToken: (token) => logger.secrets.add(token) });
  const interceptor: Interceptor | undefined = createInterceptor(config, { logger, registry, env: credentialEnvironment(), upstream });
  // ─────────────────────────────────────────────────────────────────────────────

  const proxy = createProxy(config, { logger, registry, store, resolver, upstream, ...(interceptor ? { interceptor } : {}) });
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
