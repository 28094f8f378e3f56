// Attacks on the proxy's runtime (a hostile workspace, round 2), each tried as the workspace would
// try it against a real proxy, named after the attack. Each failed before the fix: the zone ids
// ended the process, the admin port read bodies before the token check, TRACE carried the injected
// credential back, allowPrivate opened the metadata addresses, an unreachable Redis at start-up
// went unreported, and malformed long hosts were answered as policy refusals.
import t from 'tap';
import { freePort } from '../helpers/listen.ts';
import { HEADER_DENY_REASON } from '../../lib/constants.ts';
import { createLogger } from '../../lib/log.ts';
import { UNEXPECTED_ERROR_CODE, UNEXPECTED_ERROR_MSG, UNEXPECTED_ERRORS_METRIC } from '../../lib/guard.ts';
import { metadataEndpoint } from '../../credential-proxy/address.ts';
import type { Interceptor } from '../../credential-proxy/interception.ts';
import { resolveChecked, ResolveError } from '../../credential-proxy/resolve.ts';
import { RuleSetVerifier } from '../../credential-proxy/rule-set-signature.ts';
import { validateRules } from '../../credential-proxy/rules.ts';
import { RedisRulesStore } from '../../credential-proxy/rules-store-redis.ts';
import { generatePodTokenKeys } from '../../lib/pod-token.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { sendRaw, stillServing } from '../helpers/fuzz.ts';
import { fetchVia, proxyAgent, startHarness } from './fixtures/intercept-harness.ts';
import { headerOf, openTunnel, rawExchange, startProxy, startUpstreams, statusOf, testResolver } from './fixtures/proxy-harness.ts';

const TOKEN = 'runtime-attacks-token-0123456789';
const SECRET = 'sk-live-reflected-9f8e7d6c5b4a';
const connectTo = (authority: string) => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;

t.test('CONNECT [fe80::1%25eth0]:443, CONNECT [::1%lo]:443 and Host: [fe80::1%eth0] get 400 with a reason; the proxy keeps serving', async (t) => {
  const up = await startUpstreams(t);
  const p = await startProxy(t, { tokens: [`backend:${TOKEN}`], rules: [{ id: 'plain', hosts: ['upstream.test'], ports: [up.httpPort], allowPrivate: true }] });
  for (const authority of ['[fe80::1%25eth0]:443', '[::1%lo]:443', '[fe80::1%eth0]:443', '[::1%25]:443', '[fe80::1%]:443']) {
    const raw = await rawExchange(p.port, connectTo(authority));
    t.equal(statusOf(raw), 400, `CONNECT ${authority}`);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /zone identifiers/, `${authority}: reason`);
  }
  for (const host of ['[fe80::1%eth0]', '[fe80::1%25eth0]', `[::1%lo]:${up.httpPort}`]) {
    const raw = await rawExchange(p.port, `GET http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    t.equal(statusOf(raw), 400, `Host: ${host}`);
  }
  const url = await rawExchange(p.port, 'GET http://[fe80::1%25eth0]/ HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n');
  t.equal(statusOf(url), 400, 'absolute-form URL with a zone id');
  const put = await fetch(`${p.adminUrl}/rules`, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify([{ id: 'z', hosts: ['[fe80::1%eth0]'] }]) });
  t.equal(put.status, 400, 'PUT /rules with a zone id host');
  t.ok(await stillServing({ port: p.adminPort }), 'admin still serving');
  const ok = await rawExchange(p.port, `GET http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: upstream.test:${up.httpPort}\r\nConnection: close\r\n\r\n`);
  t.equal(statusOf(ok), 200, 'proxy still forwarding');
});

t.test('Host: [fe80::1%eth0] inside an intercepted tunnel is refused with a 4xx, not a 500', async (t) => {
  const h = await startHarness(t, { env: { API_SECRET: SECRET }, rule: { id: 'api', credentials: { type: 'header', name: 'authorization', value: { env: 'API_SECRET' } } } });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  for (const host of ['[fe80::1%eth0]', '[::1%lo]:443', '[fe80::1%25eth0]']) {
    const r = await fetchVia(agent, h.url('/v1/x'), { headers: { host } });
    t.equal(r.status, 421, `Host: ${host}`);
  }
  t.equal(h.upstream.seen.length, 0, 'nothing reached the upstream');
});

t.test('a bug in a connection handler is logged with a code, counted, answered 500, and the proxy keeps serving', async (t) => {
  // The interceptor seam stands in for any code path that throws unexpectedly.
  const broken: Interceptor = {
    ready: Promise.resolve(),
    close: async () => {},
    handleConnect: () => { throw new TypeError('Invalid URL'); },
  };
  const up = await startUpstreams(t);
  const p = await startProxy(t, {
    rules: [{ id: 'cred', hosts: ['cred.test'], ports: [443], allowPrivate: true, credential: 'cred' },
      { id: 'plain', hosts: ['upstream.test'], ports: [up.httpPort], allowPrivate: true }],
    credentials: { cred: { hosts: ['cred.test'], type: 'header', header: 'x-api-key', value: { env: 'API_SECRET' } } },
    deps: { interceptor: broken },
  });
  for (let i = 0; i < 3; i++) {
    const raw = await rawExchange(p.port, connectTo('cred.test:443'));
    t.equal(statusOf(raw), 500, `attempt ${i}: answered 500`);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /WS_ERR_INTERNAL/);
  }
  const line = await p.logs.waitFor(UNEXPECTED_ERROR_MSG);
  t.match(line, { code: UNEXPECTED_ERROR_CODE, where: 'proxy.connect', level: 'error', err: { message: 'Invalid URL' } });
  const metrics = await (await fetch(`${p.adminUrl}/metrics`)).text();
  t.match(metrics, new RegExp(`${UNEXPECTED_ERRORS_METRIC}\\{where="proxy.connect"[^}]*\\} 3`));
  const { socket } = await openTunnel(p.port, `upstream.test:${up.httpPort}`);
  socket.destroy();
  t.pass('an allowed tunnel still opens');
});

t.test('no token → 401 from the admin port before any body is read (1 MiB announced, none sent)', async (t) => {
  const p = await startProxy(t, { tokens: [`backend:${TOKEN}`] });
  const admin = { port: p.adminPort };
  for (const [name, auth] of [['no token', ''], ['wrong token', 'Authorization: Bearer not-the-token\r\n']] as const) {
    for (const method of ['PUT', 'POST']) {
      const head = `${method} /rules HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n${auth}\r\n`;
      const reply = await sendRaw(admin, head, { timeoutMs: 3000 });
      t.equal(reply.status, 401, `${name} ${method}: 401 while the body is still unsent`);
      t.match(reply.raw, /www-authenticate: Bearer/i);
    }
  }
  const del = await sendRaw(admin, 'DELETE /rules/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n', { timeoutMs: 3000 });
  t.equal(del.status, 401, 'DELETE with a body');
  // Expect: 100-continue without a token: the 401 comes instead of 100 Continue.
  const expect = await sendRaw(admin, 'PUT /rules HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n', { timeoutMs: 3000 });
  t.equal(expect.status, 401);
  t.notMatch(expect.raw, /100 Continue/, 'never invited to send the body');
  // With the token, Expect: 100-continue gets its 100 and the body is read.
  const body = JSON.stringify([{ id: 'ok', hosts: ['ok.test'] }]);
  const authed = await sendRaw(admin, `PUT /rules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n${body}`, { timeoutMs: 3000 });
  t.match(authed.raw, /^HTTP\/1\.1 100 Continue/);
  t.match(authed.raw, /HTTP\/1\.1 200 OK/);
});

t.test('TRACE and TRACK are refused inside intercepted tunnels and over plain HTTP; reflected credentials are stripped from response headers', async (t) => {
  // An upstream that reflects the request's headers into its response headers, as a debug
  // endpoint or a TRACE handler would.
  const h = await startHarness(t, {
    env: { API_SECRET: SECRET },
    rule: { id: 'api', credentials: { type: 'header', name: 'authorization', value: { env: 'API_SECRET' }, format: 'Bearer {value}' } },
    handler: (req, res, seen) => {
      res.writeHead(200, { 'x-echo-authorization': String(req.headers.authorization), 'x-echo-token': SECRET, 'x-plain': 'kept', 'content-type': 'message/http' });
      res.end(`${seen.method} ${seen.url}\n`);
    },
  });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const trace = await fetchVia(agent, h.url('/'), { method: 'TRACE' });
  t.equal(trace.status, 405, 'TRACE inside the tunnel');
  t.match(String(trace.headers[HEADER_DENY_REASON.toLowerCase()]), /TRACE is never forwarded/);
  t.notMatch(trace.body, SECRET);
  // Node's parser knows no TRACK: it ends at the parser with a 400 (the client upper-cases `trace`).
  for (const method of ['TRACK', 'trace']) {
    const r = await fetchVia(agent, h.url('/'), { method }).catch(() => ({ status: 0, body: '' }));
    t.ok([0, 400, 405].includes(r.status), `${method} inside the tunnel: refused (${r.status})`);
    t.notMatch(r.body, SECRET);
  }
  t.equal(h.upstream.seen.length, 0, 'TRACE/TRACK never reached the upstream');
  const r = await fetchVia(agent, h.url('/debug'));
  t.equal(r.status, 200);
  t.equal(r.headers['x-echo-authorization'], undefined, 'reflected Authorization dropped');
  t.equal(r.headers['x-echo-token'], undefined, 'reflected raw secret dropped');
  t.equal(r.headers['x-plain'], 'kept');
  t.match(h.logs.find('dropped response headers that reflected an injected credential')[0], { headers: ['x-echo-authorization', 'x-echo-token'] });
  t.notMatch(h.logs.text(), SECRET, 'the secret is not in the logs either');

  const up = await startUpstreams(t);
  const p = await startProxy(t, { rules: [{ id: 'plain', hosts: ['upstream.test'], ports: [up.httpPort], allowPrivate: true }] });
  const raw = await rawExchange(p.port, `TRACE http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: upstream.test:${up.httpPort}\r\n\r\n`);
  t.equal(statusOf(raw), 403, 'TRACE over plain HTTP');
  t.match(headerOf(raw, HEADER_DENY_REASON)!, /TRACE is never forwarded/);
  for (const method of ['TRACK', 'trace']) {
    const refused = await rawExchange(p.port, `${method} http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: upstream.test:${up.httpPort}\r\n\r\n`);
    t.equal(statusOf(refused), 400, `${method} over plain HTTP: refused by the parser`);
  }
  t.equal(up.seen.length, 0);
});

t.test('metadata and Pod Identity addresses in every form stay refused with allowPrivate', async (t) => {
  const forms = [
    '169.254.169.254', '169.254.170.23', '169.254.170.2', 'fd00:ec2::23', 'fd00:ec2::254', 'FD00:EC2:0:0:0:0:0:23', 'fd00:ec2::1',
    '::ffff:169.254.169.254', '::ffff:a9fe:a9fe', '::ffff:169.254.170.23', '::169.254.169.254', '::ffff:0:169.254.169.254',
    '64:ff9b::169.254.169.254', '64:ff9b::a9fe:aa17', '64:ff9b:1:a9fe:a9:fe00::', '2002:a9fe:a9fe::1', '2001:0:4136:e378:8000:63bf:5601:5601',
  ];
  const own = { ports: new Set<number>(), localAddresses: new Set<string>() };
  const refusedByPolicy: string[] = [];
  for (const address of forms) {
    t.ok(metadataEndpoint(address), `${address} is a metadata endpoint`);
    const family = address.includes(':') ? 6 as const : 4 as const;
    const result = await resolveChecked('meta.test', { resolver: async () => [{ address, family }], allowPrivate: true, own, port: 80 })
      .then(() => undefined, (err: unknown) => err);
    t.ok(result instanceof ResolveError && result.failure === 'metadata', `${address}: refused even with allowPrivate`);
    if (result instanceof ResolveError) refusedByPolicy.push(address);
  }
  for (const address of ['169.254.169.253', '10.0.0.1', '::ffff:10.0.0.1', 'fd00:ec3::23', '2606:4700::1111']) t.equal(metadataEndpoint(address), undefined, `${address} is not`);

  // Through the live proxy, only once the check above holds: this test never dials a metadata address.
  if (refusedByPolicy.length !== forms.length) return;
  const names = forms.map((_, i) => `m${i}.meta.test`);
  const resolver = testResolver(Object.fromEntries(forms.map((a, i) => [names[i]!, [a]])));
  const p = await startProxy(t, { rules: [{ id: 'private', hosts: ['*.meta.test'], ports: [80, 443], allowPrivate: true }], deps: { resolver } });
  for (const [i, address] of forms.entries()) {
    const raw = await rawExchange(p.port, connectTo(`${names[i]}:443`));
    t.equal(statusOf(raw), 403, `CONNECT to a name resolving to ${address}`);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /never connects to/);
  }
  const viaHttp = await rawExchange(p.port, 'GET http://m0.meta.test/latest/meta-data/ HTTP/1.1\r\nHost: m0.meta.test\r\n\r\n');
  t.equal(statusOf(viaHttp), 403, 'plain HTTP too');
});

t.test('an unreachable Redis at start-up is logged and counted', async (t) => {
  const port = await freePort(); // nothing listens there
  const logs = captureLogs();
  const keys = t.testdir({ 'public.pem': generatePodTokenKeys().publicKeyPem });
  const store = new RedisRulesStore({
    url: `redis://127.0.0.1:${port}`, scope: 'pod-uid-unreachable', prefix: `test:${process.pid}`, logger: createLogger({ name: 'store', destination: logs.destination }), startTimeoutMs: 300,
    verifier: new RuleSetVerifier(`${keys}/public.pem`), validate: (rules, source) => validateRules(rules, source),
  });
  const p = await startProxy(t, { env: { REDIS_URL: `redis://127.0.0.1:${port}`, RULES_SCOPE: 'pod-uid-unreachable', ALLOWED_DOMAINS: 'static.test', POD_TOKEN_PUBLIC_KEYS_FILE: `${keys}/public.pem` }, deps: { store } });
  const line = await p.logs.waitFor('rules store unreachable at start-up; serving the environment and file rules, retrying in the background');
  t.match(line, { level: 'error', store: 'redis' });
  const metrics = await (await fetch(`${p.adminUrl}/metrics`)).text();
  t.match(metrics, /rules_store_unreachable_total\{phase="start"[^}]*\} 1/);
  t.match(metrics, /rules_store_up\{[^}]*\} 0/);
  t.ok(await stillServing({ port: p.adminPort }), 'serving without Redis');
});

t.test('very long or malformed hosts answer 400 (a malformed request), not 403 or 500', async (t) => {
  const p = await startProxy(t, { env: { ALLOWED_DOMAINS: '*.ws.test', RULES_ALLOW_UNAUTHENTICATED: 'true' } });
  const long = 'a'.repeat(300);
  const label = `${'b'.repeat(64)}.ws.test`;
  for (const host of [long, label, `${'c'.repeat(5000)}.ws.test`, `${'d.'.repeat(130)}ws.test`]) {
    const raw = await rawExchange(p.port, connectTo(`${host}:443`));
    t.equal(statusOf(raw), 400, `CONNECT to a ${host.length}-character host`);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /invalid host: host (name|label) too long/);
    t.ok(headerOf(raw, HEADER_DENY_REASON)!.length <= 512, 'the reason is bounded');
    const get = await rawExchange(p.port, `GET http://${host}/ HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    t.equal(statusOf(get), 400, `GET with a ${host.length}-character host`);
  }
  const put = await fetch(`${p.adminUrl}/rules`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify([{ id: 'x'.repeat(5000), hosts: [`${long}.com`] }]) });
  t.equal(put.status, 400, 'PUT /rules with a long id and host');
  const del = await fetch(`${p.adminUrl}/rules/${'x'.repeat(10_000)}`, { method: 'DELETE' });
  t.equal(del.status, 404, 'DELETE of a long id: not found');
});
