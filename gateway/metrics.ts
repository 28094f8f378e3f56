// The gateway's metrics, on its own registry. Per-pod series (connections, bytes) are bounded: pods
// come and go by the thousand, so only the METRICS_MAX_PODS most recently seen keep their series and
// the oldest pod's are removed beyond that (its totals stay in the audit log).
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { AuthFailureReason } from './token-review.ts';

export interface GatewayMetrics {
  connections: Counter<'namespace' | 'pod' | 'decision'>;
  bytes: Counter<'namespace' | 'pod' | 'direction'>;
  authFailures: Counter<'reason'>;
  tokenReviews: Counter<'cached'>;
  activeTunnels: Gauge;
  upstreamConnectSeconds: Histogram;
  /** Marks a pod as recently seen, removing the series of the least recently seen beyond the bound. */
  touchPod(namespace: string, pod: string): void;
  authFailure(reason: AuthFailureReason): void;
}

export function createGatewayMetrics(registry: Registry, maxPods: number): GatewayMetrics {
  const registers = [registry];
  const connections = new Counter({ name: 'gateway_connections_total', help: 'CONNECT requests of authenticated pods by decision (tunnel, deny, error)', labelNames: ['namespace', 'pod', 'decision'] as const, registers });
  const bytes = new Counter({ name: 'gateway_bytes_total', help: 'Bytes relayed per pod; up = pod to upstream, down = upstream to pod', labelNames: ['namespace', 'pod', 'direction'] as const, registers });
  const authFailures = new Counter({ name: 'gateway_auth_failures_total', help: 'CONNECT requests refused before policy, by reason', labelNames: ['reason'] as const, registers });
  const seen = new Map<string, { namespace: string; pod: string }>();
  return {
    connections,
    bytes,
    authFailures,
    tokenReviews: new Counter({ name: 'gateway_token_validations_total', help: 'Token validations; cached="false" ones cost a TokenReview', labelNames: ['cached'] as const, registers }),
    activeTunnels: new Gauge({ name: 'gateway_active_tunnels', help: 'Open tunnels', registers }),
    upstreamConnectSeconds: new Histogram({
      name: 'gateway_upstream_connect_seconds', help: 'Time to open the upstream TCP connection',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers,
    }),
    touchPod(namespace, pod) {
      const key = `${namespace}/${pod}`;
      seen.delete(key);
      seen.set(key, { namespace, pod });
      while (seen.size > maxPods) {
        const [oldest, labels] = seen.entries().next().value!;
        seen.delete(oldest);
        for (const decision of ['tunnel', 'deny', 'error']) connections.remove({ ...labels, decision });
        for (const direction of ['up', 'down']) bytes.remove({ ...labels, direction });
      }
    },
    authFailure(reason) {
      authFailures.inc({ reason });
    },
  };
}
