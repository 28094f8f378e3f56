// The admin listener: /healthz, /readyz (with details), /metrics, and /rules, the backend's only
// way to change this pod's egress at run time. /rules always needs a bearer token when a token
// file is configured; without one, reads are open and writes are refused unless the development
// flag allows them.
//
// A plain node:http router rather than express: five routes do not need a framework, and express
// with its dependency graph costs the sidecar ~100 ms of start-up CPU and ~10 MB of memory in
// every workspace Pod. Routing follows express's defaults (case-insensitive paths, an optional
// trailing slash, HEAD answered by GET routes, JSON bodies parsed only when sent as JSON).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { PROXY_ADMIN_PATHS } from '../lib/constants.ts';
import { errorBody, toWorkspaceSandboxError, WorkspaceSandboxError } from '../lib/errors.ts';
import { readBody } from '../lib/http.ts';
import { metricsHandler } from '../lib/metrics.ts';
import { bearerToken, type RulesAuth } from './auth.ts';
import type { CredentialCatalog } from './credential-catalog.ts';
import { ruleSchema, RuleSetError, validateRules, type RuleSpec } from './rules.ts';
import type { RulesStore, RuleSetSnapshot } from './rules-store.ts';

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, unknown>;
}

export interface AdminDeps {
  logger: Logger;
  registry: Registry;
  store: RulesStore;
  /** Per-pod tokens, or static ones in development; undefined: no token configured. */
  auth: RulesAuth | undefined;
  /** Declared credentials: rules may name only these, for their hosts. */
  credentials: CredentialCatalog;
  allowUnauthenticatedWrites: boolean;
  /** Ids taken by env, file and global rules (API rules may not reuse them). */
  reservedIds: () => ReadonlySet<string>;
  staticRules: () => { env: readonly RuleSpec[]; file: readonly RuleSpec[] };
  readiness: () => Promise<ReadinessReport>;
}

const ETAG = /^\s*(?:W\/)?"?(\d{1,15})"?\s*$/;

/** `If-Match: "7"` (or 7) → 7; `*` or absent → undefined; anything else is a 400. */
export function parseIfMatch(header: string | undefined): number | undefined {
  if (header === undefined || header.trim() === '*') return undefined;
  const m = ETAG.exec(header);
  if (!m) throw new WorkspaceSandboxError('WS_ERR_BAD_REQUEST', 'If-Match must be a rules version as returned in the ETag of GET /rules, e.g. "7"');
  return Number(m[1]);
}

function view(snapshot: RuleSetSnapshot) {
  return { version: snapshot.version, rules: snapshot.rules };
}

/** Largest /rules body accepted (a rule set is a few KiB; 1 MiB leaves room for thousands of rules). */
export const MAX_RULES_BODY_BYTES = 1024 * 1024;

/** `expectsContinue`: the request came through 'checkContinue' (`Expect: 100-continue`). */
export type AdminHandler = (req: IncomingMessage, res: ServerResponse, expectsContinue?: boolean) => void;

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The request body as JSON when it is sent as JSON (`application/json`, any charset); else undefined. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    req.resume();
    return undefined;
  }
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(req.headers['content-type']!)?.[1]?.toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new WorkspaceSandboxError('WS_ERR_UNSUPPORTED_MEDIA_TYPE', `unsupported charset "${charset.toUpperCase()}"`);
  }
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding !== 'identity') throw new WorkspaceSandboxError('WS_ERR_UNSUPPORTED_MEDIA_TYPE', `unsupported content encoding "${encoding}"`);
  const text = (await readBody(req, MAX_RULES_BODY_BYTES)).toString('utf8');
  if (text.length === 0) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new WorkspaceSandboxError('WS_ERR_INVALID_JSON', `request body is not valid JSON: ${(err as Error).message}`);
  }
}

/** `/RULES/` → `/rules`: express matches case-insensitively, with or without one trailing slash. */
function routePath(path: string): string {
  const p = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  return p.toLowerCase();
}

export function createAdminApp(deps: AdminDeps): AdminHandler {
  const metrics = metricsHandler(deps.registry);
  const rulesPrefix = `${PROXY_ADMIN_PATHS.rules}/`;

  /** Who is calling, for the audit; 'unauthenticated' only when no token is configured. */
  const authenticate = async (req: IncomingMessage, res: ServerResponse, write: boolean): Promise<string> => {
    if (!deps.auth) {
      if (write && !deps.allowUnauthenticatedWrites) {
        throw new WorkspaceSandboxError('WS_ERR_FORBIDDEN', 'rule changes are disabled: no RULES_TOKEN_FILE is configured (RULES_ALLOW_UNAUTHENTICATED=true allows them in development)');
      }
      return 'unauthenticated';
    }
    const token = bearerToken(req.headers.authorization);
    const result = token === undefined ? { ok: false as const, reason: 'a bearer token is required' } : await deps.auth.verify(token);
    if (!result.ok) {
      res.setHeader('www-authenticate', 'Bearer realm="workspace-sandbox proxy rules"');
      throw new WorkspaceSandboxError('WS_ERR_UNAUTHORIZED', token === undefined ? result.reason : `invalid bearer token: ${result.reason}`);
    }
    return result.who;
  };

  const sendRules = (res: ServerResponse, snapshot: RuleSetSnapshot, status = 200) => {
    sendJson(res, status, {
      ...view(snapshot),
      global: view(deps.store.global()),
      static: { env: deps.staticRules().env, file: deps.staticRules().file },
    }, { etag: `"${snapshot.version}"` });
  };

  const audit = (who: string, action: string, before: RuleSetSnapshot, after: RuleSetSnapshot) => {
    const beforeIds = new Set(before.rules.map((r) => r.id));
    const afterIds = new Set(after.rules.map((r) => r.id));
    const beforeById = new Map(before.rules.map((r) => [r.id, JSON.stringify(r)]));
    deps.logger.info({
      audit: 'rules',
      action,
      who,
      added: [...afterIds].filter((id) => !beforeIds.has(id)),
      removed: [...beforeIds].filter((id) => !afterIds.has(id)),
      changed: after.rules.filter((r) => beforeById.has(r.id) && beforeById.get(r.id) !== JSON.stringify(r)).map((r) => r.id),
      fromVersion: before.version,
      version: after.version,
    }, 'rules changed');
  };

  const rules = async (req: IncomingMessage, res: ServerResponse, method: string, id: string | undefined, expectsContinue: boolean): Promise<void> => {
    // Route, method and credentials are decided from the headers alone: a caller without a valid
    // token gets its 401 before one byte of a body (up to 1 MiB) is read or parsed, and a client
    // that asked `Expect: 100-continue` is told so before it sends the body at all.
    if (id !== undefined && method !== 'DELETE') throw new WorkspaceSandboxError('WS_ERR_NOT_FOUND', `no route ${method} ${req.url!.split('?')[0]}`);
    if (id === undefined && !['GET', 'HEAD', 'PUT', 'POST'].includes(method)) {
      res.setHeader('allow', 'GET, HEAD, PUT, POST'); // RFC 9110 §15.5.6: a 405 names what is allowed
      throw new WorkspaceSandboxError('WS_ERR_METHOD_NOT_ALLOWED', 'use GET, PUT or POST on /rules, DELETE on /rules/<id>');
    }
    const who = await authenticate(req, res, method !== 'GET' && method !== 'HEAD');
    if (expectsContinue) res.writeContinue();
    // Only writes have a body to read; any other body is left unread (Node drops it).
    const body = method === 'PUT' || method === 'POST' ? await readJson(req) : undefined;
    if (id !== undefined) {
      const ifMatch = parseIfMatch(header(req, 'if-match'));
      const { before, after } = await deps.store.write((current) => {
        if (!current.some((r) => r.id === id)) throw new WorkspaceSandboxError('WS_ERR_NOT_FOUND', `no rule ${id} in this pod's rule set`);
        return current.filter((r) => r.id !== id);
      }, ifMatch);
      audit(who, 'delete', before, after);
      return sendRules(res, after);
    }
    if (method === 'GET' || method === 'HEAD') return sendRules(res, deps.store.scoped());
    if (method === 'PUT') {
      const ifMatch = parseIfMatch(header(req, 'if-match'));
      const list = Array.isArray(body) ? body : (body as { rules?: unknown } | null | undefined)?.rules;
      if (!Array.isArray(list)) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'body must be a list of rules or { "rules": [...] }');
      const next = validateRules(list, 'PUT /rules', deps.reservedIds(), deps.credentials);
      const { before, after } = await deps.store.write(() => next, ifMatch);
      audit(who, 'replace', before, after);
      return sendRules(res, after);
    }
    const ifMatch = parseIfMatch(header(req, 'if-match'));
    const parsed = ruleSchema.safeParse(body);
    if (!parsed.success) {
      // Validated as a one-rule set to list every problem; the body is one rule, so its fields are named without the `[0]`.
      try {
        validateRules([body], 'POST /rules', new Set(), deps.credentials);
      } catch (err) {
        if (err instanceof RuleSetError) throw new RuleSetError('POST /rules', err.problems.map((p) => ({ ...p, field: p.field.replace(/^\[0\]\.?/, '') || '(body)' })));
        throw err;
      }
    }
    const rule = parsed.data!;
    const { before, after } = await deps.store.write((current) => {
      if (current.some((r) => r.id === rule.id)) throw new WorkspaceSandboxError('WS_ERR_CONFLICT', `rule ${rule.id} already exists; PUT /rules to replace the set`);
      return validateRules([...current, rule], 'POST /rules', deps.reservedIds(), deps.credentials);
    }, ifMatch);
    audit(who, 'add', before, after);
    return sendRules(res, after, 201);
  };

  const route = async (req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> => {
    const method = req.method ?? 'GET';
    const rawPath = (req.url ?? '/').split('?')[0]!;
    const path = routePath(rawPath);
    const get = method === 'GET' || method === 'HEAD';
    if (get && path === PROXY_ADMIN_PATHS.healthz) return sendJson(res, 200, { status: 'ok' });
    if (get && path === PROXY_ADMIN_PATHS.readyz) {
      const report = await deps.readiness();
      return sendJson(res, report.ready ? 200 : 503, { status: report.ready ? 'ready' : 'not ready', ...report.checks });
    }
    if (get && path === PROXY_ADMIN_PATHS.metrics) return metrics(req, res);
    if (path === PROXY_ADMIN_PATHS.rules) return rules(req, res, method, undefined, expectsContinue);
    if (path.startsWith(rulesPrefix) && !path.slice(rulesPrefix.length).includes('/')) {
      const raw = (rawPath.endsWith('/') ? rawPath.slice(0, -1) : rawPath).slice(rulesPrefix.length);
      let id: string;
      try {
        id = decodeURIComponent(raw);
      } catch {
        throw new WorkspaceSandboxError('WS_ERR_BAD_REQUEST', `Failed to decode param '${raw}'`);
      }
      return rules(req, res, method, id, expectsContinue);
    }
    throw new WorkspaceSandboxError('WS_ERR_NOT_FOUND', `no route ${method} ${rawPath}`);
  };

  return (req, res, expectsContinue = false) => {
    route(req, res, expectsContinue).catch((err: unknown) => {
      const e = toWorkspaceSandboxError(err);
      if (e.status >= 500) deps.logger.error({ err, method: req.method, path: (req.url ?? '').split('?')[0], code: e.code }, 'request failed');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (req.complete) return sendJson(res, e.status, errorBody(e));
      if (req.readableFlowing === null) {
        // Refused from the headers alone (401, 403, 404, 405): the answer goes out now and the
        // body is never read. What the client still sends is dropped while the answer leaves, for
        // a short grace at most, so a client that is mid-upload still sees the answer.
        sendJson(res, e.status, errorBody(e), { connection: 'close' });
        const timer = setTimeout(() => req.socket.destroy(), UNREAD_BODY_GRACE_MS);
        timer.unref();
        req.socket.once('close', () => clearTimeout(timer));
        return;
      }
      // A refused body may still be arriving. Answering and closing at once would make a client
      // that is still sending see a connection reset instead of the answer: read and discard up
      // to a bound first, then answer and close.
      void discardBody(req).then(() => {
        if (!res.headersSent) sendJson(res, e.status, errorBody(e), { connection: 'close' });
      });
    });
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

const DISCARD_LIMIT_BYTES = 16 * 1024 * 1024;
/** How long a connection whose body was refused unread may stay open while its answer leaves. */
const UNREAD_BODY_GRACE_MS = 1000;
const DISCARD_LIMIT_MS = 5000;

/** Reads and drops the rest of a request body; gives up (destroying the socket) past the bounds. */
function discardBody(req: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      clearTimeout(timer);
      req.off('data', onData);
      resolve();
    };
    const giveUp = () => {
      req.socket.destroy();
      done();
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > DISCARD_LIMIT_BYTES) giveUp();
    };
    const timer = setTimeout(giveUp, DISCARD_LIMIT_MS);
    req.on('data', onData);
    req.once('end', done);
    req.once('close', done);
    req.resume();
  });
}
