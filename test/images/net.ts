// Small network helpers for tests that start whole programs as processes: a free port to hand
// them, requests with a per-request CA choice, and polling until a program answers.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

export { freePort } from '../helpers/listen.ts';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Accept any server certificate (a program's dev-mode self-signed one). */
  insecure?: boolean;
  socketPath?: string;
  timeoutMs?: number;
}

export function fetchText(url: string, opts: RequestOptions = {}): Promise<Reply> {
  const u = new URL(url);
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request({
      hostname: u.hostname,
      port: u.port,
      path: `${u.pathname}${u.search}`,
      method: opts.method ?? 'GET',
      headers: opts.headers,
      socketPath: opts.socketPath,
      rejectUnauthorized: !opts.insecure,
      agent: false,
      timeout: opts.timeoutMs ?? 30_000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer in ${opts.timeoutMs ?? 30_000} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/**
 * Polls `url` until it answers (any status), the process dies, or `timeoutMs` passes. Not a timing
 * assertion: the deadline only turns a hang into a failure with the program's output attached.
 */
export async function waitForAnswer(url: string, opts: RequestOptions & { alive: () => boolean; output: () => string; timeoutMs?: number }): Promise<Reply> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let last: unknown;
  while (Date.now() < deadline) {
    if (!opts.alive()) throw new Error(`the program exited before answering ${url}:\n${opts.output()}`);
    try {
      return await fetchText(url, { ...opts, timeoutMs: 5_000 });
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer (${(last as Error | undefined)?.message ?? 'no attempt'}):\n${opts.output()}`);
}
