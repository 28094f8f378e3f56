// A small typed client of the credential proxy's admin API (openapi/proxy-admin.yaml), over fetch.
//
//   const admin = new ProxyAdminClient({ baseUrl: 'http://10.0.3.7:8082', token });
//   const current = await admin.getRules();                       // { version, rules, …, etag }
//   await admin.putRules([...current.rules, rule], { ifMatch: current.etag });   // 412 when stale
//   await admin.updateRules((rules) => rules.filter((r) => r.id !== 'old'));     // retries on 412
//   // errors: ProxyAdminApiError { status, code: 'WS_ERR_…', details }
import { PROXY_ADMIN_PATHS } from '../lib/constants.ts';
import type { ErrorCode } from '../lib/errors.ts';

// ---- Wire types (openapi/proxy-admin.yaml, components.schemas) ----------------------------------

export interface Rule {
  id: string;
  hosts: string[];
  ports?: number[];
  methods?: string[];
  paths?: string[];
  allowPrivate?: boolean;
  /** Name of a credential declared in the sidecar's CREDENTIALS_FILE; only for hosts it allows. */
  credential?: string;
}

export interface RuleSet {
  version: number;
  rules: Rule[];
}

export interface RulesView extends RuleSet {
  global: RuleSet;
  static: { env: Rule[]; file: Rule[] };
}

/** A rules answer with its ETag (`"7"`), the value to send back as If-Match. */
export interface RulesResult extends RulesView {
  etag: string;
}

export interface StoreStatus {
  kind: 'memory' | 'redis';
  up: boolean;
  synced: boolean;
  scope: string;
  stateFile?: string;
  rejectedSets?: number;
  lastError?: string;
  lastSyncAt?: string;
}

export interface Readiness {
  status: 'ready' | 'not ready';
  rules: { loaded: boolean; version: number; count: number };
  store: StoreStatus;
  interceptor?: string;
  error?: string;
}

// ---- Errors -------------------------------------------------------------------------------------

/** Code of an answer that is not the proxy's `{error:{code,message}}` body. */
export const UNEXPECTED_RESPONSE = 'WS_ERR_UNEXPECTED_RESPONSE';

/** An error answer of the admin API, carrying its stable code. */
export class ProxyAdminApiError extends Error {
  readonly status: number;
  readonly code: ErrorCode | typeof UNEXPECTED_RESPONSE;
  readonly details: unknown;

  constructor(status: number, code: ErrorCode | typeof UNEXPECTED_RESPONSE, message: string, details?: unknown) {
    super(message);
    this.name = 'ProxyAdminApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

// ---- Client -------------------------------------------------------------------------------------

export interface ProxyAdminClientOptions {
  /** `http://127.0.0.1:8082` */
  baseUrl: string;
  /** A token of the proxy's RULES_TOKEN_FILE. */
  token?: string;
  /** Default: the global fetch. */
  fetch?: typeof fetch;
}

export interface WriteOptions {
  /** The version the change is based on (a number, or the ETag as returned); 412 when stale. */
  ifMatch?: number | string;
  signal?: AbortSignal;
}

export class ProxyAdminClient {
  readonly #base: string;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(options: ProxyAdminClientOptions) {
    this.#base = options.baseUrl.replace(/\/+$/, '');
    this.#token = options.token;
    this.#fetch = options.fetch ?? fetch;
  }

  async #call(method: string, path: string, options: { body?: unknown; ifMatch?: number | string; signal?: AbortSignal | undefined; auth?: boolean } = {}): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (options.auth !== false && this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;
    if (options.ifMatch !== undefined) headers['if-match'] = typeof options.ifMatch === 'number' ? `"${options.ifMatch}"` : options.ifMatch;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    return this.#fetch(`${this.#base}${path}`, { method, headers, body, signal: options.signal });
  }

  async #rules(res: Response): Promise<RulesResult> {
    if (!res.ok) throw await toApiError(res);
    const view = await res.json() as RulesView;
    return { ...view, etag: res.headers.get('etag') ?? `"${view.version}"` };
  }

  /** GET /healthz */
  async health(options: { signal?: AbortSignal } = {}): Promise<{ status: 'ok' }> {
    const res = await this.#call('GET', PROXY_ADMIN_PATHS.healthz, { signal: options.signal, auth: false });
    if (!res.ok) throw await toApiError(res);
    return await res.json() as { status: 'ok' };
  }

  /** GET /readyz. Not ready (503) is an answer, not an error: `ready` says which. */
  async ready(options: { signal?: AbortSignal } = {}): Promise<Readiness & { ready: boolean }> {
    const res = await this.#call('GET', PROXY_ADMIN_PATHS.readyz, { signal: options.signal, auth: false });
    if (res.status !== 200 && res.status !== 503) throw await toApiError(res);
    return { ...(await res.json() as Readiness), ready: res.status === 200 };
  }

  /** GET /metrics: the Prometheus text exposition. */
  async metrics(options: { signal?: AbortSignal } = {}): Promise<string> {
    const res = await this.#call('GET', PROXY_ADMIN_PATHS.metrics, { signal: options.signal, auth: false });
    if (!res.ok) throw await toApiError(res);
    return res.text();
  }

  /** GET /rules: the Pod's rules with their version and ETag, plus the global and static sets. */
  async getRules(options: { signal?: AbortSignal } = {}): Promise<RulesResult> {
    return this.#rules(await this.#call('GET', PROXY_ADMIN_PATHS.rules, { signal: options.signal }));
  }

  /** PUT /rules: replaces the Pod's rule set. */
  async putRules(rules: readonly Rule[], options: WriteOptions = {}): Promise<RulesResult> {
    return this.#rules(await this.#call('PUT', PROXY_ADMIN_PATHS.rules, { body: rules, ...options }));
  }

  /** POST /rules: adds one rule (409 WS_ERR_CONFLICT when its id exists). */
  async addRule(rule: Rule, options: WriteOptions = {}): Promise<RulesResult> {
    return this.#rules(await this.#call('POST', PROXY_ADMIN_PATHS.rules, { body: rule, ...options }));
  }

  /** DELETE /rules/<id> (404 WS_ERR_NOT_FOUND when absent). */
  async deleteRule(id: string, options: WriteOptions = {}): Promise<RulesResult> {
    return this.#rules(await this.#call('DELETE', `${PROXY_ADMIN_PATHS.rules}/${encodeURIComponent(id)}`, options));
  }

  /**
   * Read-modify-write with optimistic concurrency: `change` gets the current rules and returns
   * the new list, which is written with If-Match; on 412 (someone else wrote in between) the
   * whole cycle runs again, up to `attempts` times.
   */
  async updateRules(change: (rules: readonly Rule[]) => Rule[], options: { attempts?: number; signal?: AbortSignal } = {}): Promise<RulesResult> {
    const attempts = options.attempts ?? 5;
    for (let i = 1; ; i++) {
      const current = await this.getRules({ signal: options.signal });
      try {
        return await this.putRules(change(current.rules), { ifMatch: current.etag, signal: options.signal });
      } catch (err) {
        if (!(err instanceof ProxyAdminApiError) || err.code !== 'WS_ERR_PRECONDITION_FAILED' || i >= attempts) throw err;
      }
    }
  }
}

async function toApiError(res: Response): Promise<ProxyAdminApiError> {
  const text = await res.text().catch(() => '');
  try {
    const e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
    if (e && typeof e.code === 'string' && typeof e.message === 'string') {
      return new ProxyAdminApiError(res.status, e.code as ErrorCode, e.message, e.details);
    }
  } catch {
    // not JSON: below
  }
  return new ProxyAdminApiError(res.status, UNEXPECTED_RESPONSE, `HTTP ${res.status}: ${text.slice(0, 200)}`);
}
