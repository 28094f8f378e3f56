// The proxy admin client against a real credential proxy (in-process, port 0), through a
// recording tap: every answer the client gets, on happy and error paths, is then validated
// against openapi/proxy-admin.yaml with Ajv.
import { createServer } from 'node:http';
import t, { type Test } from 'tap';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import { createInterceptor } from '../../credential-proxy/intercept.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RuleStateFile } from '../../credential-proxy/rules-state-file.ts';
import { MemoryRulesStore } from '../../credential-proxy/rules-store.ts';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { ProxyAdminApiError, ProxyAdminClient, UNEXPECTED_RESPONSE, type Rule } from '../../clients/proxy-admin-client.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';
import { startTap, type Exchange } from '../openapi/recorder.ts';
import { loadSpec, SPEC_FILES, SpecValidator } from '../openapi/spec.ts';
import { startProxy } from '../openapi/servers.ts';

const TOKEN = 'backend-admin-token-4f1e9c2a7b';

/** A CREDENTIALS_FILE declaring `llm` for api.example.com. */
function credentialsEnv(t: Test): { CREDENTIALS_FILE: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ws-client-creds-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'credentials.yaml'), 'credentials:\n  llm: { hosts: [api.example.com], type: header, header: x-api-key, value: { env: LLM_KEY } }\n');
  return { CREDENTIALS_FILE: join(dir, 'credentials.yaml') };
}
const exchanges: Exchange[] = [];

/** A proxy behind a recording tap, and a client of it. */
async function setup(t: Test, options: Parameters<typeof startProxy>[1] = {}, token: string | undefined = TOKEN) {
  const p = await startProxy(t, options);
  const tap = await startTap({ port: p.adminPort });
  t.teardown(async () => {
    await tap.close();
    exchanges.push(...tap.exchanges);
  });
  return { p, tap, client: new ProxyAdminClient({ baseUrl: tap.url!, ...(token === undefined ? {} : { token }) }) };
}

async function rejects(t: Test, promise: Promise<unknown>, status: number, code: string): Promise<ProxyAdminApiError | undefined> {
  try {
    await promise;
    t.fail(`expected ${status} ${code}`);
    return undefined;
  } catch (err) {
    if (!(err instanceof ProxyAdminApiError)) throw err;
    t.equal(err.status, status, `status ${status}`);
    t.equal(err.code, code, `code ${code}`);
    return err;
  }
}

t.test('probes: health, readiness, metrics', async (t) => {
  const { client } = await setup(t);
  t.same(await client.health(), { status: 'ok' });
  const ready = await client.ready();
  t.equal(ready.ready, true);
  t.equal(ready.status, 'ready');
  t.equal(ready.store.kind, 'memory');
  t.match(await client.metrics(), /rules_version\{program="credential-proxy"\} 0/);
});

t.test('readiness 503 while the interceptor cannot write its CA', async (t) => {
  // A CA directory below a regular file can never be created: the real interceptor fails.
  const env = { PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', CA_DIR: '/dev/null/ca' };
  const interceptor = createInterceptor(loadProxyConfig(env), {
    logger: createLogger({ name: 'interceptor', level: 'silent' }),
    registry: createMetricsRegistry({ program: 'credential-proxy', defaultMetrics: false }),
  });
  const { client } = await setup(t, { env: { CA_DIR: '/dev/null/ca' }, deps: { interceptor } });
  const ready = await client.ready();
  t.equal(ready.ready, false);
  t.equal(ready.status, 'not ready');
  t.match(ready.interceptor, /^(pending|failed: )/);
});

t.test('rules: read, replace, add, delete with versions and If-Match', async (t) => {
  const { client, p } = await setup(t, { tokens: [`backend:${TOKEN}`], env: { ALLOWED_DOMAINS: 'static.example.com', ...credentialsEnv(t) }, rules: [{ id: 'from-file', hosts: ['file.example.com'] }] });
  const r0 = await client.getRules();
  t.equal(r0.version, 0);
  t.equal(r0.etag, '"0"');
  t.same(r0.static.env.map((r) => r.id), ['env:static.example.com']);
  t.same(r0.static.file.map((r) => r.id), ['from-file']);
  t.same(r0.global, { version: 0, rules: [] });

  const r1 = await client.putRules([{ id: 'pypi', hosts: ['pypi.org', 'files.pythonhosted.org'] }], { ifMatch: r0.etag });
  t.equal(r1.version, 1);
  t.equal(r1.etag, '"1"');
  const stale = await rejects(t, client.putRules([], { ifMatch: 0 }), 412, 'WS_ERR_PRECONDITION_FAILED');
  t.same(stale?.details, { currentVersion: 1 }, '412 names the current version');

  const withCredential: Rule = { id: 'llm', hosts: ['api.example.com'], methods: ['post'], paths: ['/v1/*'], credential: 'llm' };
  const r2 = await client.addRule(withCredential, { ifMatch: 1 });
  t.equal(r2.version, 2);
  const llm = r2.rules.find((r) => r.id === 'llm')!;
  t.equal(llm.credential, 'llm', 'the rule names the declared credential');
  t.same(llm.methods, ['POST'], 'methods upper-cased');
  const wider = await rejects(t, client.addRule({ id: 'wider', hosts: ['evil.example.net'], credential: 'llm' }), 400, 'WS_ERR_VALIDATION');
  t.match(JSON.stringify(wider?.details), /may only be sent to api\.example\.com/, 'a rule cannot widen a credential\'s hosts');
  await rejects(t, client.addRule({ id: 'llm', hosts: ['other.example.com'] }), 409, 'WS_ERR_CONFLICT');
  await rejects(t, client.addRule({ id: 'env:static.example.com', hosts: ['x.example.com'] }), 400, 'WS_ERR_VALIDATION');

  const r3 = await client.deleteRule('pypi');
  t.same(r3.rules.map((r) => r.id), ['llm']);
  await rejects(t, client.deleteRule('pypi'), 404, 'WS_ERR_NOT_FOUND');
  await rejects(t, client.deleteRule('llm', { ifMatch: '"1"' }), 412, 'WS_ERR_PRECONDITION_FAILED');
  t.equal((await client.deleteRule('llm', { ifMatch: r3.etag })).version, 4);

  // The audit names the caller by token id, never the token.
  const audits = p.logs.lines().filter((l) => l.audit === 'rules');
  t.same(audits.map((l) => l.action), ['replace', 'add', 'delete', 'delete']);
  t.ok(audits.every((l) => l.who === 'backend'));
});

t.test('rules: an invalid set is refused whole, with every problem listed', async (t) => {
  const { client } = await setup(t, { tokens: [TOKEN] });
  const err = await rejects(t, client.putRules([
    { id: 'ok', hosts: ['fine.example.com'] },
    { id: 'bad', hosts: ['*.com', '10.0.0.1'], ports: [70000] },
    { id: 'ok', hosts: ['dup.example.com'] },
  ]), 400, 'WS_ERR_VALIDATION');
  const fields = (err?.details as { field: string }[]).map((d) => d.field);
  t.ok(fields.includes('[1].hosts[0]') && fields.includes('[1].hosts[1]') && fields.includes('[1].ports[0]') && fields.includes('[2].id'), `every problem: ${fields.join(', ')}`);
  t.equal((await client.getRules()).version, 0, 'nothing changed');
  await rejects(t, client.putRules([], { ifMatch: 'banana' }), 400, 'WS_ERR_BAD_REQUEST');
  await rejects(t, client.deleteRule('ok', { ifMatch: 'W/"x"' }), 400, 'WS_ERR_BAD_REQUEST');
  await rejects(t, client.addRule({ id: 'late', hosts: ['late.example.com'] }, { ifMatch: 7 }), 412, 'WS_ERR_PRECONDITION_FAILED');
  await rejects(t, client.putRules(Array.from({ length: 20_000 }, (_, i) => ({ id: `r${i}`, hosts: [`h${i}.a-rather-long-domain-name.example.com`] }))), 413, 'WS_ERR_PAYLOAD_TOO_LARGE');
});

t.test('rules: raw requests the client never sends (bad JSON, charset, wrapped body)', async (t) => {
  const { tap } = await setup(t, { tokens: [TOKEN] });
  const send = (method: string, body: string, type = 'application/json') => fetch(`${tap.url}/rules`, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': type }, body });
  const bad = await send('PUT', '{"rules": [');
  t.equal(bad.status, 400);
  t.equal(((await bad.json()) as { error: { code: string } }).error.code, 'WS_ERR_INVALID_JSON');
  for (const method of ['PUT', 'POST']) {
    const latin = await send(method, '[]', 'application/json; charset=latin1');
    t.equal(latin.status, 415, `${method} with a charset body-parser does not read`);
    t.equal(((await latin.json()) as { error: { code: string } }).error.code, 'WS_ERR_UNSUPPORTED_MEDIA_TYPE');
  }
  const wrapped = await send('PUT', JSON.stringify({ rules: [{ id: 'w', hosts: ['w.example.com'] }] }));
  t.equal(wrapped.status, 200, 'the { rules } form GET returns is accepted back');
  const notJson = await send('POST', 'id=x', 'application/x-www-form-urlencoded');
  t.equal(notJson.status, 400);
});

t.test('auth: 401 without or with a wrong token; 403 for writes without a token file', async (t) => {
  const { tap } = await setup(t, { tokens: [TOKEN] });
  const anon = new ProxyAdminClient({ baseUrl: tap.url! });
  await rejects(t, anon.getRules(), 401, 'WS_ERR_UNAUTHORIZED');
  const wrong = new ProxyAdminClient({ baseUrl: tap.url!, token: 'not-the-token-at-all' });
  await rejects(t, wrong.putRules([]), 401, 'WS_ERR_UNAUTHORIZED');
  await rejects(t, wrong.addRule({ id: 'x', hosts: ['x.example.com'] }), 401, 'WS_ERR_UNAUTHORIZED');
  await rejects(t, anon.deleteRule('x'), 401, 'WS_ERR_UNAUTHORIZED');
  t.same(await anon.health(), { status: 'ok' }, 'probes need no token');

  const open = await setup(t, {}, undefined);
  t.equal((await open.client.getRules()).version, 0, 'reads are open without a token file');
  await rejects(t, open.client.putRules([]), 403, 'WS_ERR_FORBIDDEN');
  await rejects(t, open.client.addRule({ id: 'x', hosts: ['x.example.com'] }), 403, 'WS_ERR_FORBIDDEN');
  await rejects(t, open.client.deleteRule('x'), 403, 'WS_ERR_FORBIDDEN');
});

t.test('updateRules retries a read-modify-write that lost a race (412)', async (t) => {
  const { client, p } = await setup(t, { tokens: [TOKEN] });
  let calls = 0;
  const result = await client.updateRules((rules) => {
    calls++;
    // A concurrent writer changes the set after our read, the first time only.
    if (calls === 1) void p.proxy.store.write((current) => [...current, { id: 'other', hosts: ['other.example.com'] }]);
    return [...rules, { id: 'mine', hosts: ['mine.example.com'] }];
  });
  t.equal(calls, 2, 'the change ran again on the fresh set');
  t.same(result.rules.map((r) => r.id).sort(), ['mine', 'other'], 'the concurrent change is kept');
  t.equal(result.version, 2);
});

t.test('503 when the rule set cannot be kept on the state volume: the change is not applied', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-client-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stateDir = join(dir, 'state');
  const store = new MemoryRulesStore('pod-openapi', { stateFile: new RuleStateFile(stateDir, 'pod-openapi') });
  const { client } = await setup(t, { tokens: [TOKEN], env: { RULES_SCOPE: 'pod-openapi' }, deps: { store } });
  t.equal((await client.putRules([{ id: 'a', hosts: ['a.example.com'] }])).version, 1);
  // The volume turns unusable (here: the directory is replaced by a file).
  rmSync(stateDir, { recursive: true });
  writeFileSync(stateDir, '');
  await rejects(t, client.putRules([]), 503, 'WS_ERR_UNAVAILABLE');
  const ready = await client.ready();
  t.equal(ready.store.stateFile, join(stateDir, 'rules.json'));
  t.same((await client.getRules()).rules.map((r) => r.id), ['a'], 'the acknowledged rules are still served');
});

t.test('an answer that is not the error envelope becomes WS_ERR_UNEXPECTED_RESPONSE', async (t) => {
  const foreign = createServer((_req, res) => {
    res.writeHead(502, { 'content-type': 'text/html' });
    res.end('<h1>Bad Gateway</h1>');
  });
  const { url } = await listenLocal(foreign);
  t.teardown(() => closeServer(foreign));
  await rejects(t, new ProxyAdminClient({ baseUrl: url }).getRules(), 502, UNEXPECTED_RESPONSE);
});

t.test('every answer recorded above validates against openapi/proxy-admin.yaml', async (t) => {
  const v = new SpecValidator(loadSpec(SPEC_FILES.proxyAdmin), 'proxy-admin');
  t.ok(exchanges.length > 30, `${exchanges.length} exchanges recorded`);
  for (const x of exchanges) t.same(v.validate(x), [], `${x.method} ${x.url.slice(0, 80)} → ${x.status}`);
  // Every operation was seen succeeding, and the error statuses hard to provoke are named.
  const seen = [...v.seen];
  for (const op of ['GET /healthz 200', 'GET /readyz 200', 'GET /readyz 503', 'GET /metrics 200', 'GET /rules 200', 'PUT /rules 200', 'POST /rules 201', 'DELETE /rules/{id} 200']) {
    t.ok(seen.includes(op), `exercised: ${op}`);
  }
  const hard = new Set(['500', '503', '413']);
  const left = v.unexercised().filter((k) => !hard.has(k.split(' ')[2]!));
  t.same(left, [], 'every documented 4xx was produced by a real server');
  t.comment(`not exercised: ${v.unexercised().join('; ')}`);
});
