// A minimal backend on the workspace SDK: one workspace per conversation, from the warm pool when
// it has one, commands run in it over HTTP. What a real backend adds (authentication of its own
// users, quotas, persistence of conversations) is out of scope; the SDK calls are the point.
//
//   POST   /conversations/:id/exec   {"cmd": ["ls", "-la"], "allowedDomains": ["api.github.com"], "timeoutMs": 10000}
//          → 200 {"workspace": "ws-…", "source": "pool|created|existing", "exitCode": 0, "stdout": "…", "stderr": "…"}
//   DELETE /conversations/:id        → 204 (the workspace is destroyed)
//   GET    /healthz, GET /metrics
// Errors: {"error": {"code": "WS_ERR_…", "message": "…"}} with the status of the SDK's error table.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { WorkspaceSandboxError } from '../../lib/errors.ts';
import { readBody } from '../../lib/http.ts';
import { isWorkspaceError } from '../../sdk/errors.ts';
import type { WarmPool } from '../../sdk/pool.ts';

const MAX_BODY_BYTES = 1024 * 1024;

const execBody = z.strictObject({
  cmd: z.array(z.string()).min(1),
  cwd: z.string().optional(),
  env: z.record(z.string(), z.string()).optional(),
  stdin: z.string().optional(),
  timeoutMs: z.number().int().positive().optional(),
  allowedDomains: z.array(z.string()).optional(),
});

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

function fail(res: ServerResponse, status: number, code: string, message: string): void {
  send(res, status, { error: { code, message } });
}

export interface ExampleBackendDeps {
  pool: WarmPool;
  metrics: Registry;
  logger: Logger;
}

export function createExampleBackend({ pool, metrics, logger }: ExampleBackendDeps): Server {
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://backend');
    if (req.method === 'GET' && url.pathname === '/healthz') return send(res, 200, { status: 'ok' });
    if (req.method === 'GET' && url.pathname === '/metrics') {
      res.writeHead(200, { 'content-type': metrics.contentType }).end(await metrics.metrics());
      return;
    }
    const m = /^\/conversations\/([^/]+)(\/exec)?$/.exec(url.pathname);
    if (!m) return fail(res, 404, 'WS_ERR_NOT_FOUND', `no route ${req.method} ${url.pathname}`);
    const conversationId = decodeURIComponent(m[1]!);
    if (m[2] && req.method === 'POST') {
      let body: z.output<typeof execBody>;
      try {
        const parsed = execBody.safeParse(JSON.parse((await readBody(req, MAX_BODY_BYTES)).toString('utf8')));
        if (!parsed.success) return fail(res, 400, 'WS_ERR_VALIDATION', parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
        body = parsed.data;
      } catch (err) {
        if (err instanceof WorkspaceSandboxError) throw err;
        return fail(res, 400, 'WS_ERR_INVALID_JSON', (err as Error).message);
      }
      const { workspace, source } = await pool.acquire(conversationId, body.allowedDomains ? { allowedDomains: body.allowedDomains } : {});
      const { cmd, allowedDomains: _, ...options } = body;
      const r = await pool.exec(workspace.id, cmd, options);
      logger.info({ conversationId, workspace: workspace.id, source, exitCode: r.exitCode, durationMs: r.durationMs }, 'exec');
      return send(res, 200, { workspace: workspace.id, source, ...r });
    }
    if (!m[2] && req.method === 'DELETE') {
      await pool.release(conversationId);
      return send(res, 204);
    }
    return fail(res, 405, 'WS_ERR_METHOD_NOT_ALLOWED', `${req.method} not allowed here`);
  }

  return createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) return res.destroy();
      if (isWorkspaceError(err) || err instanceof WorkspaceSandboxError) return fail(res, err.status, err.code, err.message);
      logger.error({ err: (err as Error).message }, 'request failed');
      fail(res, 500, 'WS_ERR_INTERNAL', 'internal error');
    });
  });
}
