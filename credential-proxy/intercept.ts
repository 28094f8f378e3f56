// TLS interception for CONNECTs whose rule carries credentials: the proxy answers the CONNECT,
// terminates TLS with a leaf of the per-pod CA, checks every request inside against the rule,
// strips whatever credential the workspace sent, adds the real one, and forwards the request over
// verified TLS to the address the proxy already checked. Responses stream back as they arrive
// (Bedrock event streams, SSE); a client that goes away takes the upstream request with it.
//
// Inside the tunnel the proxy speaks HTTP/1.1 only (ALPN `http/1.1`). Note for workspaces: the AWS
// SDK v3 BedrockRuntimeClient defaults to an HTTP/2 handler, which neither uses a proxy nor offers
// HTTP/1.1; give it the SDK's NodeHttpHandler with an https.Agent that honours HTTPS_PROXY
// (Node 24: `new https.Agent({ proxyEnv: process.env })`). InvokeModel and
// InvokeModelWithResponseStream work over HTTP/1.1; the bidirectional stream needs HTTP/2.
import { readFileSync } from 'node:fs';
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { http as nodeHttp, https, tls } from '../lib/builtins.ts';
import type { Agent } from 'node:https';
import { Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { Duplex } from 'node:stream';
import { Counter, type Registry } from 'prom-client';
import { createEcKeyPair, type CertificateAuthority } from '../lib/certs.ts';
import { HEADER_DENY_REASON } from '../lib/constants.ts';
import { errorBody, WorkspaceSandboxError, type ErrorCode } from '../lib/errors.ts';
import { failedOnStaleConnection, IDEMPOTENT_METHODS } from '../lib/http.ts';
import type { AppLogger } from '../lib/log.ts';
import { createAuditLog, type AuditLog } from './audit.ts';
import { createPodCA, systemTrustBundle, writeCAFiles, type CAFiles } from './ca.ts';
import { loadOrCreateCA, type CAOrigin } from './ca-state.ts';
import type { CredentialSpec } from './credential-spec.ts';
import { headerCredential, SecretReader } from './credentials.ts';
import { methodAllowed, pathAllowed, reflectingMethod } from './decide.ts';
import { createGuard } from '../lib/guard.ts';
import type { InterceptTarget, Interceptor } from './interception.ts';
import { LeafCache } from './leaf-cache.ts';
import { ByteBudget, DEFAULT_MEMORY_LIMIT_BYTES, memoryBudget } from './memory.ts';
import { normaliseHost } from './rules.ts';
import { createSigV4Signer, DEFAULT_SIGNING_BODY_CAP, type AwsCredentialsProvider, type SigV4Signer } from './sigv4.ts';
import { GatewayRefusal, type Upstream } from './upstream.ts';

/** The proxy config fields interception reads (the proxy's config object has them all). */
export interface InterceptorConfig {
  readonly CA_DIR: string;
  /** Keeps the CA across sidecar restarts (ca-state.ts). */
  readonly PROXY_STATE_DIR?: string | undefined;
  readonly CA_VALIDITY_SECONDS?: number | undefined;
  readonly UPSTREAM_CA_FILE?: string | undefined;
  readonly POD_NAME?: string | undefined;
  /** Largest request body buffered for SigV4 signing; over it → 413. */
  readonly SIGNING_BODY_CAP_BYTES?: number | undefined;
  readonly IDLE_TIMEOUT_MS?: number | undefined;
  readonly HEADER_TIMEOUT_MS?: number | undefined;
  readonly UPSTREAM_CONNECT_TIMEOUT_MS?: number | undefined;
  /** Bytes of bodies held for signing at once, across all tunnels (the proxy's memory budget); over it → 503. */
  readonly memory?: { readonly signingBudgetBytes: number } | undefined;
}

export interface InterceptorDeps {
  logger: AppLogger;
  /** Where `{ env }` credential sources are read (the proxy's config module hands it over). */
  env?: Readonly<Record<string, string | undefined>>;
  /** AWS credentials; default: the SDK's Node default chain (Pod Identity, IRSA, env). */
  awsCredentials?: AwsCredentialsProvider;
  /** The canonical audit line writer shared with the egress proxy. */
  audit?: AuditLog;
  registry?: Registry;
  /** The trust bundle the workspace gets, plus this CA; default: the image's system bundle. */
  systemBundle?: string;
  /** How often a credential file is checked for rotation (ms). */
  credentialFileRecheckMs?: number;
  /** Upstream connections; with a gateway, every intercepted request's TLS runs inside a CONNECT tunnel through it. */
  upstream?: Upstream;
}

export interface InterceptorHandle extends Interceptor {
  /** Set once `ready` resolved. */
  readonly ca: CertificateAuthority | undefined;
  readonly caFiles: CAFiles | undefined;
  readonly leaves: LeafCache | undefined;
}

const ALPN = ['http/1.1'];
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Hop-by-hop headers (RFC 9110 §7.6.1) and `expect` (answered here, never forwarded). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

interface Session {
  readonly target: InterceptTarget;
  /** Handshake plus first request headers: an http.Server that never listens enforces no headersTimeout. */
  timer: NodeJS.Timeout | undefined;
}

class Refusal extends WorkspaceSandboxError {}

function refuse(code: ErrorCode, message: string): Refusal {
  return new Refusal(code, message);
}

export function createInterceptor(config: InterceptorConfig, deps: InterceptorDeps): InterceptorHandle {
  const logger = deps.logger;
  const audit = deps.audit ?? createAuditLog(logger, config.POD_NAME);
  const podName = config.POD_NAME ?? 'local';
  const bodyCap = config.SIGNING_BODY_CAP_BYTES ?? DEFAULT_SIGNING_BODY_CAP;
  const signingBudget = new ByteBudget(config.memory?.signingBudgetBytes ?? Math.max(bodyCap, maxSigningBudget()));
  const idleTimeoutMs = config.IDLE_TIMEOUT_MS ?? 300_000;
  const headerTimeoutMs = config.HEADER_TIMEOUT_MS ?? 10_000;
  const connectTimeoutMs = config.UPSTREAM_CONNECT_TIMEOUT_MS ?? 10_000;
  const reader = new SecretReader({ env: deps.env ?? {}, secrets: logger.secrets, ...(deps.credentialFileRecheckMs !== undefined ? { fileRecheckMs: deps.credentialFileRecheckMs } : {}) });
  const signer: SigV4Signer = createSigV4Signer({ ...(deps.awsCredentials ? { credentials: deps.awsCredentials } : {}), secrets: logger.secrets });
  const guard = createGuard({ logger, registry: deps.registry });
  const requests = deps.registry
    ? new Counter({ name: 'proxy_intercepted_requests_total', help: 'Requests inside intercepted tunnels by rule and status', labelNames: ['rule', 'status'], registers: [deps.registry] })
    : undefined;

  const systemBundle = deps.systemBundle ?? systemTrustBundle();
  // One context for every upstream connection: building it parses the whole trust bundle, which
  // per connection would cost more than the handshake.
  const upstreamCaText = config.UPSTREAM_CA_FILE ? readFileSync(config.UPSTREAM_CA_FILE, 'utf8') : '';
  // Made on the first intercepted request, not at start: parsing ~140 roots costs time and memory
  // that a pod without credential traffic never needs.
  let upstreamContext: SecureContext | undefined;
  const upstreamTls = (): SecureContext => upstreamContext ??= tls().createSecureContext({
    ca: upstreamCaText ? [systemBundle, upstreamCaText] : [systemBundle], minVersion: 'TLSv1.2',
  });
  // Made on the first intercepted request too (node:https loads node:tls).
  let agent: Agent | undefined;
  const upstreamAgent = (): Agent => {
    if (agent) return agent;
    agent = new (https().Agent)({ keepAlive: true, scheduling: 'lifo', maxFreeSockets: 64, timeout: idleTimeoutMs });
    if (deps.upstream?.gateway) Object.assign(agent, { createConnection: deps.upstream.agentConnection(true) });
    return agent;
  };

  let ca: CertificateAuthority | undefined;
  let caFiles: CAFiles | undefined;
  let leaves: LeafCache | undefined;
  let closed = false;
  const sockets = new Set<Duplex>();

  // CA and leaf keys are ECDSA P-256: made in well under a millisecond, and a server-side handshake
  // signature costs a small fraction of an RSA one, so a new intercepted connection is cheap.
  const leafKey = createEcKeyPair();
  const ready = (async () => {
    const create = () => createPodCA({
      podName, ...(config.CA_VALIDITY_SECONDS ? { validityMs: config.CA_VALIDITY_SECONDS * 1000 } : {}),
    });
    let origin: CAOrigin = 'created';
    if (config.PROXY_STATE_DIR) ({ ca, origin } = await loadOrCreateCA(config.PROXY_STATE_DIR, create));
    else ca = create();
    caFiles = await writeCAFiles(config.CA_DIR, ca.certPem, systemBundle, upstreamCaText);
    leaves = new LeafCache({ ca, keyPair: leafKey });
    logger.info({ caDir: config.CA_DIR, notAfter: ca.notAfter.toISOString(), origin }, origin === 'reused' ? 'per-pod CA kept from before a restart' : 'per-pod CA ready');
  })();
  // A failure is reported through `ready` (readiness stays false); don't crash on it here.
  ready.catch((err: unknown) => logger.error({ err }, 'per-pod CA setup failed'));

  const http = nodeHttp.createServer({
    maxHeaderSize: 16 * 1024,
    keepAliveTimeout: idleTimeoutMs,
    requestTimeout: 0,
    headersTimeout: headerTimeoutMs,
    noDelay: true,
    requireHostHeader: true,
  });
  // Guarded like the proxy's own listeners: a bug answers this request 500, never ends the process.
  const failRequest = (_err: unknown, req: IncomingMessage, res: ServerResponse) => sendError(req, res, new WorkspaceSandboxError('WS_ERR_INTERNAL', 'internal error in the proxy (logged as WS_ERR_INTERNAL)'));
  http.on('request', guard.wrap('intercept.request', (req: IncomingMessage, res: ServerResponse) => handleRequest(req, res), failRequest));
  // `Expect: 100-continue` is answered here (after the checks), so a body over the cap is refused
  // before the client sends it.
  http.on('checkContinue', guard.wrap('intercept.request', (req: IncomingMessage, res: ServerResponse) => handleRequest(req, res, true), failRequest));
  // Malformed requests inside the tunnel: a clean 4xx and a closed connection, never a crash.
  http.on('clientError', guard.wrap('intercept.client-error', (err: NodeJS.ErrnoException, socket: Duplex) => {
    logger.debug({ err: err.message, code: err.code, host: sessions.get(socket)?.target.host }, 'intercepted client error');
    if (!socket.writable || !err.code?.startsWith('HPE_')) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  }, (_err, _clientErr, socket) => socket.destroy()));

  const sessions = new WeakMap<Duplex, Session>();

  function handleConnect(clientSocket: Duplex, head: Buffer, target: InterceptTarget): void {
    if (closed) {
      clientSocket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    if (leaves) return startTls(clientSocket, head, target);
    // Before the CA exists (only in the first instants of a pod: readiness is false until then).
    const start = () => guard.run('intercept.connect', () => startTls(clientSocket, head, target), () => clientSocket.destroy());
    ready.then(start, () => {
      clientSocket.end(`HTTP/1.1 503 Service Unavailable\r\n${HEADER_DENY_REASON}: proxy CA unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
    });
  }

  function startTls(clientSocket: Duplex, head: Buffer, target: InterceptTarget): void {
    if (clientSocket.destroyed) return;
    const leaf = leaves!.get(target.host);
    if (clientSocket instanceof Socket) clientSocket.setNoDelay(true);
    clientSocket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    // Bytes the client sent after the CONNECT head (an eager ClientHello) belong to the TLS stream.
    if (head.length > 0) clientSocket.unshift(head);
    const tlsSocket = new (tls().TLSSocket)(clientSocket as Socket, {
      isServer: true,
      secureContext: leaf.context,
      ALPNProtocols: ALPN,
      // SNI, when the client sends it, must name the host it CONNECTed to: a client asking for
      // another name through this tunnel is confused or probing.
      SNICallback: (servername, cb) => {
        let sni: string;
        try {
          sni = normaliseName(servername);
        } catch (err) {
          guard.report('intercept.sni', err);
          return cb(err as Error);
        }
        if (sni === target.host) return cb(null, leaf.context);
        logger.warn({ host: target.host, sni: servername, rule: target.rule.id }, 'intercept refused: TLS SNI does not match the CONNECT host');
        audit({ kind: 'intercepted', decision: 'deny', rule: target.rule.id, host: target.host, port: target.port, status: 421, reason: `TLS server name ${servername} is not the CONNECT host`, bytesUp: 0, bytesDown: 0, durationMs: 0 });
        cb(new Error('SNI does not match the CONNECT host'));
      },
    });
    const session: Session = { target, timer: setTimeout(() => tlsSocket.destroy(), HANDSHAKE_TIMEOUT_MS + headerTimeoutMs) };
    tlsSocket.once('close', () => {
      clearTimeout(session.timer);
      sockets.delete(tlsSocket);
      clientSocket.destroy();
    });
    // Handshake failures are the client's business (bad SNI, no ALPN overlap, untrusted CA).
    tlsSocket.on('error', (err: Error) => logger.debug({ err: err.message, host: target.host }, 'intercepted TLS error'));
    sockets.add(tlsSocket);
    sessions.set(tlsSocket, session);
    http.emit('connection', tlsSocket);
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse, expectsContinue = false): Promise<void> {
    const session = sessions.get(req.socket);
    if (!session) {
      res.destroy();
      return;
    }
    clearTimeout(session.timer);
    const { target } = session;
    const started = performance.now();
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    let bytesUp = 0;
    let bytesDown = 0;
    let reason: string | undefined;
    let error: string | undefined;
    res.once('close', () => {
      const status = res.headersSent ? res.statusCode : 0;
      requests?.inc({ rule: target.rule.id, status: String(status) });
      audit({
        kind: 'intercepted', decision: status === 403 || status === 421 ? 'deny' : 'intercept', rule: target.rule.id,
        host: target.host, port: target.port, method, path: url, address: target.address, status,
        reason, error: error ?? (res.writableFinished ? undefined : 'client closed before the response ended'),
        bytesUp, bytesDown, durationMs: performance.now() - started,
      });
    });

    try {
      checkRequest(target, req, url, method);
      const rule = target.rule;
      const spec = rule.credentials;
      const headers = cleanRequestHeaders(req, spec);
      /** Values this request carries that the workspace must never see reflected back. */
      const injected: string[] = [];
      headers.host = hostHeader(target);
      const contentLength = req.headers['content-length'];

      let body: Buffer | undefined;
      if (spec.type === 'aws-sigv4') {
        if (contentLength !== undefined && Number(contentLength) > bodyCap) {
          throw refuse('WS_ERR_PAYLOAD_TOO_LARGE', `request body of ${contentLength} bytes is over the ${bodyCap}-byte signing limit`);
        }
        // Reserved before one byte is read: many tunnels uploading at once cannot add up past the budget.
        const reserve = contentLength !== undefined ? Number(contentLength) : req.headers['transfer-encoding'] !== undefined ? bodyCap : 0;
        if (reserve > 0) {
          if (!signingBudget.tryTake(reserve)) {
            throw refuse('WS_ERR_UNAVAILABLE', `the proxy already holds ${signingBudget.used} bytes of request bodies for signing (budget ${signingBudget.capacity}, from its memory limit): retry`);
          }
          res.once('close', () => signingBudget.give(reserve));
        }
        if (expectsContinue) res.writeContinue();
        body = await readBody(req, bodyCap);
        bytesUp = body.length;
        delete headers['content-length'];
        if (body.length > 0 || !BODYLESS.has(method)) headers['content-length'] = String(body.length);
        const signed = await signer.sign(spec, { method, host: headers.host, url, headers: flatten(headers), body });
        Object.assign(headers, signed);
        injected.push(...[signed.authorization, signed['x-amz-security-token']].filter((v): v is string => typeof v === 'string'));
      } else {
        const cred = headerCredential(spec, reader);
        headers[cred.name] = cred.value;
        injected.push(cred.value);
        if (expectsContinue) res.writeContinue();
        if (contentLength === undefined) {
          if (req.headers['transfer-encoding'] !== undefined) headers['transfer-encoding'] = 'chunked';
          else if (!BODYLESS.has(method)) headers['content-length'] = '0';
        }
      }
      if (res.destroyed) return;
      const reflects = (value: string) => injected.some((v) => value.includes(v)) || logger.secrets.scrub(value) !== value;
      await forward(req, res, target, method, url, headers, body, reflects, (n) => { bytesUp += n; }, (n) => { bytesDown += n; }, (e) => { error = e; });
    } catch (err) {
      // A client that went away mid-upload: nothing to answer, nothing to report.
      if (res.destroyed) return;
      const wse = err instanceof WorkspaceSandboxError ? err : new WorkspaceSandboxError('WS_ERR_INTERNAL', 'internal error', { cause: err });
      if (wse.code === 'WS_ERR_INTERNAL') logger.error({ err, host: target.host }, 'intercepted request failed');
      reason = wse.message;
      sendError(req, res, wse);
    }
  }

  function forward(
    req: IncomingMessage, res: ServerResponse, target: InterceptTarget, method: string, url: string,
    headers: OutgoingHttpHeaders, body: Buffer | undefined, reflects: (value: string) => boolean,
    countUp: (n: number) => void, countDown: (n: number) => void, setError: (e: string) => void,
  ): Promise<void> {
    // A pooled upstream connection the server closed as idle fails the next request before the
    // server read any of it. Such a request is sent once more on a new connection when that is
    // harmless: an idempotent method whose body (if any) is still in hand. A POST could have
    // reached the model, so its failure is the client's to handle.
    const noBody = (req.headers['content-length'] === undefined || req.headers['content-length'] === '0') && req.headers['transfer-encoding'] === undefined;
    const replayable = IDEMPOTENT_METHODS.has(method) && (body !== undefined || noBody);
    return new Promise((resolve) => {
      let responded = false;
      let current: ClientRequest | undefined;
      // A client that goes away cancels the upstream call at once (a cancelled model call must
      // stop costing tokens); destroying the request also drops its keep-alive socket.
      res.once('close', () => {
        if (!res.writableFinished) current?.destroy();
        resolve();
      });
      const send = (retry: boolean) => {
        const upstream = https().request({
          host: target.address,
          family: target.family,
          port: target.port,
          // The name the certificate must carry; the address is the one the proxy checked (no second lookup).
          servername: target.host,
          method,
          path: url,
          headers,
          agent: upstreamAgent(),
          setHost: false,
          // Passed through the agent to tls.connect (missing from https.RequestOptions' types).
          ...({ secureContext: upstreamTls() } as object),
        });
        current = upstream;
        const connectTimer = setTimeout(() => upstream.destroy(Object.assign(new Error('upstream connect timed out'), { code: 'ETIMEDOUT' })), connectTimeoutMs);
        upstream.once('close', () => clearTimeout(connectTimer));
        upstream.on('socket', (socket: Socket) => {
          socket.setNoDelay(true);
          // Only the connect is timed: once connected, a model may think quietly for a long while.
          if (!socket.connecting) clearTimeout(connectTimer);
          else socket.once('connect', () => clearTimeout(connectTimer));
        });
        upstream.on('error', (err: NodeJS.ErrnoException) => {
          if (!responded && !retry && replayable && !res.destroyed && failedOnStaleConnection(upstream, err)) {
            send(true);
            return;
          }
          const message = upstreamFailure(err);
          setError(message);
          if (!responded && !res.headersSent) {
            sendError(req, res, new WorkspaceSandboxError(err.code === 'ETIMEDOUT' ? 'WS_ERR_GATEWAY_TIMEOUT' : 'WS_ERR_BAD_GATEWAY', message));
          } else res.destroy();
        });
        upstream.on('response', (upRes: IncomingMessage) => {
          responded = true;
          if (res.destroyed) {
            upstream.destroy();
            return;
          }
          const { headers: out, dropped } = cleanResponseHeaders(upRes, reflects);
          if (dropped.length > 0) logger.warn({ host: target.host, rule: target.rule.id, headers: dropped }, 'dropped response headers that reflected an injected credential');
          res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, out);
          // A stream (no length: event streams, SSE) gets its headers now, as its first event may be
          // seconds away; a sized body carries them in its first write (one TLS record, not two).
          if (upRes.headers['content-length'] === undefined) res.flushHeaders();
          upRes.on('data', (chunk: Buffer) => countDown(chunk.length));
          upRes.pipe(res);
          // An upstream that dies mid-body must not look like a complete response to the client.
          upRes.once('close', () => {
            if (!upRes.complete) res.destroy();
          });
        });
        if (body !== undefined) upstream.end(body);
        else if (retry) upstream.end(); // replayed only without a body: the client's stream is spent
        else {
          req.on('data', (chunk: Buffer) => countUp(chunk.length));
          req.pipe(upstream);
        }
      };
      send(false);
    });
  }

  const handle: InterceptorHandle = {
    handleConnect,
    ready,
    get ca() { return ca; },
    get caFiles() { return caFiles; },
    get leaves() { return leaves; },
    async close() {
      closed = true;
      for (const s of sockets) s.destroy();
      agent?.destroy();
      http.close();
      await ready.catch(() => undefined);
    },
  };
  return handle;
}

/** The signing budget of the default memory limit, for interceptors built without the proxy's config. */
function maxSigningBudget(): number {
  return memoryBudget(DEFAULT_MEMORY_LIMIT_BYTES).signingBudgetBytes;
}

/** Methods whose requests carry no body unless framed explicitly. */
const BODYLESS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE']);

function normaliseName(name: string): string {
  const n = normaliseHost(name);
  return n.kind === 'invalid' ? name.toLowerCase() : n.host;
}

/** The Host header the upstream gets: the CONNECT target, with the port only when not 443. */
function hostHeader(target: InterceptTarget): string {
  return target.port === 443 ? target.host : `${target.host}:${target.port}`;
}

/** Host must name the CONNECT target; methods and paths must be the rule's. Throws a Refusal. */
function checkRequest(target: InterceptTarget, req: IncomingMessage, url: string, method: string): void {
  if (!url.startsWith('/')) throw refuse('WS_ERR_BAD_REQUEST', 'requests inside a tunnel must use origin-form targets ("/path")');
  const host = req.headers.host ?? '';
  // Fast path: clients send exactly the canonical form.
  if (host !== hostHeader(target)) {
    const m = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(host);
    const name = m ? normaliseName(m[1]!) : '';
    const port = m?.[2] === undefined ? 443 : Number(m[2]);
    if (!m || name !== target.host || port !== target.port) {
      throw refuse('WS_ERR_MISDIRECTED_REQUEST', `Host ${JSON.stringify(host)} is not the tunnel's host ${hostHeader(target)}`);
    }
  }
  const rule = target.rule;
  const reflecting = reflectingMethod(method);
  if (reflecting) throw refuse('WS_ERR_METHOD_NOT_ALLOWED', reflecting);
  if (!methodAllowed(rule.methods, method)) throw refuse('WS_ERR_FORBIDDEN', `method ${method} is not allowed by rule ${rule.id}`);
  const q = url.search(/[?#]/);
  const path = q < 0 ? url : url.slice(0, q);
  if (!pathAllowed(rule.paths, path)) throw refuse('WS_ERR_FORBIDDEN', `path ${path} is not allowed by rule ${rule.id}`);
}

/**
 * The client's headers minus everything that must not reach the upstream: hop-by-hop headers,
 * `Proxy-*`, any credential the workspace sent (`Authorization`, the rule's header, and for SigV4
 * every `x-amz-*`, which carry the signature, date and session token of the dummy credentials).
 */
function cleanRequestHeaders(req: IncomingMessage, spec: CredentialSpec): OutgoingHttpHeaders {
  const drop = connectionListed(req.headers);
  const out: Record<string, string | string[]> = {};
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || drop.has(name) || name.startsWith('proxy-') || name === 'authorization' || name === 'host') continue;
    if (spec.type === 'header' && name === spec.name) continue;
    if (spec.type === 'aws-sigv4' && name.startsWith('x-amz-')) continue;
    const value = raw[i + 1]!;
    const prev = out[name];
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}

/**
 * The upstream's headers minus hop-by-hop ones and any whose value holds a credential this proxy
 * injected (`reflects`): an upstream that echoes request headers (a debug endpoint, a TRACE-like
 * handler) must not hand the secret to the workspace. Bodies stream unbuffered and are not
 * rewritten; see docs/security.md.
 */
function cleanResponseHeaders(res: IncomingMessage, reflects: (value: string) => boolean): { headers: OutgoingHttpHeaders; dropped: string[] } {
  const drop = connectionListed(res.headers);
  const out: Record<string, string | string[]> = {};
  const dropped: string[] = [];
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || drop.has(name) || name.startsWith('proxy-')) continue;
    const value = raw[i + 1]!;
    if (reflects(value)) {
      dropped.push(name);
      continue;
    }
    const prev = out[name];
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return { headers: out, dropped };
}

function connectionListed(headers: IncomingHttpHeaders): Set<string> {
  const c = headers.connection;
  return new Set((c ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

function flatten(headers: OutgoingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(',') : String(v);
  return out;
}

/** The whole body, refusing (413) as soon as it passes `cap`. */
async function readBody(req: IncomingMessage, cap: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > cap) throw refuse('WS_ERR_PAYLOAD_TOO_LARGE', `request body is over the ${cap}-byte signing limit`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

const TLS_FAILURE = /CERT|TLS|SSL|SELF_SIGNED|UNABLE_TO|ALTNAME|HOSTNAME/i;

/** Why the upstream failed, for the 502 body: the TLS reason, or the socket error code (never an internal address). */
function upstreamFailure(err: NodeJS.ErrnoException): string {
  if (err instanceof GatewayRefusal) return err.message;
  const code = err.code ?? 'ERROR';
  if (TLS_FAILURE.test(code) || TLS_FAILURE.test(err.message)) return `upstream TLS verification failed: ${code}: ${err.message.split('\n')[0]}`;
  if (code === 'ETIMEDOUT') return 'upstream connect timed out';
  if (code === 'ECONNRESET' || code === 'EPIPE') return `upstream closed the connection: ${code}`;
  return `upstream connection failed: ${code}`;
}

function sendError(req: IncomingMessage, res: ServerResponse, err: WorkspaceSandboxError): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const wantsJson = /json/i.test(req.headers.accept ?? '');
  const body = wantsJson ? JSON.stringify(errorBody(err)) + '\n' : `${err.message}\n`;
  const headers: OutgoingHttpHeaders = {
    'content-type': wantsJson ? 'application/json' : 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    [HEADER_DENY_REASON.toLowerCase()]: headerSafe(err.message),
  };
  // A refused body is never read: close the connection instead of draining an unbounded upload.
  if (err.code === 'WS_ERR_PAYLOAD_TOO_LARGE' || !req.complete) headers.connection = 'close';
  // With `connection: close` node:http ends the socket after this response.
  res.writeHead(err.status, headers);
  res.end(body);
}

function headerSafe(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}
