// A recording tap: a transparent HTTP relay between a client and a server that keeps a copy of
// every exchange (request and response, head and body) for validation against the OpenAPI
// documents. Responses are piped with back-pressure as they arrive (streaming works as without the
// tap), and a client that drops its connection drops the upstream one too (so does cancellation).
// Request bodies are relayed once complete (tests send small ones).
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { listen } from '../../lib/server.ts';

export interface Exchange {
  method: string;
  url: string;
  requestHeaders: IncomingHttpHeaders;
  requestBody: Buffer;
  status: number;
  responseHeaders: IncomingHttpHeaders;
  responseBody: Buffer;
  /** More than the cap was sent: the kept copy is incomplete. */
  truncated: boolean;
  /** The client went away before the response ended. */
  aborted: boolean;
}

export type Upstream = { port: number; host?: string } | { socketPath: string };

export interface Tap {
  server: Server;
  /** `http://127.0.0.1:<port>` (TCP taps). */
  url: string | undefined;
  socketPath: string | undefined;
  exchanges: Exchange[];
  close(): Promise<void>;
}

/** Bodies beyond this are passed on but not kept (large file transfers need no schema check). */
const KEEP_BYTES = 4 * 1024 * 1024;

class Capped {
  chunks: Buffer[] = [];
  size = 0;
  truncated = false;

  push(chunk: Buffer): void {
    if (this.size + chunk.length > KEEP_BYTES) {
      this.truncated = true;
      return;
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
  }

  get buffer(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

export async function startTap(upstream: Upstream, listenOn: { socketPath: string } | undefined = undefined): Promise<Tap> {
  const exchanges: Exchange[] = [];
  const server = createServer((req, res) => {
    const reqBody = new Capped();
    const resBody = new Capped();
    const target = 'socketPath' in upstream ? { socketPath: upstream.socketPath } : { host: upstream.host ?? '127.0.0.1', port: upstream.port };
    let record: Omit<Exchange, 'responseBody' | 'truncated' | 'aborted'> | undefined;
    let done = false;
    let up: ReturnType<typeof request> | undefined;
    const finish = (aborted: boolean) => {
      if (done || !record) return;
      done = true;
      exchanges.push({ ...record, responseBody: resBody.buffer, truncated: reqBody.truncated || resBody.truncated, aborted });
    };
    // The request body is read whole, then sent in one write: a server that answers early (413)
    // and closes must not turn into a reset at the relay while it is still copying the body.
    const body: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      reqBody.push(c);
      body.push(c);
    });
    req.on('end', () => {
      up = request({ ...target, method: req.method, path: req.url, headers: req.headers, agent: false });
      up.on('response', (ures) => {
        record = {
          method: req.method!, url: req.url!, requestHeaders: req.headers, requestBody: reqBody.buffer,
          status: ures.statusCode!, responseHeaders: ures.headers,
        };
        // Raw headers are forwarded as received, so hop-by-hop handling stays the servers' own.
        res.writeHead(ures.statusCode!, ures.rawHeaders);
        res.flushHeaders();
        ures.on('data', (c: Buffer) => resBody.push(c));
        ures.pipe(res);
        ures.on('end', () => finish(false));
        ures.on('error', () => res.destroy());
      });
      // Before the answer, an upstream failure ends the exchange; after it, a late write error
      // is moot (the answer's own stream reports a cut).
      up.on('error', () => {
        if (!record) res.destroy();
      });
      up.end(Buffer.concat(body));
    });
    res.on('close', () => {
      if (!res.writableFinished) {
        up?.destroy();
        finish(true);
      }
    });
  });
  const bound = listenOn ? await listen(server, { path: listenOn.socketPath }) : await listen(server, { port: 0, host: '127.0.0.1' });
  return {
    server,
    url: bound.port === undefined ? undefined : `http://127.0.0.1:${bound.port}`,
    socketPath: listenOn?.socketPath,
    exchanges,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
