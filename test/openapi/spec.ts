// The OpenAPI documents as test fixtures: loading, operation lookup, and validation of recorded
// HTTP exchanges against them with Ajv (JSON Schema 2020-12, the dialect of OpenAPI 3.1).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import type { Exchange } from './recorder.ts';

// ajv-formats is CommonJS (`module.exports = plugin`, plus `.default`): TypeScript's nodenext view
// of its default import is the module object, Node's is the plugin itself.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv2020) => Ajv2020;

export const SPEC_FILES = {
  agent: fileURLToPath(new URL('../../openapi/agent.yaml', import.meta.url)),
  proxyAdmin: fileURLToPath(new URL('../../openapi/proxy-admin.yaml', import.meta.url)),
} as const;

export const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
export type Method = (typeof METHODS)[number];

type Json = Record<string, unknown>;

export interface Operation {
  operationId: string;
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content: Record<string, { schema?: Json }> };
  responses: Record<string, Response>;
  security?: Json[];
}

export interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header' | 'cookie';
  required?: boolean;
  schema?: Json;
}

export interface Response {
  description: string;
  headers?: Record<string, { required?: boolean; schema?: Json }>;
  content?: Record<string, { schema?: Json }>;
}

export interface Spec {
  openapi: string;
  'x-case-insensitive-paths'?: boolean;
  'x-trailing-slash'?: boolean;
  paths: Record<string, Record<string, unknown>>;
  components: Json & { schemas: Record<string, Json> };
  security?: Json[];
}

export function loadSpec(file: string): Spec {
  return parseYaml(readFileSync(file, 'utf8')) as Spec;
}

/** Follows one local `$ref` (`#/components/...`) of a response, parameter or request body. */
export function deref<T>(spec: Spec, value: T | { $ref: string }): T {
  let cur: unknown = value;
  for (let hops = 0; hops < 10 && cur && typeof cur === 'object' && '$ref' in cur; hops++) {
    const ref = (cur as { $ref: string }).$ref;
    if (!ref.startsWith('#/')) throw new Error(`only local refs are supported: ${ref}`);
    cur = ref.slice(2).split('/').reduce<unknown>((node, key) => (node as Json | undefined)?.[key.replace(/~1/g, '/').replace(/~0/g, '~')], spec);
    if (cur === undefined) throw new Error(`unresolved $ref ${ref}`);
  }
  return cur as T;
}

/** Every (path template, method, operation) of the document. */
export function operations(spec: Spec): { path: string; method: Method; op: Operation }[] {
  const out: { path: string; method: Method; op: Operation }[] = [];
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of METHODS) {
      if (item[method]) out.push({ path, method, op: item[method] as Operation });
    }
  }
  return out;
}

/**
 * The operation a concrete request path hits. Literal templates win over templated ones; a
 * parameter at the end of a template takes the rest of the path (the agent's `/files/{path}`
 * spans several segments), other parameters one segment.
 */
export function matchPath(spec: Spec, pathname: string): { template: string; params: Record<string, string> } | undefined {
  // Document-level `x-case-insensitive-paths` / `x-trailing-slash` (or `x-trailing-slash` on one
  // path item) say the server answers `/RULES/` as `/rules`.
  const fold = spec['x-case-insensitive-paths'] === true;
  const trimmed = pathname.replace(/(.)\/$/, '$1');
  const candidates = [pathname, ...(trimmed !== pathname ? [trimmed] : [])];
  for (const candidate of candidates) {
    const m = matchTemplate(spec, fold ? candidate.toLowerCase() : candidate);
    if (!m) continue;
    const trailingOk = candidate === pathname || spec['x-trailing-slash'] === true
      || (spec.paths[m.template] as { 'x-trailing-slash'?: boolean } | undefined)?.['x-trailing-slash'] === true;
    if (!trailingOk) continue;
    if (!fold) return m;
    // Parameter values as sent (the lower-cased copy only served the match).
    const params = Object.fromEntries(Object.entries(m.params).map(([k, v]) => {
      const i = candidate.toLowerCase().lastIndexOf(v);
      return [k, i === -1 ? v : candidate.slice(i, i + v.length)];
    }));
    return { template: m.template, params };
  }
  return undefined;
}

function matchTemplate(spec: Spec, pathname: string): { template: string; params: Record<string, string> } | undefined {
  const templates = Object.keys(spec.paths).sort((a, b) => Number(a.includes('{')) - Number(b.includes('{')));
  for (const template of templates) {
    const names: string[] = [];
    const source = template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{([^}]+)\\?\}/g, (_m, name: string, offset: number, whole: string) => {
      names.push(name);
      return offset + _m.length === whole.length ? '(.+)' : '([^/]+)';
    });
    const m = new RegExp(`^${source}$`).exec(pathname);
    if (m) return { template, params: Object.fromEntries(names.map((n, i) => [n, m[i + 1]!])) };
  }
  return undefined;
}

/** Rewrites `#/components/schemas/X` into refs Ajv resolves against the registered document. */
function rewriteRefs(node: unknown, base: string): unknown {
  if (Array.isArray(node)) return node.map((n) => rewriteRefs(n, base));
  if (node && typeof node === 'object') {
    const out: Json = {};
    for (const [k, v] of Object.entries(node)) {
      out[k] = k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/')
        ? `${base}#/$defs/${v.slice('#/components/schemas/'.length)}`
        : rewriteRefs(v, base);
    }
    return out;
  }
  return node;
}

export interface ValidationProblem {
  exchange: string;
  problem: string;
}

/** A malformed escape (sent on purpose by error-path tests) is validated as it is. */
function safeDecode(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

const mediaType = (value: string | undefined) => value?.split(';')[0]!.trim().toLowerCase();

export class SpecValidator {
  readonly spec: Spec;
  readonly ajv: Ajv2020;
  readonly #base: string;
  readonly #compiled = new Map<unknown, ValidateFunction>();
  /** `METHOD template status` of every exchange validated so far. */
  readonly seen = new Set<string>();

  constructor(spec: Spec, name: string) {
    this.spec = spec;
    // strict: unknown keywords and ambiguous schemas fail compilation, so a typo in the document
    // (`requried`) cannot silently validate nothing. OpenAPI's own annotation keywords are declared.
    this.ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true, validateFormats: true });
    addFormats(this.ajv);
    this.ajv.addVocabulary(['discriminator', 'example', 'xml', 'externalDocs']);
    this.#base = `urn:workspace-sandbox:openapi:${name}`;
    this.ajv.addSchema({ $id: this.#base, $defs: rewriteRefs(spec.components.schemas, this.#base) as Json });
  }

  /** A compiled validator of a schema taken from the document (refs into components work). */
  validator(schema: Json): ValidateFunction {
    let fn = this.#compiled.get(schema);
    if (!fn) {
      fn = this.ajv.compile(rewriteRefs(schema, this.#base) as Json);
      this.#compiled.set(schema, fn);
    }
    return fn;
  }

  /** Compiles every component schema: throws on the first the validator refuses. */
  compileAll(): string[] {
    return Object.keys(this.spec.components.schemas).map((name) => {
      const fn = this.ajv.getSchema(`${this.#base}#/$defs/${name}`);
      if (!fn) throw new Error(`component schema ${name} did not compile`);
      return name;
    });
  }

  #check(schema: Json | undefined, value: unknown, where: string, problems: string[]): void {
    if (!schema) return;
    const fn = this.validator(schema);
    if (!fn(value)) problems.push(`${where}: ${this.ajv.errorsText(fn.errors, { dataVar: where })} (value ${JSON.stringify(value)?.slice(0, 300)})`);
  }

  /** Validates one recorded exchange: route, status, content type, body, headers and query. */
  validate(x: Exchange): string[] {
    const problems: string[] = [];
    // Not `new URL()`: it would resolve `..` segments the server sees (and must refuse) as sent.
    const q = x.url.indexOf('?');
    const pathname = q === -1 ? x.url : x.url.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : x.url.slice(q + 1));
    const match = matchPath(this.spec, pathname);
    if (!match) return [`no path of the document matches ${pathname}`];
    const item = this.spec.paths[match.template]!;
    const method = x.method.toLowerCase() === 'head' && !item.head ? 'get' : x.method.toLowerCase();
    const op = item[method] as Operation | undefined;
    if (!op) return [`${x.method} is not documented on ${match.template}`];
    this.seen.add(`${x.method.toUpperCase() === 'HEAD' ? 'GET' : x.method.toUpperCase()} ${match.template} ${x.status}`);

    // Parameters: every query parameter sent is documented; values are checked on accepted
    // requests (error-path tests send invalid ones on purpose, and the 4xx is what is checked).
    const params = [...((item.parameters as Parameter[] | undefined) ?? []), ...(op.parameters ?? [])].map((p) => deref<Parameter>(this.spec, p));
    const accepted = x.status < 400;
    for (const [name, value] of query) {
      const p = params.find((r) => r.in === 'query' && r.name === name);
      if (!p) problems.push(`query parameter ${name} is not documented`);
      else if (accepted) this.#check(p.schema, value, `query.${name}`, problems);
    }
    for (const [name, raw] of Object.entries(match.params)) {
      const p = params.find((r) => r.in === 'path' && r.name === name);
      if (!p) problems.push(`path parameter ${name} is not documented`);
      else if (accepted) this.#check(p.schema, safeDecode(raw), `path.${name}`, problems);
    }

    // Request body (successful requests only: error-path tests send invalid bodies on purpose).
    if (op.requestBody && accepted && x.requestBody.length > 0) {
      const body = deref<NonNullable<Operation['requestBody']>>(this.spec, op.requestBody);
      const type = mediaType(x.requestHeaders['content-type'] as string | undefined);
      const media = type && (body.content[type] ?? body.content['*/*']);
      if (!media) problems.push(`request content type ${type} is not documented`);
      else if (type === 'application/json') this.#check(media.schema, JSON.parse(x.requestBody.toString('utf8')), 'request', problems);
    }

    const response = op.responses[String(x.status)];
    if (!response) {
      problems.push(`status ${x.status} is not documented for ${x.method} ${match.template}`);
      return problems;
    }
    const res = deref<Response>(this.spec, response);
    for (const [name, header] of Object.entries(res.headers ?? {})) {
      const h = deref<{ required?: boolean; schema?: Json }>(this.spec, header);
      const value = x.responseHeaders[name.toLowerCase()];
      if (value === undefined) {
        if (h.required) problems.push(`required response header ${name} is missing`);
        continue;
      }
      this.#check(h.schema, Array.isArray(value) ? value.join(', ') : value, `header.${name}`, problems);
    }
    if (x.method.toUpperCase() === 'HEAD') return problems;
    if (!res.content) {
      if (x.responseBody.length > 0) problems.push(`status ${x.status} documents no body, got ${x.responseBody.length} bytes`);
      return problems;
    }
    const type = mediaType(x.responseHeaders['content-type'] as string | undefined);
    const media = type === undefined ? undefined : res.content[type];
    if (!media) {
      problems.push(`response content type ${type} is not one of ${Object.keys(res.content).join(', ')}`);
      return problems;
    }
    if (x.truncated) return problems;
    const text = x.responseBody.toString('utf8');
    if (type === 'application/json') {
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        problems.push(`response body is not JSON: ${text.slice(0, 200)}`);
        return problems;
      }
      this.#check(media.schema, body, 'response', problems);
    } else if (type === 'application/x-ndjson') {
      // The schema describes one line; an aborted exchange may end in a partial line.
      const lines = text.split('\n');
      const complete = x.aborted ? lines.slice(0, -1) : lines;
      if (!x.aborted && complete.at(-1) !== '') problems.push('NDJSON body does not end with a newline');
      complete.filter(Boolean).forEach((line, i) => this.#check(media.schema, JSON.parse(line), `frame[${i}]`, problems));
    }
    return problems;
  }

  /** Documented `METHOD template status` triples no exchange has produced. */
  unexercised(): string[] {
    const out: string[] = [];
    for (const { path, method, op } of operations(this.spec)) {
      for (const status of Object.keys(op.responses)) {
        const key = `${method.toUpperCase()} ${path} ${status}`;
        if (!this.seen.has(key)) out.push(key);
      }
    }
    return out;
  }
}
