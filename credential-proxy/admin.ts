// The admin listener: /healthz, /readyz (with details), /metrics, and /rules, the backend's only
// way to change this pod's egress at run time. /rules always needs a bearer token when a token
// file is configured; without one, reads are open and writes are refused unless the development
// flag allows them.
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { PROXY_ADMIN_PATHS } from '../lib/constants.ts';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { errorMiddleware } from '../lib/http.ts';
import { metricsHandler } from '../lib/metrics.ts';
import { bearerToken, type TokenFile } from './auth.ts';
import { redactRule, ruleSchema, validateRules, type Rule } from './rules.ts';
import type { RulesStore, RuleSetSnapshot } from './rules-store.ts';

export interface ReadinessReport {
  ready: boolean;
  checks: Record<string, unknown>;
}

export interface AdminDeps {
  logger: Logger;
  registry: Registry;
  store: RulesStore;
  tokens: TokenFile | undefined;
  allowUnauthenticatedWrites: boolean;
  /** Ids taken by env, file and global rules (API rules may not reuse them). */
  reservedIds: () => ReadonlySet<string>;
  staticRules: () => { env: readonly Rule[]; file: readonly Rule[] };
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
  return { version: snapshot.version, rules: snapshot.rules.map(redactRule) };
}

export function createAdminApp(deps: AdminDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get(PROXY_ADMIN_PATHS.healthz, (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get(PROXY_ADMIN_PATHS.readyz, async (_req, res) => {
    const report = await deps.readiness();
    res.status(report.ready ? 200 : 503).json({ status: report.ready ? 'ready' : 'not ready', ...report.checks });
  });
  app.get(PROXY_ADMIN_PATHS.metrics, metricsHandler(deps.registry));

  // Who is calling, for the audit; undefined only when no token file is configured.
  const authenticate = (write: boolean) => (req: Request, res: Response, next: NextFunction) => {
    if (!deps.tokens) {
      if (write && !deps.allowUnauthenticatedWrites) {
        return next(new WorkspaceSandboxError('WS_ERR_FORBIDDEN', 'rule changes are disabled: no RULES_TOKEN_FILE is configured (RULES_ALLOW_UNAUTHENTICATED=true allows them in development)'));
      }
      res.locals.who = 'unauthenticated';
      return next();
    }
    const token = bearerToken(req.headers.authorization);
    const id = token === undefined ? undefined : deps.tokens.verify(token);
    if (id === undefined) {
      res.setHeader('www-authenticate', 'Bearer realm="workspace-sandbox proxy rules"');
      return next(new WorkspaceSandboxError('WS_ERR_UNAUTHORIZED', token === undefined ? 'a bearer token is required' : 'invalid bearer token'));
    }
    res.locals.who = id;
    next();
  };

  const sendRules = (res: Response, snapshot: RuleSetSnapshot, status = 200) => {
    res.setHeader('etag', `"${snapshot.version}"`);
    res.status(status).json({
      ...view(snapshot),
      global: view(deps.store.global()),
      static: { env: deps.staticRules().env.map(redactRule), file: deps.staticRules().file.map(redactRule) },
    });
  };

  const audit = (res: Response, action: string, before: RuleSetSnapshot, after: RuleSetSnapshot) => {
    const beforeIds = new Set(before.rules.map((r) => r.id));
    const afterIds = new Set(after.rules.map((r) => r.id));
    const beforeById = new Map(before.rules.map((r) => [r.id, JSON.stringify(r)]));
    deps.logger.info({
      audit: 'rules',
      action,
      who: res.locals.who as string,
      added: [...afterIds].filter((id) => !beforeIds.has(id)),
      removed: [...beforeIds].filter((id) => !afterIds.has(id)),
      changed: after.rules.filter((r) => beforeById.has(r.id) && beforeById.get(r.id) !== JSON.stringify(r)).map((r) => r.id),
      fromVersion: before.version,
      version: after.version,
    }, 'rules changed');
  };

  const rules = express.Router();
  rules.use(express.json({ limit: '1mb', strict: false }));
  rules.get('/', authenticate(false), (_req, res) => sendRules(res, deps.store.scoped()));

  rules.put('/', authenticate(true), async (req, res) => {
    const ifMatch = parseIfMatch(req.get('if-match'));
    const body: unknown = req.body;
    const list = Array.isArray(body) ? body : (body as { rules?: unknown } | null)?.rules;
    if (!Array.isArray(list)) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'body must be a list of rules or { "rules": [...] }');
    const next = validateRules(list, 'PUT /rules', deps.reservedIds());
    const { before, after } = await deps.store.write(() => next, ifMatch);
    audit(res, 'replace', before, after);
    sendRules(res, after);
  });

  rules.post('/', authenticate(true), async (req, res) => {
    const ifMatch = parseIfMatch(req.get('if-match'));
    const parsed = ruleSchema.safeParse(req.body);
    if (!parsed.success) validateRules([req.body], 'POST /rules'); // throws with every problem listed
    const rule = parsed.data!;
    const { before, after } = await deps.store.write((current) => {
      if (current.some((r) => r.id === rule.id)) throw new WorkspaceSandboxError('WS_ERR_CONFLICT', `rule ${rule.id} already exists; PUT /rules to replace the set`);
      return validateRules([...current, rule], 'POST /rules', deps.reservedIds());
    }, ifMatch);
    audit(res, 'add', before, after);
    sendRules(res, after, 201);
  });

  rules.delete('/:id', authenticate(true), async (req, res) => {
    const ifMatch = parseIfMatch(req.get('if-match'));
    const id = String(req.params.id);
    const { before, after } = await deps.store.write((current) => {
      if (!current.some((r) => r.id === id)) throw new WorkspaceSandboxError('WS_ERR_NOT_FOUND', `no rule ${id} in this pod's rule set`);
      return current.filter((r) => r.id !== id);
    }, ifMatch);
    audit(res, 'delete', before, after);
    sendRules(res, after);
  });

  rules.all('/', (_req, _res, next) => next(new WorkspaceSandboxError('WS_ERR_METHOD_NOT_ALLOWED', 'use GET, PUT or POST on /rules, DELETE on /rules/<id>')));
  app.use(PROXY_ADMIN_PATHS.rules, rules);

  app.use((req, _res, next) => next(new WorkspaceSandboxError('WS_ERR_NOT_FOUND', `no route ${req.method} ${req.path}`)));
  // Rule-set problems (RuleSetError) carry every problem in `details` and in the message.
  app.use(errorMiddleware(deps.logger));
  return app;
}
