// The webhook's HTTP layer: HTTPS for the API server (/mutate, /healthz, /readyz) and plain HTTP
// for Prometheus (/metrics). It only decodes, calls `reviewRequest`, encodes, logs and counts.
// node:http is used directly: the admission path is a single POST route and every microsecond
// here is paid by every Pod creation in the cluster.
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { isWorkspaceSandboxError } from '../lib/errors.ts';
import { createGuard } from '../lib/guard.ts';
import { readBody } from '../lib/http.ts';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Registry } from 'prom-client';
import { createDevPair } from '../lib/certs.ts';
import { WEBHOOK_PATHS } from '../lib/constants.ts';
import { createLogger, type AppLogger } from '../lib/log.ts';
import { createMetricsRegistry, metricsHandler } from '../lib/metrics.ts';
import { createShutdown, listen, type BoundAddress, type Shutdown } from '../lib/server.ts';
import { KeyPairWatcher } from '../lib/tls.ts';
import type { DestinationStream } from 'pino';
import {
  decodeReview, erroredResponse, reviewRequest, toReview, type AdmissionRequest, type AdmissionResponse, type Outcome,
} from './admission.ts';
import { configHash, type InjectionConfig, type WebhookEnv } from './config.ts';
import { ConfigWatcher } from './config-watcher.ts';
import { http } from '../lib/builtins.ts';
import { createWebhookMetrics, type WebhookMetrics } from './metrics.ts';

const { createServer: createHttpServer } = http;

/**
 * Largest AdmissionReview accepted. etcd's default request limit is 1.5 MiB and the API server
 * accepts request bodies up to 3 MiB; a review carries the object and, on UPDATE, the old object
 * (2 × 3 MiB) plus its envelope. controller-runtime derives the same 7 MiB (pkg/webhook/admission/http.go).
 */
export const MAX_REQUEST_BYTES = 7 * 1024 * 1024;

/** Message of the one log line written per review, and its fields. */
export const LOG_REVIEW = 'admission review';
export const LOG_FIELDS = Object.freeze({
  uid: 'uid', namespace: 'namespace', pod: 'pod', generateName: 'generateName', operation: 'operation',
  dryRun: 'dryRun', result: 'result', reason: 'reason', patchOps: 'patchOps', warnings: 'warnings', durationMs: 'durationMs', status: 'status',
});

/** Baseline route for the benchmark: reads and parses the review, answers allowed, no injection. */
export const BASELINE_PATH = '/noop';

export interface WebhookServerOptions {
  env: Pick<WebhookEnv, 'WEBHOOK_HOST' | 'WEBHOOK_PORT' | 'METRICS_HOST' | 'METRICS_PORT' | 'WEBHOOK_CONFIG_FILE' | 'TLS_CERT_FILE' | 'TLS_KEY_FILE' | 'LOG_LEVEL' | 'DRAIN_TIMEOUT_MS' | 'RELOAD_POLL_INTERVAL_MS'>;
  injection: InjectionConfig;
  logger?: AppLogger;
  /** Where log lines go when no logger is given (tests capture them). */
  logDestination?: DestinationStream;
  /** Adds POST /noop (benchmarks only). */
  baseline?: boolean;
  /** Process metrics; off in tests that build many servers. */
  defaultMetrics?: boolean;
  /** File watch debounce (tests shorten it). */
  reloadDebounceMs?: number;
}

export interface WebhookServer {
  readonly https: HttpsServer;
  readonly metricsServer: HttpServer;
  readonly registry: Registry;
  readonly metrics: WebhookMetrics;
  readonly logger: AppLogger;
  readonly configWatcher?: ConfigWatcher;
  readonly keyPairWatcher?: KeyPairWatcher;
  /** CA of the dev self-signed pair (absent with TLS files). */
  readonly devCaPem?: string;
  /** The injection config in use now. */
  config(): InjectionConfig;
  listen(): Promise<{ webhook: BoundAddress; metrics: BoundAddress }>;
  readonly shutdown: Shutdown;
}

function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]!.trim().toLowerCase();
}

function send(res: ServerResponse, status: number, body: string, contentType = 'application/json', close = false): void {
  const headers: Record<string, string | number> = { 'content-type': contentType, 'content-length': Buffer.byteLength(body) };
  // A body we did not read stays on the socket: close it rather than parse it as the next request.
  if (close) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(body);
}

export function createWebhookServer(options: WebhookServerOptions): WebhookServer {
  const { env } = options;
  const logger = options.logger ?? createLogger({ name: 'webhook', level: env.LOG_LEVEL, ...(options.logDestination ? { destination: options.logDestination } : {}) });
  const registry = createMetricsRegistry({ program: 'webhook', defaultMetrics: options.defaultMetrics ?? true });
  const metrics = createWebhookMetrics(registry);

  // --- Injection config, hot-reloaded. ---
  let injection = options.injection;
  const showConfig = (c: InjectionConfig) => {
    metrics.configInfo.reset();
    metrics.configInfo.set({ hash: configHash(c) }, 1);
  };
  showConfig(injection);
  let configWatcher: ConfigWatcher | undefined;
  if (env.WEBHOOK_CONFIG_FILE) {
    configWatcher = new ConfigWatcher(env.WEBHOOK_CONFIG_FILE, injection, { pollIntervalMs: env.RELOAD_POLL_INTERVAL_MS, debounceMs: options.reloadDebounceMs ?? 50 });
    configWatcher.on('reload', (next) => {
      injection = next;
      showConfig(next);
      metrics.configReloads.inc({ result: 'success' });
      logger.info({ file: env.WEBHOOK_CONFIG_FILE, hash: configHash(next) }, 'injection config reloaded');
    });
    configWatcher.on('reloadFailed', (err) => {
      metrics.configReloads.inc({ result: 'error' });
      logger.error({ file: env.WEBHOOK_CONFIG_FILE, err: err.message, kept: configHash(injection) }, 'injection config reload failed; keeping the previous config');
    });
  }

  // --- TLS: cert-manager files, reloaded on rotation; or a dev self-signed pair. ---
  let keyPairWatcher: KeyPairWatcher | undefined;
  let devCaPem: string | undefined;
  let server: HttpsServer;
  // Every listener runs under the guard: an error nobody expected (a bug) is logged with the stable
  // code WS_ERR_INTERNAL, counted (unexpected_errors_total{where}), answered 500 or its socket
  // closed, and the webhook keeps serving every other review.
  const guard = createGuard({ logger, registry });
  const fail500 = (_err: unknown, _req: IncomingMessage, res: ServerResponse) => {
    if (res.headersSent) return void res.destroy();
    send(res, 500, JSON.stringify(toReview(erroredResponse('', 500, 'internal error'))), 'application/json', true);
  };
  const handler = guard.wrap('webhook.request', (req: IncomingMessage, res: ServerResponse) => handle(req, res), fail500);
  if (env.TLS_CERT_FILE && env.TLS_KEY_FILE) {
    keyPairWatcher = new KeyPairWatcher({ certFile: env.TLS_CERT_FILE, keyFile: env.TLS_KEY_FILE }, { pollIntervalMs: env.RELOAD_POLL_INTERVAL_MS, debounceMs: options.reloadDebounceMs ?? 50 });
    server = createHttpsServer({}, handler);
    keyPairWatcher.attach(server);
    metrics.tlsExpiry.set(keyPairWatcher.notAfter.getTime() / 1000);
    keyPairWatcher.on('reload', (pair) => {
      metrics.tlsExpiry.set(pair.notAfter.getTime() / 1000);
      logger.info({ notAfter: pair.notAfter.toISOString() }, 'serving certificate reloaded');
    });
    keyPairWatcher.on('reloadFailed', (err) => logger.error({ err: err.message }, 'serving certificate reload failed; keeping the previous pair'));
  } else {
    const dev = createDevPair(['localhost', '127.0.0.1', '::1']);
    devCaPem = dev.caPem;
    server = createHttpsServer({ cert: dev.certPem, key: dev.keyPem }, handler);
    metrics.tlsExpiry.set(dev.notAfter.getTime() / 1000);
    logger.warn('TLS_CERT_FILE/TLS_KEY_FILE not set: serving a dev self-signed certificate');
  }
  // The API server keeps connections alive; a short idle timeout only costs it handshakes.
  server.keepAliveTimeout = 65_000;

  const metricsServer = createHttpServer(guard.wrap('webhook.metrics', (req: IncomingMessage, res: ServerResponse) => {
    if ((req.url ?? '').split('?')[0] === WEBHOOK_PATHS.metrics) return metricsHandler(registry)(req, res);
    send(res, 404, 'not found\n', 'text/plain');
  }, (_err, _req, res) => (res.headersSent ? res.destroy() : send(res, 500, 'internal error\n', 'text/plain', true))));

  const shutdown = createShutdown({
    servers: [server, metricsServer],
    drainTimeoutMs: env.DRAIN_TIMEOUT_MS,
    logger,
    afterDrain: () => {
      configWatcher?.close();
      keyPairWatcher?.close();
    },
  });

  // --- Requests. ---
  function finish(res: ServerResponse, started: bigint, httpStatus: number, response: AdmissionResponse, log: {
    request?: AdmissionRequest; result: Outcome; reason: string; patchOps: number; close?: boolean;
  }): void {
    send(res, httpStatus, JSON.stringify(toReview(response)), 'application/json', log.close);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const r = log.request;
    const operation = typeof r?.operation === 'string' ? r.operation : 'unknown';
    metrics.requests.inc({ operation, result: log.result });
    metrics.duration.observe({ result: log.result }, seconds);
    const obj = r && typeof r.object === 'object' && r.object !== null ? (r.object as { metadata?: { name?: unknown; generateName?: unknown } }).metadata : undefined;
    logger.info({
      [LOG_FIELDS.uid]: response.uid,
      [LOG_FIELDS.namespace]: r?.namespace,
      // Not `name`: the logger's own name ("webhook") is that key, and a line must not carry it twice.
      [LOG_FIELDS.pod]: r?.name || obj?.name || undefined,
      [LOG_FIELDS.generateName]: obj?.generateName || undefined,
      [LOG_FIELDS.operation]: operation,
      [LOG_FIELDS.dryRun]: r?.dryRun === true,
      [LOG_FIELDS.result]: log.result,
      [LOG_FIELDS.reason]: log.reason || (response.status?.message ?? ''),
      [LOG_FIELDS.status]: httpStatus,
      [LOG_FIELDS.patchOps]: log.patchOps,
      [LOG_FIELDS.warnings]: response.warnings?.length ?? 0,
      [LOG_FIELDS.durationMs]: Math.round(seconds * 1e6) / 1e3,
    }, LOG_REVIEW);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const path = (req.url ?? '').split('?')[0];
    if (path === WEBHOOK_PATHS.healthz) return send(res, 200, 'ok\n', 'text/plain');
    if (path === WEBHOOK_PATHS.readyz) return shutdown.started ? send(res, 503, 'shutting down\n', 'text/plain') : send(res, 200, 'ok\n', 'text/plain');
    const baseline = options.baseline === true && path === BASELINE_PATH;
    if (path !== WEBHOOK_PATHS.mutate && !baseline) return send(res, 404, 'not found\n', 'text/plain');
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      return finish(res, started, 405, erroredResponse('', 405, `method ${req.method} not allowed; POST an AdmissionReview`), { result: 'error', reason: 'method', patchOps: 0 });
    }
    try {
      const type = mediaType(req.headers['content-type']);
      if (type !== 'application/json') {
        return finish(res, started, 415, erroredResponse('', 415, `content type ${JSON.stringify(type || '(none)')} is not application/json`), { result: 'error', reason: 'content-type', patchOps: 0, close: true });
      }
      const declared = Number(req.headers['content-length']);
      if (declared > MAX_REQUEST_BYTES) {
        return finish(res, started, 413, erroredResponse('', 413, `request body of ${declared} bytes exceeds the limit of ${MAX_REQUEST_BYTES}`), { result: 'error', reason: 'too-large', patchOps: 0, close: true });
      }
      let body: string;
      try {
        body = (await readBody(req, MAX_REQUEST_BYTES)).toString('utf8');
      } catch (err) {
        if (isWorkspaceSandboxError(err) && err.code === 'WS_ERR_PAYLOAD_TOO_LARGE') {
          return finish(res, started, 413, erroredResponse('', 413, `request body exceeds the limit of ${MAX_REQUEST_BYTES} bytes`), { result: 'error', reason: 'too-large', patchOps: 0, close: true });
        }
        throw err;
      }
      const decoded = decodeReview(body);
      if (!decoded.ok) return finish(res, started, 400, erroredResponse(decoded.uid, 400, decoded.message), { result: 'error', reason: 'bad-review', patchOps: 0 });
      if (baseline) return finish(res, started, 200, { uid: decoded.request.uid, allowed: true }, { request: decoded.request, result: 'unchanged', reason: 'baseline', patchOps: 0 });
      const outcome = reviewRequest(decoded.request, injection);
      if (outcome.runtimeFallback !== undefined && decoded.request.dryRun !== true) metrics.runtimeFallbacks.inc({ runtime_class: outcome.runtimeFallback });
      finish(res, started, 200, outcome.response, { request: decoded.request, result: outcome.result, reason: outcome.reason, patchOps: outcome.patchOps });
    } catch (err) {
      // A bug, not a bad request: answer with a reason (the API server applies failurePolicy).
      guard.report('webhook.review', err);
      if (!res.headersSent) finish(res, started, 500, erroredResponse('', 500, `internal error: ${(err as Error).message}`), { result: 'error', reason: 'internal', patchOps: 0 });
      else res.destroy();
    }
  }

  return {
    https: server,
    metricsServer,
    registry,
    metrics,
    logger,
    ...(configWatcher ? { configWatcher } : {}),
    ...(keyPairWatcher ? { keyPairWatcher } : {}),
    ...(devCaPem ? { devCaPem } : {}),
    config: () => injection,
    async listen() {
      const webhook = await listen(server, { port: env.WEBHOOK_PORT, host: env.WEBHOOK_HOST });
      const m = await listen(metricsServer, { port: env.METRICS_PORT, host: env.METRICS_HOST });
      return { webhook, metrics: m };
    },
    shutdown,
  };
}
