// CONNECT: decide, resolve and check in the proxy, then either pump bytes to the checked address
// (tunnel) or hand the socket to the interceptor (credential rules). Nothing is written to the
// client before the decision is final, so a refusal is always a clean HTTP answer.
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { decide } from './decide.ts';
import { ResolveError } from './resolve.ts';
import { GatewayRefusal, UPSTREAM_OPEN } from './upstream.ts';
import { refuseSocket, type Refusal } from './respond.ts';
import type { ProxyContext } from './context.ts';
import type { InterceptRule } from './interception.ts';
import { DownloadRelay, startRelay } from '../lib/relay.ts';

/** `host:port`, `[v6]:port`; the port is mandatory in CONNECT (RFC 9110 §9.3.6) but we default to 443. */
export function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const m = /^(\[[^\]/]*\]|[^:/@?#[\]\s]+)(?::(\d{1,5}))?$/.exec(authority);
  if (!m) return undefined;
  const port = m[2] === undefined ? 443 : Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!, port };
}

/**
 * Admission before a tunnel or a plain-HTTP request holds any buffer: the cap derived from the
 * memory limit (429), then the resident-set watermark (503). Undefined: admitted.
 */
export function admission(ctx: ProxyContext): Omit<Refusal, 'host' | 'port' | 'rule'> | undefined {
  const cap = ctx.config.memory.maxTunnels;
  if (ctx.tunnels.active >= cap) {
    ctx.metrics.shed.inc({ reason: 'tunnels' });
    return { status: 429, code: 'WS_ERR_TOO_MANY_REQUESTS', reason: `too many open tunnels and requests (limit ${cap}, derived from the proxy's memory limit)` };
  }
  const pressure = ctx.memory.pressure();
  if (pressure) {
    ctx.metrics.shed.inc({ reason: 'memory' });
    return { status: 503, code: 'WS_ERR_UNAVAILABLE', reason: pressure };
  }
  return undefined;
}

/** Upstream socket errors as a person reads them; never the internal address. */
export function upstreamFailure(err: NodeJS.ErrnoException | Error): string {
  if (err instanceof GatewayRefusal) return err.message;
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ECONNREFUSED': return 'upstream refused the connection';
    case 'ETIMEDOUT': case 'UPSTREAM_CONNECT_TIMEOUT': return 'upstream connection timed out';
    case 'EHOSTUNREACH': case 'ENETUNREACH': return 'upstream is unreachable';
    case 'ECONNRESET': return 'upstream reset the connection';
    default: return 'upstream connection failed';
  }
}

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n');

/** Resolves once the tunnel is handed over or refused; rejects only on a bug (the caller's guard answers). */
export async function handleConnect(ctx: ProxyContext, req: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
  const started = performance.now();
  const socket = client as Socket;
  // Errors after a refusal or during a tunnel end in 'close'; never let one crash the process.
  socket.on('error', () => socket.destroy());
  const accept = req.headers.accept;
  const authority = parseAuthority(req.url ?? '');
  const deny = (r: Refusal, address?: string) => {
    ctx.metrics.requests.inc({ decision: 'deny', rule: r.rule ?? '' });
    ctx.audit({
      kind: 'connect', decision: 'deny', rule: r.rule, host: r.host ?? String(req.url).slice(0, 300), port: r.port ?? 0,
      address, status: r.status, reason: r.reason, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started,
    });
    refuseSocket(socket, r, accept);
  };
  if (!authority) {
    return deny({ status: 400, code: 'WS_ERR_BAD_REQUEST', reason: 'CONNECT needs an authority-form target (host:port)' });
  }
  const shed = admission(ctx);
  if (shed) return deny({ ...shed, host: authority.host, port: authority.port });
  const d = decide({ kind: 'connect', host: authority.host, port: authority.port }, ctx.rules());
  if (d.action === 'deny') {
    const [status, code] = d.malformed ? [400, 'WS_ERR_BAD_REQUEST'] as const : [403, 'WS_ERR_FORBIDDEN'] as const;
    return deny({ status, code, reason: d.reason, host: d.host, port: d.port, rule: d.ruleId });
  }
  const rule = d.rule!;
  if (d.action === 'intercept' && !ctx.interceptor) {
    return deny({ status: 403, code: 'WS_ERR_FORBIDDEN', reason: `rule ${rule.id} injects credentials, but credential injection is not enabled in this proxy`, host: d.host, port: d.port, rule: rule.id });
  }

  // The tunnel counts from here: resolution and dialling hold resources too.
  ctx.tunnels.active++;
  ctx.metrics.activeTunnels.inc();
  let counted = true;
  const release = () => {
    if (!counted) return;
    counted = false;
    ctx.tunnels.active--;
    ctx.metrics.activeTunnels.dec();
  };
  socket.once('close', release);

  return ctx.upstream.resolve(d.host, { allowPrivate: rule.allowPrivate === true, own: ctx.own, port: d.port }).then((resolved) => {
    if (socket.destroyed) return release();
    if (d.action === 'intercept') {
      ctx.metrics.requests.inc({ decision: 'intercept', rule: rule.id });
      const interceptRule: InterceptRule = { id: rule.id, credentials: rule.credentials!, ...(rule.methods ? { methods: rule.methods } : {}), ...(rule.paths ? { paths: rule.paths } : {}) };
      ctx.interceptor!.handleConnect(socket, head, { host: d.host, port: d.port, address: resolved.address, family: resolved.family, rule: interceptRule });
      return;
    }
    tunnel(ctx, socket, head, { host: d.host, port: d.port, address: resolved.address, family: resolved.family, ruleId: rule.id, started, accept, deny, release });
  }, (err: unknown) => {
    release();
    if (err instanceof ResolveError) {
      return deny({ status: err.status, code: err.code, reason: err.message, host: d.host, port: d.port, rule: rule.id });
    }
    ctx.logger.error({ err }, 'CONNECT resolution failed');
    return deny({ status: 502, code: 'WS_ERR_BAD_GATEWAY', reason: 'name resolution failed', host: d.host, port: d.port, rule: rule.id });
  });
}

interface TunnelTarget {
  host: string;
  port: number;
  address: string;
  family: 4 | 6;
  ruleId: string;
  started: number;
  accept: string | undefined;
  deny: (r: Refusal, address?: string) => void;
  release: () => void;
}

function tunnel(ctx: ProxyContext, client: Socket, head: Buffer, t: TunnelTarget): void {
  const dialStarted = performance.now();
  // The upstream reads straight into pooled buffers (lib/relay.ts); through the gateway too, since
  // dial() passes `onread` on once the gateway's answer is read.
  const relay = new DownloadRelay(client);
  const upstream = ctx.upstream.dial({ address: t.address, port: t.port, family: t.family }, relay.onread);
  relay.source = upstream;
  let established = false;
  let failure: string | undefined;
  const connectTimer = setTimeout(() => {
    const err = Object.assign(new Error('connect timeout'), { code: 'UPSTREAM_CONNECT_TIMEOUT' });
    upstream.destroy(err);
  }, ctx.config.UPSTREAM_CONNECT_TIMEOUT_MS);

  // A client that goes away before or during the tunnel closes the upstream side at once.
  const onClientClose = () => upstream.destroy();
  client.once('close', onClientClose);

  upstream.once(UPSTREAM_OPEN, () => {
    clearTimeout(connectTimer);
    ctx.metrics.upstreamConnectSeconds.observe((performance.now() - dialStarted) / 1000);
    if (client.destroyed) return upstream.destroy();
    established = true;
    ctx.metrics.requests.inc({ decision: 'tunnel', rule: t.ruleId });
    client.setNoDelay(true);
    client.write(ESTABLISHED);
    // Backpressure both ways: a slow reader pauses the fast writer's socket.
    startRelay(client, upstream, relay, head);
    // Idle means no bytes either way; the client socket sees both directions.
    client.setTimeout(ctx.config.IDLE_TIMEOUT_MS, () => {
      failure = 'idle timeout';
      client.destroy();
      upstream.destroy();
    });
  });
  upstream.on('error', (err) => {
    clearTimeout(connectTimer);
    if (!established) {
      client.off('close', onClientClose);
      if (client.destroyed) return; // the client left first: nothing to answer
      t.release();
      t.deny({ status: 502, code: 'WS_ERR_BAD_GATEWAY', reason: `${upstreamFailure(err)} (${t.host}:${t.port})`, host: t.host, port: t.port, rule: t.ruleId }, t.address);
      return;
    }
    failure ??= upstreamFailure(err);
    client.destroy();
  });
  // The upstream finished sending: pass the half-close on (the client may still be sending).
  upstream.once('end', () => {
    if (established && !client.destroyed && !client.writableEnded) client.end();
  });
  upstream.once('close', () => {
    clearTimeout(connectTimer);
    if (!established) return;
    // A full close of one side ends the tunnel.
    if (!client.destroyed && !client.writableEnded) client.end();
    const closeClient = setTimeout(() => client.destroy(), 1000);
    closeClient.unref();
  });
  client.once('close', () => {
    if (!established) return;
    upstream.destroy();
    const up = upstream.bytesWritten;
    const down = upstream.bytesRead;
    ctx.metrics.bytes.inc({ direction: 'up' }, up);
    ctx.metrics.bytes.inc({ direction: 'down' }, down);
    ctx.audit({
      kind: 'connect', decision: 'tunnel', rule: t.ruleId, host: t.host, port: t.port, address: t.address,
      status: 200, bytesUp: up, bytesDown: down, durationMs: performance.now() - t.started,
      ...(failure ? { error: failure } : {}),
    });
  });
}
