// createGateway(config, deps): the CONNECT listener and the metrics listener. Per CONNECT, in this
// order: capacity, the pod's token (407 without a valid one, before anything about the target is
// revealed), the pod's own tunnel limit, the policy (policy.ts), then the dial to the checked
// address and a byte pump with backpressure both ways. Every refusal carries its reason in
// X-Workspace-Sandbox-Deny-Reason and writes the canonical audit line naming the pod.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { createAuditLog } from '../credential-proxy/audit.ts';
import { upstreamFailure } from '../credential-proxy/connect.ts';
import { localInterfaceAddresses, staticHostsResolver, systemResolver, type Resolver } from '../credential-proxy/resolve.ts';
import { headerSafe } from '../credential-proxy/respond.ts';
import { HEADER_DENY_REASON, PRODUCT } from '../lib/constants.ts';
import { http } from '../lib/builtins.ts';
import { answerInternalError, createGuard } from '../lib/guard.ts';
import { metricsHandler } from '../lib/metrics.ts';
import { DownloadRelay, startRelay } from '../lib/relay.ts';
import { listen, type BoundAddress } from '../lib/server.ts';
import type { GatewayConfig } from './config.ts';
import type { KubernetesApi } from './kubernetes.ts';
import { createGatewayMetrics, type GatewayMetrics } from './metrics.ts';
import { createPolicy } from './policy.ts';
import { TokenValidator, type PodIdentity } from './token-review.ts';

/** A CONNECT request is one line and a few headers; a projected token is about 1 KiB. */
export const MAX_HEADER_BYTES = 16 * 1024;
export const PROXY_AUTHENTICATE = `Bearer realm="${PRODUCT}-gateway"`;

export interface GatewayDeps {
  logger: Logger;
  registry: Registry;
  api: KubernetesApi;
  /** Default: GATEWAY_STATIC_HOSTS, then the system resolver. */
  resolver?: Resolver;
  localAddresses?: ReadonlySet<string>;
  /**
   * Opens the upstream TCP connection to the checked address (default: node:net's connect). The
   * socket must be opened with `onread`: the relay reads the upstream's bytes through it.
   */
  connect?: (target: { host: string; port: number; family: 4 | 6; onread: OnReadOpts }) => Socket;
}

export interface GatewayInstance {
  readonly server: Server;
  readonly metricsServer: Server;
  readonly metrics: GatewayMetrics;
  readonly validator: TokenValidator;
  listen(): Promise<{ gateway: BoundAddress; metrics: BoundAddress }>;
  close(): Promise<void>;
}

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n');

/** Answers on the raw socket and closes it; a client that never reads cannot keep it. */
function refuse(socket: Duplex, status: number, reason: string, extraHeaders: string[] = []): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = `${PRODUCT} gateway: ${reason}\n`;
  socket.end([
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}`,
    `${HEADER_DENY_REASON}: ${headerSafe(reason)}`,
    ...extraHeaders,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    '',
    body,
  ].join('\r\n'));
  const timer = setTimeout(() => socket.destroy(), 5000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** The answer of a guarded request handler that failed. */
const failResponse = (res: ServerResponse) => answerInternalError(res, 'text/plain; charset=utf-8', `${PRODUCT} gateway: internal error\n`);

export function createGateway(config: GatewayConfig, deps: GatewayDeps): GatewayInstance {
  const { logger } = deps;
  const metrics = createGatewayMetrics(deps.registry, config.METRICS_MAX_PODS);
  const validator = new TokenValidator(deps.api, {
    audience: config.GATEWAY_AUDIENCE,
    namespaces: config.GATEWAY_NAMESPACES,
    bindSourceAddress: config.GATEWAY_BIND_SOURCE_ADDRESS,
    cacheTtlMs: config.TOKEN_CACHE_TTL_MS,
    negativeTtlMs: config.TOKEN_NEGATIVE_TTL_MS,
    cacheMax: config.TOKEN_CACHE_MAX,
    maxPending: config.TOKEN_REVIEWS_MAX_PENDING,
    timeoutMs: config.TOKEN_REVIEW_TIMEOUT_MS,
  });
  const policy = createPolicy({
    ports: config.GATEWAY_PORTS,
    ceiling: config.ceiling,
    labCidrs: config.labCidrs,
    resolver: deps.resolver ?? staticHostsResolver(config.GATEWAY_STATIC_HOSTS, systemResolver),
    localAddresses: deps.localAddresses ?? localInterfaceAddresses(),
  });
  const guard = createGuard({ logger, registry: deps.registry });
  const dial = deps.connect ?? ((target) => netConnect(target));
  let active = 0;
  const perPod = new Map<string, number>();
  const sockets = new Set<Socket>();

  const handleConnect = async (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const started = performance.now();
    const client = socket.remoteAddress ?? '';
    const anonymous = createAuditLog(logger.child({ client }), undefined);
    const target = String(req.url).slice(0, 300);
    const early = (status: number, reason: string, extra?: string[]) => {
      anonymous({ kind: 'connect', decision: 'deny', host: target, port: 0, status, reason, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started });
      refuse(socket, status, reason, extra);
    };
    const atLimit = () => active >= config.MAX_TUNNELS;
    const limitReason = `the gateway is at its tunnel limit (${config.MAX_TUNNELS})`;
    // Checked before the token review (a full gateway spends nothing on it) and again below, with no
    // await before the count: CONNECTs reviewed at the same time must not all pass the first check.
    if (atLimit()) return early(429, limitReason);

    const auth = await validator.validate(req.headers['proxy-authorization'], client);
    metrics.tokenReviews.inc({ cached: String(auth.cached) });
    if (socket.destroyed) return;
    if (!auth.ok) {
      metrics.authFailure(auth.reason);
      return early(auth.status, auth.message, auth.status === 407 ? [`Proxy-Authenticate: ${PROXY_AUTHENTICATE}`] : []);
    }
    const id: PodIdentity = auth.identity;
    const podKey = `${id.namespace}/${id.pod}`;
    const audit = createAuditLog(logger.child({ client }), podKey);
    metrics.touchPod(id.namespace, id.pod);
    const labels = { namespace: id.namespace, pod: id.pod };
    const podActive = perPod.get(podKey) ?? 0;
    if (podActive >= config.MAX_TUNNELS_PER_POD) {
      metrics.connections.inc({ ...labels, decision: 'deny' });
      audit({ kind: 'connect', decision: 'deny', host: target, port: 0, status: 429, reason: 'pod tunnel limit', bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started });
      return refuse(socket, 429, `pod ${podKey} has ${podActive} open tunnels (limit ${config.MAX_TUNNELS_PER_POD})`);
    }

    if (atLimit()) {
      audit({ kind: 'connect', decision: 'deny', host: target, port: 0, status: 429, reason: 'gateway tunnel limit', bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started });
      return refuse(socket, 429, limitReason);
    }
    // Counted from here: resolving and dialling hold resources too.
    active++;
    perPod.set(podKey, podActive + 1);
    metrics.activeTunnels.inc();
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      active--;
      const n = (perPod.get(podKey) ?? 1) - 1;
      if (n <= 0) perPod.delete(podKey);
      else perPod.set(podKey, n);
      metrics.activeTunnels.dec();
    };
    socket.once('close', release);

    const verdict = await policy.check(String(req.url));
    if (socket.destroyed) return release();
    if (!verdict.ok) {
      release();
      metrics.connections.inc({ ...labels, decision: 'deny' });
      audit({ kind: 'connect', decision: 'deny', host: verdict.host, port: verdict.port, status: verdict.status, reason: verdict.reason, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started });
      return refuse(socket, verdict.status, verdict.reason);
    }

    const dialStarted = performance.now();
    // The upstream reads straight into pooled buffers (lib/relay.ts).
    const relay = new DownloadRelay(socket);
    const upstream = dial({ host: verdict.address, port: verdict.port, family: verdict.family, onread: relay.onread });
    relay.source = upstream;
    upstream.setNoDelay(true);
    let established = false;
    let failure: string | undefined;
    const connectTimer = setTimeout(() => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'UPSTREAM_CONNECT_TIMEOUT' })), config.UPSTREAM_CONNECT_TIMEOUT_MS);
    const onEarlyClose = () => upstream.destroy();
    socket.once('close', onEarlyClose);
    upstream.once('connect', () => {
      clearTimeout(connectTimer);
      metrics.upstreamConnectSeconds.observe((performance.now() - dialStarted) / 1000);
      if (socket.destroyed) return upstream.destroy();
      established = true;
      metrics.connections.inc({ ...labels, decision: 'tunnel' });
      socket.setNoDelay(true);
      socket.write(ESTABLISHED);
      // Backpressure both ways: a slow reader pauses the fast writer, so a tunnel buffers at most
      // its relay's bound (lib/relay.ts) whatever the client or the upstream does.
      startRelay(socket, upstream, relay, head);
      socket.setTimeout(config.IDLE_TIMEOUT_MS, () => {
        failure = 'idle timeout';
        socket.destroy();
        upstream.destroy();
      });
    });
    upstream.on('error', (err) => {
      clearTimeout(connectTimer);
      if (!established) {
        socket.off('close', onEarlyClose);
        release();
        if (socket.destroyed) return;
        const reason = `${upstreamFailure(err)} (${verdict.host}:${verdict.port})`;
        metrics.connections.inc({ ...labels, decision: 'error' });
        audit({ kind: 'connect', decision: 'tunnel', host: verdict.host, port: verdict.port, address: verdict.address, status: 502, reason, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started, error: reason });
        return refuse(socket, 502, reason);
      }
      failure ??= upstreamFailure(err);
      socket.destroy();
    });
    // The upstream finished sending: pass the half-close on (the client may still be sending).
    upstream.once('end', () => {
      if (established && !socket.destroyed && !socket.writableEnded) socket.end();
    });
    upstream.once('close', () => {
      clearTimeout(connectTimer);
      if (!established) return;
      if (!socket.destroyed && !socket.writableEnded) socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    socket.once('close', () => {
      if (!established) return;
      upstream.destroy();
      const up = upstream.bytesWritten;
      const down = upstream.bytesRead;
      metrics.bytes.inc({ ...labels, direction: 'up' }, up);
      metrics.bytes.inc({ ...labels, direction: 'down' }, down);
      audit({
        kind: 'connect', decision: 'tunnel', host: verdict.host, port: verdict.port, address: verdict.address, status: 200,
        bytesUp: up, bytesDown: down, durationMs: performance.now() - started, ...(failure ? { error: failure } : {}),
      });
    });
  };

  const server = http.createServer({
    maxHeaderSize: MAX_HEADER_BYTES,
    headersTimeout: config.HEADER_TIMEOUT_MS,
    requestTimeout: config.HEADER_TIMEOUT_MS,
    // Node checks these timeouts on this interval (default 30 s): check often enough to honour them.
    connectionsCheckingInterval: Math.max(50, Math.min(config.HEADER_TIMEOUT_MS / 4, 30_000)),
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  // Every handler runs in the guard: an unexpected error (a bug) is logged with its code, counted,
  // and answered 500 (or its socket closed); the gateway keeps serving every other tunnel.
  const failSocket = (_err: unknown, _req: IncomingMessage, socket: Duplex) => refuse(socket, 500, 'internal error');
  server.on('connect', guard.wrap('gateway.connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const s = socket as Socket;
    // Errors after a refusal or during a tunnel end in 'close'; none may end the process.
    s.on('error', () => s.destroy());
    return handleConnect(req, s, head);
  }, failSocket));
  server.on('request', guard.wrap('gateway.request', (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    const reason = 'this is an egress gateway: only CONNECT host:port with the pod\'s token';
    res.writeHead(405, { [HEADER_DENY_REASON]: reason, allow: 'CONNECT', 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
    res.end(`${PRODUCT} gateway: ${reason}\n`);
  }, (_err, _req, res) => failResponse(res)));
  server.on('upgrade', guard.wrap('gateway.upgrade', (_req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    refuse(socket, 405, 'only CONNECT is served');
  }, failSocket));
  server.on('clientError', guard.wrap('gateway.client-error', (err: NodeJS.ErrnoException, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    const [status, reason] = err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, `request headers exceed ${MAX_HEADER_BYTES / 1024} KiB`]
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, `request not received within ${config.HEADER_TIMEOUT_MS} ms`]
        : [400, `malformed request (${err.code ?? 'parse error'})`];
    refuse(socket, status, reason);
  }, (_err, _clientErr, socket) => socket.destroy()));

  let ready = false;
  const metricsServer = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: config.HEADER_TIMEOUT_MS });
  metricsServer.on('request', guard.wrap('gateway.metrics', (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      metricsHandler(deps.registry)(req, res).catch(() => res.destroy());
      return;
    }
    if (path === '/healthz' || path === '/readyz') {
      const ok = path === '/healthz' || ready;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ ok, activeTunnels: active, pendingReviews: validator.pending }));
      return;
    }
    res.writeHead(404).end();
  }, (_err, _req, res) => failResponse(res)));

  return {
    server,
    metricsServer,
    metrics,
    validator,
    async listen() {
      const gateway = await listen(server, { port: config.GATEWAY_PORT, host: config.GATEWAY_HOST });
      const m = await listen(metricsServer, { port: config.GATEWAY_METRICS_PORT, host: config.GATEWAY_METRICS_HOST });
      ready = true;
      return { gateway, metrics: m };
    },
    async close() {
      ready = false;
      const closing = [server, metricsServer].map((s) => new Promise<void>((resolve) => {
        if (!s.listening) return resolve();
        s.close(() => resolve());
        s.closeAllConnections();
      }));
      for (const s of sockets) s.destroy();
      await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 2000))]);
    },
  };
}
