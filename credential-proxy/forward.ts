// Plain-HTTP forwarding of absolute-form requests (`GET http://host/path`): the same decision and
// address checks as CONNECT, then http-proxy-3 to the checked address. Redirects go back to the
// client untouched (the client's next request is decided on its own); hop-by-hop and Proxy-*
// headers never cross the proxy.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { http } from '../lib/builtins.ts';
import { performance } from 'node:perf_hooks';
import type { ProxyServer } from 'http-proxy-3';
import { decide } from './decide.ts';
import { normaliseHost, DEFAULT_HTTP_PORT } from './rules.ts';
import { ResolveError } from './resolve.ts';
import { refuseResponse, type Refusal } from './respond.ts';
import { admission, upstreamFailure } from './connect.ts';
import type { ProxyContext } from './context.ts';

const HOP_BY_HOP = ['connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate'];

/** Removes hop-by-hop headers, those the Connection header names, and every Proxy-* header. */
export function stripHopByHop(headers: Record<string, unknown>): void {
  const listed = String(headers.connection ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  for (const name of Object.keys(headers)) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.includes(lower) || listed.includes(lower) || lower.startsWith('proxy-')) delete headers[name];
  }
}

/**
 * Request framing a front end and a back end could read differently (request smuggling):
 * anything but one `Transfer-Encoding: chunked`, TE together with Content-Length, repeated or
 * non-numeric Content-Length. Node's parser already rejects some of these; this catches the rest.
 */
export function framingProblem(rawHeaders: readonly string[]): string | undefined {
  const te: string[] = [];
  const cl: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (name === 'transfer-encoding') te.push(rawHeaders[i + 1]!);
    else if (name === 'content-length') cl.push(rawHeaders[i + 1]!);
  }
  if (te.length > 1) return 'more than one Transfer-Encoding header';
  if (te.length === 1 && te[0] !== 'chunked') return 'Transfer-Encoding other than "chunked"';
  if (te.length === 1 && cl.length > 0) return 'both Transfer-Encoding and Content-Length';
  if (cl.length > 1) return 'more than one Content-Length header';
  if (cl.length === 1 && !/^\d{1,15}$/.test(cl[0]!)) return 'Content-Length is not a number';
  return undefined;
}

interface Pending {
  bytesDown: number;
}

export interface Forwarder {
  /** Resolves once the request is handed to the upstream or refused; rejects only on a bug. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  close(): void;
}

export function createForwarder(ctx: ProxyContext): Forwarder {
  // Keep-alive to upstreams, keyed by the checked address: a pooled socket is always one we checked.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256, timeout: ctx.config.IDLE_TIMEOUT_MS });
  // Through the egress gateway every connection is a CONNECT tunnel opened by the one dial function.
  if (ctx.upstream.gateway) Object.assign(agent, { createConnection: ctx.upstream.agentConnection(false) });
  const pending = new WeakMap<IncomingMessage, Pending>();
  // http-proxy-3 is loaded on the first plain-HTTP request: most workspaces only use HTTPS
  // (CONNECT), and the module graph costs start-up time and memory in every Pod.
  let proxy: ProxyServer | undefined;
  let loading: Promise<ProxyServer> | undefined;
  const getProxy = (): Promise<ProxyServer> => loading ??= import('http-proxy-3').then(({ createProxyServer }) => {
    const p = createProxyServer({ xfwd: false, changeOrigin: false, agent, proxyTimeout: ctx.config.IDLE_TIMEOUT_MS });
    p.on('proxyRes', (proxyRes, req) => {
      stripHopByHop(proxyRes.headers as Record<string, unknown>);
      const entry = pending.get(req);
      if (entry) proxyRes.on('data', (chunk: Buffer) => { entry.bytesDown += chunk.length; });
    });
    p.on('proxyReq', (_proxyReq, _req, _res, _options, socket) => {
      // Only fresh connections measure connect time; a pooled keep-alive socket is already open.
      if (!socket.connecting) return;
      const dialed = performance.now();
      socket.once('connect', () => ctx.metrics.upstreamConnectSeconds.observe((performance.now() - dialed) / 1000));
    });
    // Errors arrive through the per-request callback; this keeps a stray one from crashing us.
    p.on('error', () => {});
    proxy = p;
    return p;
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = performance.now();
    const method = req.method ?? 'GET';
    const rawTarget = req.url ?? '';
    let url: URL | undefined;
    let bytesUp = 0;
    let audited = false;
    const finish = (fields: { decision: 'tunnel' | 'deny'; rule?: string | undefined; host: string; port: number; address?: string; reason?: string; error?: string }, status: number) => {
      if (audited) return;
      audited = true;
      ctx.audit({
        kind: 'http', method, path: url?.pathname ?? rawTarget.slice(0, 200), status, bytesUp,
        bytesDown: pending.get(req)?.bytesDown ?? 0, durationMs: performance.now() - started, ...fields,
      });
    };
    const refuse = (r: Refusal, address?: string) => {
      ctx.metrics.requests.inc({ decision: 'deny', rule: r.rule ?? '' });
      finish({ decision: 'deny', rule: r.rule, host: r.host ?? '', port: r.port ?? 0, reason: r.reason, ...(address ? { address } : {}) }, r.status);
      refuseResponse(req, res, r);
    };
    const bad = (reason: string, host?: string, port?: number) => refuse({ status: 400, code: 'WS_ERR_BAD_REQUEST', reason, host, port });

    if (!/^http:\/\//i.test(rawTarget)) {
      if (/^https:\/\//i.test(rawTarget)) return bad('https:// URLs go through CONNECT: set HTTPS_PROXY, not an http:// request to the proxy');
      return bad(`this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT; the admin API is on port ${ctx.bound.adminPort}`);
    }
    const framing = framingProblem(req.rawHeaders);
    if (framing) return bad(`ambiguous request framing: ${framing}`);
    try {
      url = new URL(rawTarget);
    } catch {
      return bad('malformed request URL');
    }
    if (url.username || url.password) return bad('credentials in the URL are not forwarded', url.hostname);
    const port = url.port ? Number(url.port) : DEFAULT_HTTP_PORT;
    const target = normaliseHost(url.hostname);
    const hostHeader = req.headers.host;
    if (hostHeader !== undefined) {
      const m = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(hostHeader);
      const h = m ? normaliseHost(m[1]!) : undefined;
      const hp = m?.[2] ? Number(m[2]) : DEFAULT_HTTP_PORT;
      if (!h || h.kind === 'invalid' || target.kind === 'invalid' || h.host !== target.host || hp !== port) {
        return bad(`Host header ${JSON.stringify(hostHeader.slice(0, 100))} does not match the request target ${url.host}`, url.hostname, port);
      }
    } else {
      req.headers.host = url.host;
    }

    const d = decide({ kind: 'http', host: url.hostname, port, method, path: url.pathname }, ctx.rules());
    if (d.action !== 'tunnel') {
      if (d.malformed) return bad(d.reason, d.host, d.port);
      return refuse({ status: 403, code: 'WS_ERR_FORBIDDEN', reason: d.reason, host: d.host, port: d.port, rule: d.ruleId });
    }
    const rule = d.rule!;
    const shed = admission(ctx);
    if (shed) return refuse({ ...shed, host: d.host, port: d.port, rule: rule.id });
    // In flight from here to the response's end: counted against the same cap as tunnels.
    ctx.tunnels.active++;
    res.once('close', () => { ctx.tunnels.active--; });
    pending.set(req, { bytesDown: 0 });

    return Promise.all([
      ctx.upstream.resolve(d.host, { allowPrivate: rule.allowPrivate === true, own: ctx.own, port: d.port }),
      getProxy(),
    ]).then(([resolved, proxy]) => {
      // The body stays unread (paused) until http-proxy pipes it: reading it here would lose it.
      if (req.socket.destroyed || res.destroyed) return finish({ decision: 'tunnel', rule: rule.id, host: d.host, port: d.port, error: 'client closed' }, 499);
      ctx.metrics.requests.inc({ decision: 'tunnel', rule: rule.id });
      stripHopByHop(req.headers as Record<string, unknown>);
      res.once('close', () => {
        const down = pending.get(req)?.bytesDown ?? 0;
        ctx.metrics.bytes.inc({ direction: 'up' }, bytesUp);
        ctx.metrics.bytes.inc({ direction: 'down' }, down);
        finish({ decision: 'tunnel', rule: rule.id, host: d.host, port: d.port, address: resolved.address, ...(res.writableFinished ? {} : { error: 'connection closed before the response completed' }) }, res.statusCode);
      });
      proxy.web(req, res, {
        target: { protocol: 'http:', host: resolved.address, port: d.port },
      }, (err) => {
        if (res.headersSent) return res.destroy();
        refuse({ status: 502, code: 'WS_ERR_BAD_GATEWAY', reason: `${upstreamFailure(err as Error)} (${d.host}:${d.port})`, host: d.host, port: d.port, rule: rule.id }, resolved.address);
      });
      // Counted alongside http-proxy's pipe, which now owns the flow (and its backpressure).
      req.on('data', (chunk: Buffer) => { bytesUp += chunk.length; });
    }, (err: unknown) => {
      if (err instanceof ResolveError) return refuse({ status: err.status, code: err.code, reason: err.message, host: d.host, port: d.port, rule: rule.id });
      ctx.logger.error({ err }, 'request resolution failed');
      return refuse({ status: 502, code: 'WS_ERR_BAD_GATEWAY', reason: 'name resolution failed', host: d.host, port: d.port, rule: rule.id });
    });
  };

  return {
    handle,
    close: () => {
      agent.destroy();
      proxy?.close();
    },
  };
}
