// The OpenAPI documents themselves: valid OpenAPI 3.1 (a maintained validator), every schema
// compiles under a strict JSON Schema 2020-12 validator, error responses are consistent with the
// one status table of lib/errors.ts, and request schemas match the servers' zod schemas.
import t from 'tap';
import { Validator } from '@seriousme/openapi-schema-validator';
import { z } from 'zod';
import { ERROR_STATUS } from '../../lib/errors.ts';
import { executeRequestSchema } from '../../agent/request.ts';
import { ruleSchema } from '../../credential-proxy/rules.ts';
import { deref, loadSpec, operations, SPEC_FILES, SpecValidator, type Response, type Spec } from './spec.ts';

type Json = Record<string, unknown>;

const STATUS_DOCUMENTS = new Set(['#/components/schemas/Health', '#/components/schemas/Readiness']);

/** Every `code` a schema allows: `const`, `enum`, or the whole ErrorCode enum through a $ref. */
function codesOf(spec: Spec, schema: Json | undefined): string[] {
  if (!schema) return [];
  if (schema.$ref) return codesOf(spec, deref<Json>(spec, schema as { $ref: string }));
  const codes: string[] = [];
  const code = ((schema.properties as Json | undefined)?.error as Json | undefined)?.properties as Json | undefined;
  const c = code?.code as Json | undefined;
  if (c?.const) codes.push(c.const as string);
  if (Array.isArray(c?.enum)) codes.push(...(c.enum as string[]));
  for (const sub of (schema.allOf as Json[] | undefined) ?? []) codes.push(...codesOf(spec, sub));
  return codes;
}

for (const [name, file] of Object.entries(SPEC_FILES)) {
  t.test(`${name}: a valid OpenAPI 3.1 document`, async (t) => {
    const validator = new Validator();
    const result = await validator.validate(file);
    t.same(result.errors ?? [], [], 'no schema errors');
    t.ok(result.valid);
    t.equal(validator.version, '3.1');
  });

  t.test(`${name}: every schema compiles under strict Ajv 2020-12`, async (t) => {
    const spec = loadSpec(file);
    const v = new SpecValidator(spec, name);
    t.ok(v.compileAll().length > 5);
    // Inline schemas of parameters, headers and bodies too.
    for (const { op, path, method } of operations(spec)) {
      for (const [status, r] of Object.entries(op.responses)) {
        const res = deref<Response>(spec, r);
        for (const media of Object.values(res.content ?? {})) if (media.schema) t.doesNotThrow(() => v.validator(media.schema!), `${method} ${path} ${status}`);
        for (const h of Object.values(res.headers ?? {})) {
          const header = deref<{ schema?: Json }>(spec, h);
          if (header.schema) t.doesNotThrow(() => v.validator(header.schema!));
        }
      }
    }
  });

  t.test(`${name}: operations are complete and error responses match lib/errors.ts`, async (t) => {
    const spec = loadSpec(file);
    const ids = new Set<string>();
    const errorCodes = (spec.components.schemas.ErrorCode as { enum: string[] }).enum;
    t.same([...errorCodes].sort(), Object.keys(ERROR_STATUS).sort(), 'ErrorCode lists exactly the codes of ERROR_STATUS');
    for (const { path, method, op } of operations(spec)) {
      const where = `${method.toUpperCase()} ${path}`;
      t.ok(op.operationId, `${where} has an operationId`);
      t.notOk(ids.has(op.operationId), `${where}: operationId ${op.operationId} is unique`);
      ids.add(op.operationId);
      for (const [status, r] of Object.entries(op.responses)) {
        const res = deref<Response>(spec, r);
        const code = Number(status);
        if (code < 400) continue;
        const json = res.content?.['application/json']?.schema;
        t.ok(json, `${where} ${status} has a JSON error body`);
        // A 503 of /health or /readyz is the status document itself, not an error envelope.
        if (STATUS_DOCUMENTS.has(String((json as Json | undefined)?.$ref))) continue;
        const codes = codesOf(spec, json);
        t.ok(codes.length > 0, `${where} ${status} names its error codes`);
        for (const c of codes) {
          t.equal(ERROR_STATUS[c as keyof typeof ERROR_STATUS], code, `${where} ${status}: ${c} maps to ${code} in ERROR_STATUS`);
        }
      }
      // Operations that need a token document 401; the open ones do not.
      const security = op.security ?? spec.security ?? [];
      const needsToken = security.some((s) => Object.keys(s).length > 0);
      t.equal('401' in op.responses, needsToken, `${where}: 401 documented iff the operation takes a token`);
    }
  });
}

t.test('request schemas have exactly the fields the servers accept (zod)', async (t) => {
  const cases = [
    {
      spec: loadSpec(SPEC_FILES.agent), schema: 'ExecuteRequest',
      zod: z.toJSONSchema(executeRequestSchema({ maxTimeoutMs: 1000, maxOutputBytesLimit: 1000 }), { io: 'input', unrepresentable: 'any' }),
    },
    { spec: loadSpec(SPEC_FILES.proxyAdmin), schema: 'Rule', zod: z.toJSONSchema(ruleSchema, { io: 'input', unrepresentable: 'any' }) },
  ];
  for (const c of cases) {
    const documented = c.spec.components.schemas[c.schema] as { properties: Json; required?: string[]; additionalProperties?: boolean };
    const zodSchema = c.zod as { properties: Json; required?: string[]; additionalProperties?: boolean };
    t.same(Object.keys(documented.properties).sort(), Object.keys(zodSchema.properties).sort(), `${c.schema}: same properties`);
    t.same([...(documented.required ?? [])].sort(), [...(zodSchema.required ?? [])].sort(), `${c.schema}: same required`);
    t.equal(documented.additionalProperties, false, `${c.schema}: unknown fields refused, as the server does`);
    t.equal(zodSchema.additionalProperties, false);
    for (const [prop, s] of Object.entries(zodSchema.properties)) {
      const zt = (s as Json).type;
      const dt = (documented.properties[prop] as Json).type;
      if (zt !== undefined && dt !== undefined) t.same(dt, zt, `${c.schema}.${prop}: same type`);
    }
  }
});

t.test('the validator catches a response that breaks the document', async (t) => {
  // The response tests rely on SpecValidator; show it fails on drift of each kind.
  const v = new SpecValidator(loadSpec(SPEC_FILES.proxyAdmin), 'proxy-admin-neg');
  const base = { method: 'GET', url: '/rules', requestHeaders: {}, requestBody: Buffer.alloc(0), truncated: false, aborted: false };
  const good = { version: 1, rules: [], global: { version: 0, rules: [] }, static: { env: [], file: [] } };
  const ok = { ...base, status: 200, responseHeaders: { 'content-type': 'application/json', etag: '"1"' }, responseBody: Buffer.from(JSON.stringify(good)) };
  t.same(v.validate(ok), []);
  t.match(v.validate({ ...ok, responseBody: Buffer.from(JSON.stringify({ ...good, extra: 1 })) }).join(), /additional/);
  t.match(v.validate({ ...ok, responseHeaders: { 'content-type': 'application/json' } }).join(), /ETag is missing/);
  t.match(v.validate({ ...ok, status: 418 }).join(), /418 is not documented/);
  t.match(v.validate({ ...ok, method: 'PATCH' }).join(), /PATCH is not documented/);
  t.match(v.validate({ ...ok, url: '/nope' }).join(), /no path/);
  t.match(v.validate({ ...ok, responseHeaders: { 'content-type': 'text/html', etag: '"1"' } }).join(), /content type text\/html/);
  const err = (code: string, status: number) => ({ ...base, status, responseHeaders: { 'content-type': 'application/json', 'www-authenticate': 'Bearer x' }, responseBody: Buffer.from(JSON.stringify({ error: { code, message: 'm' } })) });
  t.same(v.validate(err('WS_ERR_UNAUTHORIZED', 401)), []);
  t.match(v.validate(err('WS_ERR_FORBIDDEN', 401)).join(), /constant/, 'a code that does not belong to the status');
  t.match(v.validate(err('WS_ERR_NO_SUCH_CODE', 401)).join(), /allowed values/, 'a code that does not exist');
});
