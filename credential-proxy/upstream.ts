// Every upstream connection of the proxy (plain tunnels, forwarded plain-HTTP requests, intercepted
// requests) is opened here, in one of two ways:
//  - direct: the proxy resolves the name itself, checks every answer (SSRF guard, resolve.ts) and
//    dials the checked address;
//  - through the egress gateway (GATEWAY_URL): the pod has no route and no DNS to the outside, so
//    the proxy opens a TCP connection to the gateway, sends `CONNECT host:port` with the pod's
//    projected ServiceAccount token (GATEWAY_TOKEN_FILE, mounted into this container alone), and the
//    gateway resolves, checks and dials. Per-pod rules, interception and credential injection stay
//    here exactly as in direct mode; the gateway re-applies what holds for every workspace.
// Callers wait for UPSTREAM_OPEN (not 'connect'): in gateway mode the TCP connect to the gateway is
// not yet a path to the upstream.
import { readFileSync, statSync } from 'node:fs';
import { connect as netConnect, type Socket, type OnReadOpts } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { tls as nodeTls } from '../lib/builtins.ts';
import { headerSafe } from './respond.ts';
import { resolveChecked, type OwnListeners, type ResolvedAddress, type Resolver } from './resolve.ts';

export const UPSTREAM_OPEN = 'upstream-open';

/** The gateway's refusal (or a broken answer), as the error of the upstream socket. */
export class GatewayRefusal extends Error {
  readonly code = 'GATEWAY_REFUSED';
  readonly status: number;

  constructor(status: number, reason: string) {
    super(reason);
    this.name = 'GatewayRefusal';
    this.status = status;
  }
}

export interface GatewayEndpoint {
  host: string;
  port: number;
  tokenFile: string;
}

export interface DialTarget {
  /** The checked address (direct), or the host name (through the gateway). */
  address: string;
  port: number;
  family: 4 | 6;
}

export interface Upstream {
  readonly gateway: GatewayEndpoint | undefined;
  /**
   * Direct: resolves and checks `host` (resolve.ts) and returns the address to dial. Through the
   * gateway: returns the name itself, which the gateway resolves and checks (the pod has no DNS).
   */
  resolve(host: string, options: { allowPrivate: boolean; port: number; own: OwnListeners }): Promise<ResolvedAddress>;
  /** Opens the path to the upstream; the socket emits UPSTREAM_OPEN once bytes reach the upstream itself. */
  dial(target: DialTarget, onread?: OnReadOpts): Socket;
  /** For http/https Agents: `createConnection` in callback form over dial(). */
  agentConnection(tls: boolean): (options: ConnectionOptions & { host?: string; port?: number }, callback: (err: Error | null, socket?: Socket) => void) => undefined;
}

/** Longest CONNECT response head the proxy reads from the gateway. */
const MAX_GATEWAY_HEAD = 8 * 1024;

/** The token, re-read when the kubelet rotates it (it rewrites the projected file well before expiry). */
class TokenSource {
  readonly #path: string;
  readonly #onToken: (token: string) => void;
  #mtimeMs = -1;
  #token = '';

  constructor(path: string, onToken: (token: string) => void) {
    this.#path = path;
    this.#onToken = onToken;
  }

  get(): string {
    try {
      const m = statSync(this.#path).mtimeMs;
      if (m !== this.#mtimeMs) {
        const token = readFileSync(this.#path, 'utf8').trim();
        if (token) {
          this.#token = token;
          this.#mtimeMs = m;
          this.#onToken(token);
        }
      }
    } catch {
      // Keep the last token: a rotation in progress must not cut egress; the gateway judges it.
    }
    return this.#token;
  }
}

/** Host-part of an authority: IPv6 literals in brackets. */
const authorityHost = (host: string) => (host.includes(':') ? `[${host}]` : host);

export interface UpstreamOptions {
  resolver: Resolver;
  gateway?: GatewayEndpoint | undefined;
  /** Told each token read, so the logger scrubs it. */
  onToken?: (token: string) => void;
}

export function createUpstream(o: UpstreamOptions): Upstream {
  const gw = o.gateway;
  const token = gw ? new TokenSource(gw.tokenFile, o.onToken ?? (() => {})) : undefined;

  const dialDirect = (t: DialTarget, onread?: OnReadOpts): Socket => {
    const s = netConnect({ host: t.address, port: t.port, family: t.family, noDelay: true, ...(onread ? { onread } : {}) });
    s.once('connect', () => s.emit(UPSTREAM_OPEN));
    return s;
  };

  const dialGateway = (gateway: GatewayEndpoint, t: DialTarget, onread?: OnReadOpts): Socket => {
    let head = Buffer.alloc(0);
    let open = false;
    // The gateway's answer comes first on the socket; after its 200 the bytes are the upstream's.
    // Returns the offset where the upstream's bytes begin, or -1 while the head is incomplete.
    const takeHead = (socket: Socket, chunk: Buffer): number => {
      const before = head.length;
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_GATEWAY_HEAD) socket.destroy(new GatewayRefusal(502, 'the egress gateway sent an oversized answer'));
        return -1;
      }
      const text = head.subarray(0, end).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
      if (status !== 200) {
        const reason = /^x-workspace-sandbox-deny-reason: *(.*)$/im.exec(text)?.[1];
        socket.destroy(new GatewayRefusal(status || 502, headerSafe(`egress gateway: ${reason ?? (status ? `status ${status}` : 'malformed answer')}`)));
        return -1;
      }
      open = true;
      head = Buffer.alloc(0);
      return end + 4 - before;
    };
    let socket: Socket;
    if (onread) {
      const callback = onread.callback;
      socket = netConnect({
        host: gateway.host, port: gateway.port, noDelay: true,
        onread: {
          buffer: onread.buffer,
          callback: (n: number, buf: Uint8Array) => {
            if (open) return callback(n, buf);
            const start = takeHead(socket, Buffer.from(buf.subarray(0, n)));
            if (start < 0) return true;
            socket.emit(UPSTREAM_OPEN);
            if (start >= n) return true;
            buf.copyWithin(0, start, n);
            return callback(n - start, buf);
          },
        },
      });
    } else {
      socket = netConnect({ host: gateway.host, port: gateway.port, noDelay: true });
      const onData = (chunk: Buffer) => {
        const start = takeHead(socket, chunk);
        if (start < 0) return;
        socket.off('data', onData);
        socket.pause();
        if (start < chunk.length) socket.unshift(chunk.subarray(start));
        socket.emit(UPSTREAM_OPEN);
      };
      socket.on('data', onData);
    }
    socket.once('connect', () => {
      const authority = `${authorityHost(t.address)}:${t.port}`;
      socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: Bearer ${token!.get()}\r\n\r\n`);
    });
    return socket;
  };

  const dial = (t: DialTarget, onread?: OnReadOpts): Socket => (gw ? dialGateway(gw, t, onread) : dialDirect(t, onread));

  return {
    gateway: gw,
    async resolve(host, options) {
      if (gw) return { address: host, family: 4 };
      return resolveChecked(host, { resolver: o.resolver, ...options });
    },
    dial,
    agentConnection(tls) {
      return (options, callback) => {
        const raw = dial({ address: String(options.host), port: Number(options.port), family: 4 });
        const onError = (err: Error) => callback(err);
        raw.once('error', onError);
        raw.once(UPSTREAM_OPEN, () => {
          raw.off('error', onError);
          if (!tls) {
            raw.resume();
            return callback(null, raw);
          }
          const secure = nodeTls().connect({ ...options, socket: raw });
          raw.on('error', (err) => secure.destroy(err));
          callback(null, secure);
        });
        return undefined;
      };
    },
  };
}

/** GATEWAY_URL and GATEWAY_TOKEN_FILE of the proxy's config as an endpoint (undefined: direct). */
export function gatewayEndpoint(config: { readonly GATEWAY_URL?: string | undefined; readonly GATEWAY_TOKEN_FILE?: string | undefined }): GatewayEndpoint | undefined {
  if (!config.GATEWAY_URL || !config.GATEWAY_TOKEN_FILE) return undefined;
  const url = new URL(config.GATEWAY_URL);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { host, port: Number(url.port || 80), tokenFile: config.GATEWAY_TOKEN_FILE };
}
