// Shared by the webhook tests: a real webhook server on port 0 and a real HTTPS client.
import { Agent, request } from 'undici';
import { parseConfig, pickEnv } from '../../lib/config.ts';
import { envSchema, type InjectionConfig } from '../../webhook/config.ts';
import { createWebhookServer, type WebhookServer } from '../../webhook/server.ts';
import type { AdmissionReview } from '../../webhook/admission.ts';
import { captureLogs, type LogCapture } from '../helpers/log-capture.ts';

export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

export interface StartedWebhook {
  server: WebhookServer;
  url: string;
  metricsUrl: string;
  logs: LogCapture;
  agent: Agent;
  post(body: string | Buffer | object, headers?: Record<string, string>): Promise<{ status: number; headers: Record<string, unknown>; text: string; json: () => AdmissionReview }>;
}

export async function startWebhook(t: TeardownHost, options: {
  injection: InjectionConfig;
  env?: Record<string, string>;
  caPem?: string;
  baseline?: boolean;
}): Promise<StartedWebhook> {
  const logs = captureLogs();
  const env = parseConfig(envSchema, pickEnv(envSchema, {
    WEBHOOK_HOST: '127.0.0.1', WEBHOOK_PORT: '0', METRICS_HOST: '127.0.0.1', METRICS_PORT: '0', LOG_LEVEL: 'info',
    DRAIN_TIMEOUT_MS: '2000', ...options.env,
  }));
  const server = createWebhookServer({ env, injection: options.injection, logDestination: logs.destination, defaultMetrics: false, reloadDebounceMs: 10, baseline: options.baseline ?? false });
  const { webhook, metrics } = await server.listen();
  t.teardown(() => server.shutdown('test done'));
  const ca = options.caPem ?? server.devCaPem;
  const agent = new Agent({ connect: { ca, servername: 'localhost' }, pipelining: 1 });
  t.teardown(() => agent.close());
  const url = `https://127.0.0.1:${webhook.port}`;
  return {
    server, url, metricsUrl: `http://127.0.0.1:${metrics.port}`, logs, agent,
    async post(body, headers = { 'content-type': 'application/json' }) {
      const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
      const res = await request(`${url}/mutate`, { method: 'POST', body: payload, headers, dispatcher: agent });
      const text = await res.body.text();
      return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as AdmissionReview };
    },
  };
}

let uidCounter = 0;

/** An AdmissionReview as the API server sends it for a Pod CREATE. */
export function podReview(pod: unknown, overrides: Record<string, unknown> = {}): AdmissionReview & { request: Record<string, unknown> } {
  const meta = (pod as { metadata?: { name?: string; namespace?: string } } | null)?.metadata;
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `0df28fbd-5f5f-11e8-bc74-${String(++uidCounter).padStart(12, '0')}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      name: meta?.name ?? '',
      namespace: meta?.namespace ?? 'sandboxes',
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:backend:backend', uid: 'e2a1', groups: ['system:serviceaccounts', 'system:authenticated'] },
      object: pod,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
      ...overrides,
    },
  } as AdmissionReview & { request: Record<string, unknown> };
}

/** The JSON Patch of a response, decoded. */
export function patchOf(review: AdmissionReview): unknown[] {
  const p = review.response?.patch;
  return p ? JSON.parse(Buffer.from(p, 'base64').toString('utf8')) as unknown[] : [];
}
