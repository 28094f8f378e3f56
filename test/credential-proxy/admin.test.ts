// The admin listener: /rules with mandatory bearer auth, optimistic concurrency, audit, declared credentials.
import t from 'tap';
import type { Interceptor } from '../../credential-proxy/interception.ts';
import { rawExchange, startProxy, statusOf } from './fixtures/proxy-harness.ts';

const TOKEN = 'rules-token-8c1f2a9e77d04b6b';
const OTHER = 'other-token-5d2e0c4f1a3b9e8d';
const LLM = { llm: { hosts: ['llm.test'], type: 'header', header: 'x-api-key', value: { env: 'LLM_KEY' } } };
const BEDROCK = { bedrock: { hosts: ['llm.test'], type: 'aws-sigv4', service: 'bedrock', region: 'us-east-1' } };

const json = (body: unknown) => ({ 'content-type': 'application/json', body: JSON.stringify(body) });
function call(base: string, method: string, path: string, options: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    const j = json(options.body);
    headers['content-type'] = j['content-type'];
    body = j.body;
  }
  return fetch(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
}

t.test('/rules: auth is mandatory, constant-time token check, 401 otherwise', async (t) => {
  const p = await startProxy(t, { tokens: [`backend:${TOKEN}`, OTHER] });
  for (const [name, headers] of [
    ['no token', {}],
    ['wrong token', { authorization: 'Bearer wrong-token-value' }],
    ['token as Basic', { authorization: `Basic ${TOKEN}` }],
    ['token prefix', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
  ] as const) {
    for (const method of ['GET', 'PUT', 'POST']) {
      const res = await fetch(`${p.adminUrl}/rules`, { method, headers: { ...headers, 'content-type': 'application/json' }, ...(method === 'GET' ? {} : { body: '[]' }) });
      t.equal(res.status, 401, `${name} ${method}`);
      t.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
    }
  }
  const del = await fetch(`${p.adminUrl}/rules/x`, { method: 'DELETE' });
  t.equal(del.status, 401);
  t.equal((await call(p.adminUrl, 'GET', '/rules', { token: TOKEN })).status, 200);
  t.equal((await call(p.adminUrl, 'GET', '/rules', { token: OTHER })).status, 200, 'a bare token works too');
  t.notMatch(p.logs.text(), new RegExp(`${TOKEN}|${OTHER}`), 'tokens never logged');
  t.equal((await fetch(`${p.adminUrl}/healthz`)).status, 200, 'health needs no token');
});

t.test('/rules without a token file: reads open, writes disabled unless the dev flag is set', async (t) => {
  const p = await startProxy(t);
  t.equal((await call(p.adminUrl, 'GET', '/rules')).status, 200);
  const put = await call(p.adminUrl, 'PUT', '/rules', { body: [] });
  t.equal(put.status, 403);
  t.match(((await put.json()) as { error: { message: string } }).error.message, /no RULES_TOKEN_FILE/);
  const dev = await startProxy(t, { env: { RULES_ALLOW_UNAUTHENTICATED: 'true' } });
  t.equal((await call(dev.adminUrl, 'PUT', '/rules', { body: [] })).status, 200);
});

t.test('/rules: PUT/POST/DELETE, ETag + If-Match (412), validation, audit, immediate effect', async (t) => {
  const p = await startProxy(t, { tokens: [`backend:${TOKEN}`], env: { ALLOWED_DOMAINS: 'static.test' }, credentials: LLM });
  const base = p.adminUrl;
  const get0 = await call(base, 'GET', '/rules', { token: TOKEN });
  t.equal(get0.headers.get('etag'), '"0"');
  const view0 = await get0.json() as { version: number; static: { env: { id: string }[] } };
  t.equal(view0.version, 0);
  t.same(view0.static.env.map((r) => r.id), ['env:static.test']);

  // Before: not allowed.
  const denied = await rawExchange(p.port, 'CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n');
  t.equal(statusOf(denied), 403);

  const put = await call(base, 'PUT', '/rules', { token: TOKEN, headers: { 'if-match': '"0"' }, body: { rules: [{ id: 'api', hosts: ['api.test'] }] } });
  t.equal(put.status, 200);
  t.equal(put.headers.get('etag'), '"1"');
  t.equal((await put.json() as { version: number }).version, 1);

  const stale = await call(base, 'PUT', '/rules', { token: TOKEN, headers: { 'if-match': '"0"' }, body: [] });
  t.equal(stale.status, 412, 'stale If-Match');
  t.equal((await stale.json() as { error: { code: string } }).error.code, 'WS_ERR_PRECONDITION_FAILED');
  t.equal((await call(base, 'PUT', '/rules', { token: TOKEN, headers: { 'if-match': 'banana' }, body: [] })).status, 400);

  const post = await call(base, 'POST', '/rules', { token: TOKEN, headers: { 'if-match': '1' }, body: { id: 'llm', hosts: ['llm.test'], credential: 'llm' } });
  t.equal(post.status, 201);
  const posted = await post.json() as { version: number; rules: { id: string; credential?: string }[] };
  t.equal(posted.version, 2);
  t.equal(posted.rules.find((r) => r.id === 'llm')!.credential, 'llm', 'the rule names the declared credential');

  t.equal((await call(base, 'POST', '/rules', { token: TOKEN, body: { id: 'api', hosts: ['x.test'] } })).status, 409, 'duplicate id');
  t.equal((await call(base, 'POST', '/rules', { token: TOKEN, body: { id: 'env:static.test', hosts: ['x.test'] } })).status, 400, 'static ids are reserved');
  const invalid = await call(base, 'PUT', '/rules', { token: TOKEN, body: [{ id: 'a', hosts: ['login.*.test'] }, { id: 'b', hosts: ['127.0.0.1'], ports: [70000] }] });
  t.equal(invalid.status, 400);
  const err = await invalid.json() as { error: { code: string; details: { field: string }[] } };
  t.equal(err.error.code, 'WS_ERR_VALIDATION');
  t.same(err.error.details.map((d) => d.field).sort(), ['[0].hosts[0]', '[1].hosts[0]', '[1].ports[0]'], 'every problem listed, the set rejected as a whole');
  t.equal((await call(base, 'PUT', '/rules', { token: TOKEN, body: { nope: 1 } })).status, 400);
  const badOne = await call(base, 'POST', '/rules', { token: TOKEN, body: { id: 'c', hosts: ['login.*.test'], ports: [0] } });
  t.equal(badOne.status, 400);
  const badOneBody = await badOne.json() as { error: { details: { field: string }[] } };
  t.same(badOneBody.error.details.map((d) => d.field).sort(), ['hosts[0]', 'ports[0]'], 'POST names the fields of the one rule it was given');
  const wrongMethod = await call(base, 'PATCH', '/rules', { token: TOKEN, body: {} });
  t.equal(wrongMethod.status, 405);
  t.equal(wrongMethod.headers.get('allow'), 'GET, HEAD, PUT, POST');

  // After: allowed immediately (decision only; the name resolves to loopback, so the guard refuses the dial).
  const after = await rawExchange(p.port, 'CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n');
  t.match(after, /non-public address/, 'the new rule is in force');

  t.equal((await call(base, 'DELETE', '/rules/api', { token: TOKEN, headers: { 'if-match': '"1"' } })).status, 412);
  const del = await call(base, 'DELETE', '/rules/api', { token: TOKEN, headers: { 'if-match': '"2"' } });
  t.equal(del.status, 200);
  t.equal(del.headers.get('etag'), '"3"');
  t.equal((await call(base, 'DELETE', '/rules/api', { token: TOKEN })).status, 404);
  t.equal((await call(base, 'PATCH', '/rules', { token: TOKEN, body: [] })).status, 405);
  t.equal(statusOf(await rawExchange(p.port, 'CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n')), 403, 'deleted rule no longer allows');

  const audits = p.logs.find('rules changed');
  t.same(audits.map((a) => [a.action, a.who, a.added, a.removed, a.version]), [
    ['replace', 'backend', ['api'], [], 1],
    ['add', 'backend', ['llm'], [], 2],
    ['delete', 'backend', [], ['api'], 3],
  ]);
  t.notMatch(p.logs.text(), new RegExp(TOKEN), 'no token in any log line');

  const metrics = await (await fetch(`${base}/metrics`)).text();
  t.match(metrics, /rules_version\{program="credential-proxy"\} 3/);
});

t.test('/readyz: ready after rules load; with an interceptor, only once its CA is written', async (t) => {
  let release: () => void = () => {};
  const handed: { host: string; port: number; address: string; rule: string; head: number }[] = [];
  const interceptor: Interceptor = {
    ready: new Promise<void>((r) => { release = r; }),
    handleConnect(socket, head, target) {
      handed.push({ host: target.host, port: target.port, address: target.address, rule: target.rule.id, head: head.length });
      socket.end('HTTP/1.1 200 Connection Established\r\n\r\nintercepted');
    },
    close: async () => {},
  };
  const p = await startProxy(t, {
    rules: [{ id: 'creds', hosts: ['llm.test'], allowPrivate: true, methods: ['POST'], credential: 'bedrock' }],
    credentials: BEDROCK,
    deps: { interceptor },
  });
  const pending = await fetch(`${p.adminUrl}/readyz`);
  t.equal(pending.status, 503);
  t.match(await pending.json(), { status: 'not ready', interceptor: 'pending' });
  release();
  const ready = await fetch(`${p.adminUrl}/readyz`);
  t.equal(ready.status, 200);
  t.match(await ready.json(), { status: 'ready', interceptor: 'ready', rules: { loaded: true }, store: { kind: 'memory', up: true } });

  // The handoff: nothing written by the proxy, the checked address and the rule passed on.
  const raw = await rawExchange(p.port, 'CONNECT LLM.test.:443 HTTP/1.1\r\nHost: llm.test:443\r\n\r\nclient-hello');
  t.equal(raw, 'HTTP/1.1 200 Connection Established\r\n\r\nintercepted', 'only the interceptor wrote to the socket');
  t.equal(handed.length, 1);
  t.match(handed[0], { host: 'llm.test', port: 443, address: '127.0.0.1', rule: 'creds', head: 'client-hello'.length }, 'bytes sent after CONNECT are handed over as head');

  // Without an interceptor, a credential rule is refused with a clear reason.
  const q = await startProxy(t, { rules: [{ id: 'creds', hosts: ['llm.test'], allowPrivate: true, credential: 'bedrock' }], credentials: BEDROCK });
  const refused = await rawExchange(q.port, 'CONNECT llm.test:443 HTTP/1.1\r\nHost: llm.test:443\r\n\r\n');
  t.equal(statusOf(refused), 403);
  t.match(refused, /credential injection is not enabled/);
});
