// The webhook's Prometheus series. Names are part of the contract with dashboards and alerts.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface WebhookMetrics {
  requests: Counter<'operation' | 'result'>;
  duration: Histogram<'result'>;
  configReloads: Counter<'result'>;
  tlsExpiry: Gauge;
  configInfo: Gauge<'hash'>;
  runtimeFallbacks: Counter<'runtime_class'>;
}

export function createWebhookMetrics(registry: Registry): WebhookMetrics {
  return {
    requests: new Counter({
      name: 'admission_requests_total',
      help: 'AdmissionReviews answered, by operation and result (injected, unchanged, skipped, denied, error)',
      labelNames: ['operation', 'result'] as const,
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'admission_duration_seconds',
      help: 'Time from request start to the AdmissionReview answer',
      labelNames: ['result'] as const,
      // From 0.5 ms: an injection takes well under a millisecond; the API server's timeout is seconds.
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    configReloads: new Counter({
      name: 'config_reloads_total',
      help: 'Injection config reloads, by result (success, error)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    tlsExpiry: new Gauge({
      name: 'tls_certificate_expiry_timestamp_seconds',
      help: 'notAfter of the serving certificate, Unix seconds',
      registers: [registry],
    }),
    runtimeFallbacks: new Counter({
      name: 'admission_runtime_fallbacks_total',
      help: 'Pods injected to run under a fallback RuntimeClass (the runtime annotation) instead of the configured one',
      labelNames: ['runtime_class'] as const,
      registers: [registry],
    }),
    configInfo: new Gauge({
      name: 'config_info',
      help: 'The injection config in use (1 for its hash)',
      labelNames: ['hash'] as const,
      registers: [registry],
    }),
  };
}
