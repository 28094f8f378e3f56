// createProxy(config, deps): the two listeners and everything they share. Tests call it with
// port 0 and injected dependencies (resolver, log destination, store, interceptor); main.ts calls
// it with the real ones.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { http } from '../lib/builtins.ts';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { answerInternalError, createGuard, type Guard } from '../lib/guard.ts';
import { listen, type BoundAddress } from '../lib/server.ts';
import { createAdminApp, type ReadinessReport } from './admin.ts';
import { createAuditLog } from './audit.ts';
import { podTokenAuth, staticTokenAuth } from './auth.ts';
import type { ProxyConfig } from './config.ts';
import { handleConnect } from './connect.ts';
import type { ProxyContext } from './context.ts';
import { createForwarder } from './forward.ts';
import type { Interceptor } from './interception.ts';
import { createMemoryPressure } from './memory.ts';
import { createProxyMetrics, type ProxyMetrics } from './metrics.ts';
import { localInterfaceAddresses, systemResolver, type OwnListeners, type Resolver } from './resolve.ts';
import { refuseResponse, refuseSocket, type Refusal } from './respond.ts';
import { compileRule, type CompiledRule, type RuleSpec } from './rules.ts';
import { createUpstream, gatewayEndpoint, type Upstream } from './upstream.ts';
import { MemoryRulesStore, type RulesStore } from './rules-store.ts';

/**
 * The workspace's user connects to the socket from inside its container (another uid than the
 * proxy's); who can reach it is decided by the per-workspace directory holding it.
 */
const PROXY_SOCKET_MODE = 0o666;

/** Request headers larger than this get 431: no legitimate egress request needs more. */
export const MAX_HEADER_BYTES = 16 * 1024;

export interface ProxyDeps {
  logger: Logger & { secrets?: { add(value: string): void } };
  registry: Registry;
  /** Default: an in-memory store. main.ts passes the Redis store when REDIS_URL is set. */
  store?: RulesStore;
  /** Default: the system resolver. Tests map names to local upstreams or stage rebinding. */
  resolver?: Resolver;
  /** TLS interception for credential rules; without it such CONNECTs are refused. */
  interceptor?: Interceptor;
  /** Upstream connections (default: from GATEWAY_URL, else direct); main.ts shares one with the interceptor. */
  upstream?: Upstream;
  /** Addresses that reach this host (default: the interfaces'); with ports, what the proxy never dials. */
  localAddresses?: ReadonlySet<string>;
  /** Default: the process's resident set against MEMORY_LIMIT_BYTES. */
  memoryPressure?: { pressure(): string | undefined };
}

/** What a request gets when its handler failed in a way nobody expected (a bug: logged and counted). */
const INTERNAL: Refusal = { status: 500, code: 'WS_ERR_INTERNAL', reason: 'internal error in the proxy (logged as WS_ERR_INTERNAL)' };

export interface ProxyInstance {
  readonly proxyServer: Server;
  readonly adminServer: Server;
  readonly store: RulesStore;
  readonly metrics: ProxyMetrics;
  /** Starts the store and both listeners; resolves with the bound addresses. */
  listen(): Promise<{ proxy: BoundAddress; admin: BoundAddress }>;
  rules(): readonly CompiledRule[];
  readiness(): Promise<ReadinessReport>;
  /** Closes listeners, open tunnels, the forwarder, the interceptor and the store. */
  close(): Promise<void>;
}

export function createProxy(config: ProxyConfig, deps: ProxyDeps): ProxyInstance {
  const logger = deps.logger;
  const store = deps.store ?? new MemoryRulesStore(config.rulesScope);
  const metrics = createProxyMetrics(deps.registry);
  const guard: Guard = createGuard({ logger, registry: deps.registry });
  const auth = config.POD_TOKEN_PUBLIC_KEYS_FILE ? podTokenAuth(config.POD_TOKEN_PUBLIC_KEYS_FILE, config.rulesScope)
    : config.RULES_TOKEN_FILE ? staticTokenAuth(config.RULES_TOKEN_FILE) : undefined;
  for (const s of auth?.secrets ?? []) deps.logger.secrets?.add(s);

  const staticRules = [
    ...config.staticRules.env.map((r) => compileRule(r, 'env', config.credentials)),
    ...config.staticRules.file.map((r) => compileRule(r, 'file', config.credentials)),
  ];
  let compiled: readonly CompiledRule[] = staticRules;
  const recompile = () => {
    const global = store.global().rules.map((r) => compileRule(r, 'global', config.credentials));
    const scoped = store.scoped().rules.map((r) => compileRule(r, 'api', config.credentials));
    compiled = Object.freeze([...staticRules, ...global, ...scoped]);
    metrics.rulesVersion.set(store.scoped().version);
  };
  recompile();
  store.on('change', recompile);
  let storeWasUp = store.status().up;
  const onStatus = () => {
    const up = store.status().up;
    metrics.rulesStoreUp.set(up ? 1 : 0);
    if (storeWasUp && !up) metrics.rulesStoreUnreachable.inc({ phase: 'runtime' });
    storeWasUp = up;
  };
  metrics.rulesStoreUp.set(storeWasUp ? 1 : 0);
  store.on('status', onStatus);

  const own: OwnListeners = {
    ports: new Set([config.PROXY_PORT, config.ADMIN_PORT].filter((p) => p !== 0)),
    localAddresses: deps.localAddresses ?? localInterfaceAddresses(),
  };

  const ctx: ProxyContext = {
    config,
    logger,
    audit: createAuditLog(logger, config.POD_NAME),
    metrics,
    resolver: deps.resolver ?? systemResolver,
    own,
    upstream: deps.upstream ?? createUpstream({ resolver: deps.resolver ?? systemResolver, gateway: gatewayEndpoint(config), onToken: (tk) => deps.logger.secrets?.add(tk) }),
    interceptor: deps.interceptor,
    rules: () => compiled,
    tunnels: { active: 0 },
    memory: deps.memoryPressure ?? createMemoryPressure(config.memory.shedAtBytes),
    bound: { adminPort: config.ADMIN_PORT },
    guard,
  };
  metrics.activeTunnels.set(0);

  const forwarder = createForwarder(ctx);
  const proxyServer = http.createServer({
    maxHeaderSize: MAX_HEADER_BYTES,
    headersTimeout: config.HEADER_TIMEOUT_MS,
    // Bodies may legitimately stream for long; idleness is bounded by the socket timeout below.
    requestTimeout: 0,
    // How often Node checks headersTimeout (default 30 s would make the limit meaningless).
    connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(config.HEADER_TIMEOUT_MS / 4))),
    keepAliveTimeout: 5000,
    requireHostHeader: true,
  });
  proxyServer.setTimeout(config.IDLE_TIMEOUT_MS, (socket) => socket.destroy());
  // Every listener runs under the guard: whatever a client sends, an unexpected error is logged
  // and counted, that one client gets a 500 (or its socket closed), and the proxy keeps serving.
  const failRequest = (_err: unknown, req: IncomingMessage, res: ServerResponse) => refuseResponse(req, res, INTERNAL);
  // A socket that already carries tunnel bytes (or a response) can only be closed.
  const failSocket = (_err: unknown, _req: unknown, socket: Duplex) => ((socket as Socket).bytesWritten > 0 ? socket.destroy() : refuseSocket(socket, INTERNAL));
  proxyServer.on('request', guard.wrap('proxy.request', forwarder.handle, failRequest));
  // CONNECT sockets leave the http server's bookkeeping: track them so close() can end them.
  const connectSockets = new Set<Duplex>();
  proxyServer.on('connect', guard.wrap('proxy.connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    connectSockets.add(socket);
    socket.once('close', () => connectSockets.delete(socket));
    return handleConnect(ctx, req, socket, head);
  }, failSocket));
  proxyServer.on('upgrade', guard.wrap('proxy.upgrade', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    refuseSocket(socket, { status: 400, code: 'WS_ERR_BAD_REQUEST', reason: 'protocol upgrades are not forwarded over plain HTTP: use CONNECT (HTTPS_PROXY) for wss://' }, req.headers.accept);
  }, failSocket));
  proxyServer.on('clientError', guard.wrap('proxy.client-error', (err: NodeJS.ErrnoException, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    const [status, code, reason] = err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'WS_ERR_HEADERS_TOO_LARGE', `request headers exceed ${MAX_HEADER_BYTES / 1024} KiB`] as const
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'WS_ERR_BAD_REQUEST', `request headers not received within ${config.HEADER_TIMEOUT_MS} ms`] as const
        : [400, 'WS_ERR_BAD_REQUEST', `malformed request (${err.code ?? 'parse error'})`] as const;
    metrics.requests.inc({ decision: 'deny', rule: '' });
    logger.info({ status, code: err.code }, 'refused a malformed request');
    refuseSocket(socket, { status, code, reason });
  }, (_err, _clientErr, socket) => socket.destroy()));

  let started: Promise<void> | undefined;
  const readiness = async (): Promise<ReadinessReport> => {
    const status = store.status();
    const checks: Record<string, unknown> = {
      rules: { loaded: started !== undefined, version: store.scoped().version, count: compiled.length },
      store: status,
    };
    let ready = started !== undefined;
    if (ready) {
      try {
        await started;
      } catch (err) {
        ready = false;
        checks.error = (err as Error).message;
      }
    }
    if (deps.interceptor) {
      // The CA files must exist before the workspace starts trusting them.
      const outcome = await Promise.race([
        deps.interceptor.ready.then(() => 'ready', (err: Error) => `failed: ${err.message}`),
        new Promise<string>((r) => setImmediate(() => r('pending'))),
      ]);
      checks.interceptor = outcome;
      if (outcome !== 'ready') ready = false;
    }
    return { ready, checks };
  };

  const adminApp = createAdminApp({
    logger,
    registry: deps.registry,
    store,
    auth,
    credentials: config.credentials,
    allowUnauthenticatedWrites: config.RULES_ALLOW_UNAUTHENTICATED,
    reservedIds: () => new Set([...config.staticRules.env, ...config.staticRules.file, ...store.global().rules].map((r: RuleSpec) => r.id)),
    staticRules: () => config.staticRules,
    readiness,
  });
  const adminServer = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: config.HEADER_TIMEOUT_MS });
  const failAdmin = (_err: unknown, _req: IncomingMessage, res: ServerResponse) => answerInternalError(res, 'application/json; charset=utf-8', JSON.stringify({ error: { code: INTERNAL.code, message: INTERNAL.reason } }));
  adminServer.on('request', guard.wrap('admin.request', (req: IncomingMessage, res: ServerResponse) => adminApp(req, res), failAdmin));
  // `Expect: 100-continue` is answered by the route, after the token check: a caller without one
  // gets its 401 before it sends the body.
  adminServer.on('checkContinue', guard.wrap('admin.request', (req: IncomingMessage, res: ServerResponse) => adminApp(req, res, true), failAdmin));

  return {
    proxyServer,
    adminServer,
    store,
    metrics,
    rules: () => compiled,
    readiness,
    async listen() {
      started ??= store.start();
      await started;
      // A store that never came up is an outage too, not only one that went away later.
      const status = store.status();
      if (!status.up) {
        metrics.rulesStoreUnreachable.inc({ phase: 'start' });
        logger.error({ store: status.kind, lastError: status.lastError }, 'rules store unreachable at start-up; serving the environment and file rules, retrying in the background');
      }
      // A Unix socket in the Docker mode (the workspace has no network; see agent/relay.ts).
      const proxy = await listen(proxyServer, config.PROXY_SOCKET
        ? { path: config.PROXY_SOCKET, mode: PROXY_SOCKET_MODE }
        : { port: config.PROXY_PORT, host: config.PROXY_HOST });
      const admin = await listen(adminServer, { port: config.ADMIN_PORT, host: config.ADMIN_HOST });
      // With port 0 the real ports are known only now.
      if (proxy.port !== undefined) (own.ports as Set<number>).add(proxy.port);
      (own.ports as Set<number>).add(admin.port!);
      ctx.bound.adminPort = admin.port!;
      return { proxy, admin };
    },
    async close() {
      const closing = [proxyServer, adminServer].map((s) => new Promise<void>((resolve) => {
        if (!s.listening) return resolve();
        s.close(() => resolve());
        s.closeAllConnections();
      }));
      for (const s of connectSockets) s.destroy();
      forwarder.close();
      await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 2000))]);
      await deps.interceptor?.close();
      store.off('change', recompile);
      store.off('status', onStatus);
      await store.close();
    },
  };
}
