// Servers in tests listen on port 0 on loopback; this returns the base URL.
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { listen } from '../../lib/server.ts';

export async function listenLocal(server: Server, scheme: 'http' | 'https' = 'http'): Promise<{ url: string; port: number }> {
  const addr = await listen(server, { port: 0, host: '127.0.0.1' });
  return { url: `${scheme}://127.0.0.1:${addr.port}`, port: addr.port! };
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    (server as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
    server.close(() => resolve());
  });
}

/** A port free on loopback right now, for programs started as processes (which bind it themselves). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}
