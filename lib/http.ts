// What the programs' plain node:http layers share.
import type { ClientRequest, IncomingMessage } from 'node:http';
import { WorkspaceSandboxError } from './errors.ts';

/**
 * The whole request body, refused with WS_ERR_PAYLOAD_TOO_LARGE past `limit` bytes (declared or
 * received). On refusal the request is paused, not consumed: the caller decides whether to drain
 * it or close the connection. Plain listeners rather than an async iterator: this is on every
 * request's path.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `request body exceeds ${limit} bytes`);
  if (Number(req.headers['content-length']) > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    req.once('error', reject);
  });
}

/** Methods that are safe to send twice (RFC 9110 §9.2.2). */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * True when `req` failed because it went out on a kept-alive connection that the other end had
 * already closed as idle: the request was never read there, and may be sent again when that is
 * harmless.
 */
export function failedOnStaleConnection(req: ClientRequest, err: NodeJS.ErrnoException): boolean {
  return req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE');
}
