// The proxy's metrics, on the program's own registry (never prom-client's global one).
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface ProxyMetrics {
  requests: Counter<'decision' | 'rule'>;
  bytes: Counter<'direction'>;
  activeTunnels: Gauge;
  upstreamConnectSeconds: Histogram;
  rulesVersion: Gauge;
  rulesStoreUp: Gauge;
  rulesStoreUnreachable: Counter<'phase'>;
  shed: Counter<'reason'>;
}

export function createProxyMetrics(registry: Registry): ProxyMetrics {
  const registers = [registry];
  return {
    requests: new Counter({ name: 'proxy_requests_total', help: 'Tunnels and requests by decision and rule id', labelNames: ['decision', 'rule'], registers }),
    bytes: new Counter({ name: 'proxy_bytes_total', help: 'Bytes relayed; up = client to upstream, down = upstream to client', labelNames: ['direction'], registers }),
    activeTunnels: new Gauge({ name: 'proxy_active_tunnels', help: 'Open CONNECT tunnels (plain and intercepted)', registers }),
    upstreamConnectSeconds: new Histogram({
      name: 'proxy_upstream_connect_seconds', help: 'Time to open the upstream TCP connection',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers,
    }),
    rulesVersion: new Gauge({ name: 'rules_version', help: 'Version of the /rules rule set in force', registers }),
    rulesStoreUp: new Gauge({ name: 'rules_store_up', help: '1 when the rules store is reachable (always 1 for the memory store)', registers }),
    shed: new Counter({
      name: 'proxy_shed_total', labelNames: ['reason'], registers,
      help: 'Tunnels and requests refused to keep memory bounded: reason="tunnels" (cap derived from the memory limit, 429), "memory" (resident set near the limit, 503)',
    }),
    rulesStoreUnreachable: new Counter({
      name: 'rules_store_unreachable_total', labelNames: ['phase'], registers,
      help: 'Times the rules store was found unreachable: phase="start" when the proxy started without it, "runtime" when it went away later',
    }),
  };
}
