// How the proxy refuses: a status, the reason in X-Workspace-Sandbox-Deny-Reason (curl -v shows
// it even for a failed CONNECT, whose body curl does not print), and a short body naming the host
// and the reason: JSON for clients that accept it, text otherwise.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { http } from '../lib/builtins.ts';
import type { Duplex } from 'node:stream';
import { HEADER_DENY_REASON } from '../lib/constants.ts';
import type { ErrorCode } from '../lib/errors.ts';

export interface Refusal {
  status: number;
  code: ErrorCode;
  reason: string;
  host?: string | undefined;
  port?: number | undefined;
  rule?: string | undefined;
}

/** Header values are ASCII without control characters: never let a reason break the response. */
export function headerSafe(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 512);
}

function wantsJson(accept: string | undefined): boolean {
  return !!accept && /\bapplication\/(?:[\w.+-]*\+)?json\b/i.test(accept);
}

export function refusalBody(r: Refusal, accept: string | undefined): { contentType: string; body: string } {
  if (wantsJson(accept)) {
    const error = { code: r.code, message: r.reason, ...(r.host ? { host: r.host } : {}), ...(r.port ? { port: r.port } : {}), ...(r.rule ? { rule: r.rule } : {}) };
    return { contentType: 'application/json', body: `${JSON.stringify({ error })}\n` };
  }
  const target = r.host ? `${r.host}${r.port ? `:${r.port}` : ''}: ` : '';
  return { contentType: 'text/plain; charset=utf-8', body: `workspace-sandbox proxy: ${target}${r.reason}\n` };
}

/** For plain-HTTP requests: answer and close the connection (the request may be half-read). */
export function refuseResponse(req: IncomingMessage, res: ServerResponse, r: Refusal): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { contentType, body } = refusalBody(r, req.headers.accept);
  res.writeHead(r.status, {
    [HEADER_DENY_REASON]: headerSafe(r.reason),
    'content-type': contentType,
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  res.end(body);
}

/** For CONNECT and parse errors, where there is only a raw socket. */
export function refuseSocket(socket: Duplex, r: Refusal, accept?: string, method?: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const { contentType, body } = refusalBody(r, accept);
  const head = [
    `HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status] ?? 'Error'}`,
    `${HEADER_DENY_REASON}: ${headerSafe(r.reason)}`,
    `Content-Type: ${contentType}`,
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
  ].join('\r\n');
  socket.end(`${head}\r\n\r\n${method === 'HEAD' ? '' : body}`);
  // A client that never reads must not keep the socket.
  const timer = setTimeout(() => socket.destroy(), 5000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}
