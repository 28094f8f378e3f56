// The proxy relay of the Docker mode. A Docker workspace has no network interface but loopback
// (`--network none`), and its credential proxy runs on the host, reachable only through a Unix
// socket bind-mounted into the container. Programs expect an HTTP proxy on 127.0.0.1:8080
// (HTTP_PROXY), so the agent listens there and pipes every connection, byte for byte, to that
// socket: the proxy sees the same bytes it would see over TCP and makes every decision itself.
// In Kubernetes the proxy is a sidecar on the Pod's loopback and no relay runs.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { PORTS, PROXY_LOOPBACK_HOST } from '../lib/constants.ts';

/** Connections relayed at once; more are closed on arrival (each holds two sockets). */
export const MAX_RELAYED_CONNECTIONS = 1024;

export interface ProxyRelay {
  readonly server: Server;
  /** Connections open now. */
  readonly open: number;
  close(): Promise<void>;
}

export function createProxyRelay(socketPath: string, logger: Logger, maxConnections = MAX_RELAYED_CONNECTIONS): ProxyRelay {
  const open = new Set<Socket>();
  const server = createServer({ pauseOnConnect: true }, (client) => {
    if (open.size >= maxConnections) {
      logger.warn({ open: open.size }, 'proxy relay full: connection closed');
      client.destroy();
      return;
    }
    open.add(client);
    const upstream = createConnection(socketPath);
    const end = (err?: Error) => {
      if (err && (err as NodeJS.ErrnoException).code !== 'ECONNRESET') logger.debug({ err: err.message }, 'proxy relay connection ended');
      client.destroy();
      upstream.destroy();
      open.delete(client);
    };
    client.once('error', end);
    upstream.once('error', end);
    client.once('close', () => end());
    upstream.once('close', () => end());
    upstream.once('connect', () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  });
  // A client error on the listener itself (EMFILE on accept) must not end the agent.
  server.on('error', (err) => logger.error({ err: err.message }, 'proxy relay listener error'));
  return {
    server,
    get open() { return open.size; },
    close: () => new Promise((resolve) => {
      for (const s of open) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** Where the relay listens: the address HTTP_PROXY names in every workspace. */
export const RELAY_ADDRESS = Object.freeze({ host: PROXY_LOOPBACK_HOST, port: PORTS.proxy });
