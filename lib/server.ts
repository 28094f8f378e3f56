// Listening and graceful shutdown shared by every program's main.ts.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import type { Server as HttpServer, ServerResponse } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import type { Logger } from 'pino';

export type ListenTarget = { port: number; host?: string } | { path: string; mode?: number };

export interface BoundAddress {
  /** `host:port` or the socket path, for logs and status lines. */
  readonly display: string;
  readonly port?: number;
  readonly host?: string;
  readonly path?: string;
}

/**
 * Listens and resolves the bound address (port 0 → the real port). For a Unix socket, a stale
 * socket file from a crashed run is removed first (but never a regular file: that is a config
 * mistake), and the mode is applied before anyone can connect with the default umask's.
 */
export async function listen(server: NetServer, target: ListenTarget): Promise<BoundAddress> {
  if ('path' in target) removeStaleSocket(target.path);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    const done = () => {
      server.off('error', onError);
      resolve();
    };
    if ('path' in target) server.listen(target.path, done);
    else server.listen(target.port, target.host, done);
  });
  if ('path' in target) {
    if (target.mode !== undefined) chmodSync(target.path, target.mode);
    return { display: target.path, path: target.path };
  }
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return { display: `${host}:${addr.port}`, port: addr.port, host: addr.address };
}

function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // absent
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  unlinkSync(path);
}

type Closable = NetServer & Partial<Pick<HttpServer, 'closeIdleConnections' | 'closeAllConnections'>>;

export interface ShutdownOptions {
  servers: Closable[];
  /** After this, open connections are destroyed and shutdown resolves anyway. */
  drainTimeoutMs: number;
  logger?: Logger;
  /** Run after listeners stop accepting, before waiting for connections (e.g. end running work). */
  beforeDrain?: () => void | Promise<void>;
  /** Run last (close stores, flush). */
  afterDrain?: () => void | Promise<void>;
}

export interface Shutdown {
  (reason: string): Promise<{ forced: boolean }>;
  readonly started: boolean;
}

/**
 * Builds an idempotent shutdown: stop accepting, let in-flight requests finish (answers sent
 * during the drain carry `Connection: close`), close idle keep-alive sockets, and after
 * `drainTimeoutMs` destroy whatever is left.
 */
export function createShutdown(options: ShutdownOptions): Shutdown {
  let promise: Promise<{ forced: boolean }> | undefined;
  const sockets = new Set<Socket>();
  const inFlight = new Set<ServerResponse>();
  const closeAfterAnswer = (res: ServerResponse) => {
    // Keep-alive clients would otherwise send the next request on a connection we are closing.
    if (!res.headersSent) res.setHeader('connection', 'close');
  };
  for (const server of options.servers) {
    server.on('connection', (s: Socket) => {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
    });
    server.prependListener('request', (_req: unknown, res: ServerResponse) => {
      if (promise) return closeAfterAnswer(res);
      inFlight.add(res);
      res.once('close', () => inFlight.delete(res));
    });
  }

  const run = async (reason: string) => {
    const log = options.logger;
    log?.info({ reason, drainTimeoutMs: options.drainTimeoutMs }, 'shutting down');
    for (const res of inFlight) closeAfterAnswer(res);
    const closed = options.servers.map((s) => new Promise<void>((resolve) => {
      if (!s.listening) return resolve();
      s.close(() => resolve());
      s.closeIdleConnections?.();
    }));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), options.drainTimeoutMs);
    });
    const idleSweep = setInterval(() => {
      for (const s of options.servers) s.closeIdleConnections?.();
    }, 50);
    try {
      await options.beforeDrain?.();
    } catch (err) {
      log?.error({ err }, 'shutdown hook failed');
    }
    const outcome = await Promise.race([Promise.all(closed).then(() => 'drained' as const), timedOut]);
    clearTimeout(timer);
    clearInterval(idleSweep);
    const forced = outcome === 'timeout';
    if (forced) {
      log?.warn({ open: sockets.size }, 'drain timeout reached; closing remaining connections');
      for (const s of options.servers) s.closeAllConnections?.();
      for (const sock of sockets) sock.destroy();
    }
    try {
      await options.afterDrain?.();
    } catch (err) {
      log?.error({ err }, 'shutdown hook failed');
    }
    log?.info({ forced }, 'shutdown complete');
    return { forced };
  };

  const shutdown = ((reason: string) => (promise ??= run(reason))) as Shutdown;
  Object.defineProperty(shutdown, 'started', { get: () => promise !== undefined });
  return shutdown;
}

/**
 * SIGTERM/SIGINT → shutdown, then exit 0 (or 1 when the drain was forced). A second signal exits
 * at once: an operator pressing Ctrl-C twice means it.
 */
export function exitOnSignals(shutdown: Shutdown, logger?: Logger, signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): void {
  for (const signal of signals) {
    process.on(signal, () => {
      if (shutdown.started) {
        logger?.warn({ signal }, 'second signal; exiting now');
        process.exit(1);
      }
      void shutdown(signal).then(({ forced }) => process.exit(forced ? 1 : 0));
    });
  }
}
