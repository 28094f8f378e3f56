// The interceptor driven through its seam (handleConnect) by a minimal CONNECT front, with real TLS
// on both sides and real clients (Node, curl, python3).
import t from 'tap';
import { connect as tlsConnect } from 'node:tls';
import { connect as netConnect, type Socket } from 'node:net';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Duplex } from 'node:stream';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { writeSecretVolume } from '../helpers/secret-volume.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { API_HOST, fetchVia, proxyAgent, PYTHON_GET, run, startHarness, type Harness } from './fixtures/intercept-harness.ts';
import type { InterceptRule } from '../../credential-proxy/interception.ts';
import { HEADER_DENY_REASON } from '../../lib/constants.ts';

const SECRET = 'sk-live-7f3c9a1e5b2d4c6e8f0a';
const headerRule = (value: InterceptRule['credentials'] extends infer C ? C : never, extra: Partial<InterceptRule> = {}): InterceptRule => ({ id: 'api', credentials: value, ...extra });
const bearer = headerRule({ type: 'header', name: 'authorization', value: { env: 'API_SECRET' }, format: 'Bearer {value}' });
const SECRET_ENV = { API_SECRET: SECRET };

function echoed(body: string): { method: string; url: string; headers: Record<string, string | string[]>; body: string } {
  return JSON.parse(body);
}

/** CONNECT through the front and return the raw tunnel socket (after the 200). */
async function openTunnel(h: Harness, host = API_HOST): Promise<Socket> {
  const req = httpRequest({ host: '127.0.0.1', port: h.front.port, method: 'CONNECT', path: `${host}:${h.upstream.port}` });
  req.end();
  const [res, socket] = (await once(req, 'connect')) as [{ statusCode: number }, Socket];
  if (res.statusCode !== 200) throw new Error(`CONNECT answered ${res.statusCode}`);
  return socket;
}

t.test('header credential: the real value replaces whatever the workspace sent; keep-alive tunnel', async (t) => {
  const h = await startHarness(t, { env: SECRET_ENV, rule: bearer });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 3; i++) {
    const r = await fetchVia(agent, h.url(`/v1/items?i=${i}`), {
      method: 'POST', body: `{"n":${i}}`,
      headers: { authorization: 'Bearer dummy-from-workspace', 'proxy-authorization': 'Basic eDp5', 'x-other': 'kept', 'content-type': 'application/json' },
    });
    t.equal(r.status, 200);
    const seen = echoed(r.body);
    t.equal(seen.headers.authorization, `Bearer ${SECRET}`, 'real credential injected');
    t.equal(seen.headers['proxy-authorization'], undefined, 'Proxy-* removed');
    t.equal(seen.headers['x-other'], 'kept');
    t.equal(seen.headers.host, `${API_HOST}:${h.upstream.port}`);
    t.equal(seen.body, `{"n":${i}}`);
    t.equal(seen.url, `/v1/items?i=${i}`);
  }
  t.equal(h.upstream.seen.length, 3);
  t.equal(new Set(h.upstream.seen.map((s) => s.servername)).size, 1);
  t.equal(h.upstream.seen[0]!.servername, API_HOST, 'upstream TLS used the host as SNI');
  const audit = h.logs.find('CANONICAL-PROXY-DECISION');
  t.equal(audit.length, 3, 'one canonical line per intercepted request');
  t.match(audit[0], { kind: 'intercepted', decision: 'intercept', rule: 'api', host: API_HOST, port: h.upstream.port, method: 'POST', path: '/v1/items', address: '127.0.0.1', status: 200, pod: 'pod-test' });
  t.notMatch(JSON.stringify(audit), /i=0/, 'no query string in the audit line');
  t.notOk(h.logs.text().includes(SECRET), 'the secret is in no log line');
  t.notOk(h.logs.text().includes('dummy-from-workspace'), 'nor the client credential');
});

t.test('an api-key style header named by the rule is replaced, Authorization dropped', async (t) => {
  const h = await startHarness(t, { rule: headerRule({ type: 'header', name: 'x-api-key', value: { env: 'API_KEY' } }), env: { API_KEY: SECRET } });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const r = await fetchVia(agent, h.url('/v1/messages'), { headers: { 'X-Api-Key': 'dummy', authorization: 'Bearer dummy' } });
  const seen = echoed(r.body);
  t.equal(seen.headers['x-api-key'], SECRET);
  t.equal(seen.headers.authorization, undefined, "the client's Authorization never reaches the upstream");
  t.same(h.upstream.seen[0]!.rawHeaders.filter((_, i, a) => i % 2 === 0 && a[i]!.toLowerCase() === 'x-api-key').length, 1, 'exactly one x-api-key');
});

t.test('curl and python3 through the proxy, trusting only the written CA bundle', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-cred-'));
  writeSecretVolume(dir, { token: `${SECRET}\n` });
  const h = await startHarness(t, { rule: headerRule({ type: 'header', name: 'authorization', value: { file: join(dir, 'token') }, format: 'Bearer {value}' }) });
  const curl = await run('curl', ['-sS', '--fail-with-body', '--proxy', h.front.url, '--cacert', h.bundleFile,
    '-H', 'Authorization: Bearer dummy-from-curl', h.url('/curl')]);
  t.equal(curl.code, 0, curl.stderr);
  t.equal(echoed(curl.stdout).headers.authorization, `Bearer ${SECRET}`);

  const py = await run('python3', ['-c', PYTHON_GET, h.url('/python'), h.front.url, h.bundleFile]);
  t.equal(py.code, 0, py.stderr);
  const [status, ...rest] = py.stdout.split('\n');
  t.equal(status, '200');
  const seen = echoed(rest.join('\n'));
  t.equal(seen.headers.authorization, `Bearer ${SECRET}`, 'python: real credential');
  t.equal(seen.headers['x-api-key'], 'dummy-key', 'headers the rule does not name pass');

  // Rotation: the kubelet swaps the Secret's ..data link; the next request carries the new value.
  writeSecretVolume(dir, { token: 'sk-rotated-0000111122223333' });
  const after = await run('curl', ['-sS', '--proxy', h.front.url, '--cacert', h.bundleFile, h.url('/after')]);
  t.equal(echoed(after.stdout).headers.authorization, 'Bearer sk-rotated-0000111122223333', 'rotated file picked up');
  t.notOk(h.logs.text().includes('sk-rotated-0000111122223333'));
  t.notOk(h.logs.text().includes(SECRET));
});

t.test('Host must be the CONNECT target (421), SNI must be the CONNECT host', async (t) => {
  const h = await startHarness(t, { env: SECRET_ENV, rule: bearer });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const other = await fetchVia(agent, h.url('/x'), { headers: { host: `other.example.test:${h.upstream.port}` } });
  t.equal(other.status, 421);
  t.match(other.headers['x-workspace-sandbox-deny-reason'], /not the tunnel's host/);
  const noPort = await fetchVia(agent, h.url('/x'), { headers: { host: API_HOST } });
  t.equal(noPort.status, 421, 'a different port is a different origin');
  const sameHost = await fetchVia(agent, h.url('/x'), { headers: { host: `API.Example.Test.:${h.upstream.port}` } });
  t.equal(sameHost.status, 200, 'case and a trailing dot do not matter');
  t.equal(h.upstream.seen.length, 1, 'refused requests never reached the upstream');
  t.ok(h.logs.find('CANONICAL-PROXY-DECISION').some((l) => l.status === 421 && l.decision === 'deny'), 'the refusal is logged');

  const socket = await openTunnel(h);
  const tls = tlsConnect({ socket, servername: 'evil.example.test', ca: h.caPem, checkServerIdentity: () => undefined });
  const [err] = (await once(tls, 'error').catch((e: unknown) => [e])) as [Error];
  t.ok(err, `SNI mismatch: handshake refused (${err?.message})`);
  t.ok(h.logs.lines().some((l) => l.msg === 'intercept refused: TLS SNI does not match the CONNECT host'));

  // No SNI at all (clients connecting by address): the CONNECT host's leaf is served.
  const socket2 = await openTunnel(h);
  const tls2 = tlsConnect({ socket: socket2, ca: h.caPem, checkServerIdentity: () => undefined });
  await once(tls2, 'secureConnect');
  const x = tls2.getPeerX509Certificate()!;
  t.equal(x.subjectAltName, `DNS:${API_HOST}`);
  tls2.destroy();
});

t.test('the leaf served in the tunnel chains to the pod CA, names the host, carries an AKI; ALPN is http/1.1 only', async (t) => {
  const h = await startHarness(t, { env: SECRET_ENV, rule: bearer });
  const socket = await openTunnel(h);
  const tls = tlsConnect({ socket, servername: API_HOST, ca: h.caPem, ALPNProtocols: ['h2', 'http/1.1'] });
  await once(tls, 'secureConnect');
  t.ok(tls.authorized, 'verified against the pod CA');
  t.equal(tls.alpnProtocol, 'http/1.1');
  const leaf = tls.getPeerX509Certificate()!;
  const ca = new X509Certificate(h.caPem);
  t.ok(leaf.checkIssued(ca));
  t.ok(leaf.verify(ca.publicKey));
  t.equal(leaf.subjectAltName, `DNS:${API_HOST}`);
  t.ok(leaf.toLegacyObject().ext_key_usage?.includes('1.3.6.1.5.5.7.3.1'), 'serverAuth');
  tls.destroy();

  const socket2 = await openTunnel(h);
  const h2only = tlsConnect({ socket: socket2, servername: API_HOST, ca: h.caPem, ALPNProtocols: ['h2'] });
  const [err] = (await once(h2only, 'error').catch((e: unknown) => [e])) as [Error];
  t.match(err?.message, /no application protocol/i, 'an h2-only client is refused');
});

t.test('a ClientHello sent with the CONNECT (no wait for the 200) still works', async (t) => {
  const h = await startHarness(t, { env: SECRET_ENV, rule: bearer });
  const raw = netConnect(h.front.port, '127.0.0.1');
  await once(raw, 'connect');
  // A duplex that prepends the CONNECT to the first TLS write and strips the 200 from the reply.
  let first = true;
  let pending = Buffer.alloc(0);
  let headDone = false;
  const bridge: Duplex = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      if (first) {
        first = false;
        raw.write(Buffer.concat([Buffer.from(`CONNECT ${API_HOST}:${h.upstream.port} HTTP/1.1\r\nHost: ${API_HOST}:${h.upstream.port}\r\n\r\n`), chunk]), cb);
      } else raw.write(chunk, cb);
    },
    read() {},
    final(cb) { raw.end(); cb(); },
  });
  raw.on('data', (d: Buffer) => {
    if (headDone) return void bridge.push(d);
    pending = Buffer.concat([pending, d]);
    const end = pending.indexOf('\r\n\r\n');
    if (end < 0) return;
    headDone = true;
    t.match(pending.subarray(0, end).toString(), /^HTTP\/1.1 200/);
    if (pending.length > end + 4) bridge.push(pending.subarray(end + 4));
  });
  raw.on('close', () => bridge.push(null));
  const tls = tlsConnect({ socket: bridge as unknown as Socket, servername: API_HOST, ca: h.caPem });
  await once(tls, 'secureConnect');
  tls.write(`GET /eager HTTP/1.1\r\nHost: ${API_HOST}:${h.upstream.port}\r\nConnection: close\r\n\r\n`);
  const chunks: Buffer[] = [];
  for await (const c of tls) chunks.push(c as Buffer);
  t.match(Buffer.concat(chunks).toString(), /^HTTP\/1.1 200/);
  t.equal(h.upstream.seen[0]?.url, '/eager');
});

t.test('methods and paths of the rule are enforced inside the tunnel', async (t) => {
  const h = await startHarness(t, { env: SECRET_ENV, rule: { ...bearer, methods: ['POST'], paths: ['/model/*', '/v1/exact'] } });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  t.equal((await fetchVia(agent, h.url('/model/x/invoke'), { method: 'POST', body: '{}' })).status, 200);
  t.equal((await fetchVia(agent, h.url('/v1/exact?q=1'), { method: 'POST', body: '{}' })).status, 200);
  const get = await fetchVia(agent, h.url('/model/x/invoke'));
  t.equal(get.status, 403);
  t.match(get.headers['x-workspace-sandbox-deny-reason'], /method GET is not allowed/);
  const path = await fetchVia(agent, h.url('/admin'), { method: 'POST', body: '{}' });
  t.equal(path.status, 403);
  t.match(path.body, /path \/admin is not allowed/);
  t.equal((await fetchVia(agent, h.url('/model/../admin'), { method: 'POST', body: '{}' })).status, 403, 'dot segments cannot escape a prefix');
  // A Bedrock inference-profile ARN: %3A and %2F inside one segment, forwarded as sent.
  const profile = '/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-v1%3A0/invoke';
  t.equal((await fetchVia(agent, h.url(profile), { method: 'POST', body: '{}' })).status, 200, 'inference-profile ARN allowed under /model/*');
  t.equal(h.upstream.seen.at(-1)?.url, profile, 'the upstream gets the path still encoded');
  for (const attack of ['/model/x%2F..%2F..%2Fadmin', '/model/x%2F%2e%2e%2Fadmin', '/model/x%252F..%252Fadmin', '/model/x%5C..%5Cadmin']) {
    t.equal((await fetchVia(agent, h.url(attack), { method: 'POST', body: '{}' })).status, 403, `refused: ${attack}`);
  }
  const json = await fetchVia(agent, h.url('/admin'), { method: 'POST', body: '{}', headers: { accept: 'application/json' } });
  t.match(JSON.parse(json.body), { error: { code: 'WS_ERR_FORBIDDEN' } });
  t.equal(h.upstream.seen.length, 3);
});

t.test('upstream certificate problems → 502 with the reason', async (t) => {
  const stranger = makeTestPki([API_HOST]); // a CA the proxy does not trust
  const h = await startHarness(t, { env: SECRET_ENV, rule: bearer, upstreamPair: stranger });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const r = await fetchVia(agent, h.url('/x'));
  t.equal(r.status, 502);
  t.match(r.body, /upstream TLS verification failed: UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
  t.equal(h.upstream.seen.length, 0);

  const trusted = makeTestPki(['someone-else.example.test']);
  const h2 = await startHarness(t, { env: SECRET_ENV, rule: bearer });
  // Same trusted CA as the harness, wrong name: serve a leaf for another host.
  const wrongName = h2.upstreamPki.issue(['someone-else.example.test']);
  h2.upstream.server.setSecureContext({ cert: wrongName.certPem, key: wrongName.keyPem });
  const agent2 = proxyAgent(h2);
  t.teardown(() => agent2.destroy());
  const r2 = await fetchVia(agent2, h2.url('/x'));
  t.equal(r2.status, 502);
  t.match(r2.body, /ERR_TLS_CERT_ALTNAME_INVALID/);
  t.ok(trusted);
  t.match(h2.logs.find('CANONICAL-PROXY-DECISION')[0], { status: 502, error: /ALTNAME/ });
});

t.test('upstream down → 502 naming the failure, not the address', async (t) => {
  const h = await startHarness(t, { env: SECRET_ENV, rule: bearer });
  await h.upstream.close();
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const r = await fetchVia(agent, h.url('/x'));
  t.equal(r.status, 502);
  t.match(r.body, /upstream connection failed: ECONNREFUSED/);
  t.notMatch(r.body, /127\.0\.0\.1/);
});

t.test('responses stream unbuffered; a client abort closes the upstream request at once', async (t) => {
  let writes = 0;
  const h = await startHarness(t, {
    env: SECRET_ENV, rule: bearer,
    handler: (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
      const timer = setInterval(() => { writes++; res.write(`data: ${writes}\n\n`); }, 20);
      res.once('close', () => clearInterval(timer));
    },
  });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const req = httpsRequest(h.url('/stream'), { agent });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  t.equal(res.headers['content-type'], 'text/event-stream');
  const [first] = (await once(res, 'data')) as [Buffer];
  t.match(first.toString(), /data: first/, 'first event arrived while the upstream is still sending (it never ends)');
  const abortedAt = performance.now();
  req.destroy();
  const seen = h.upstream.seen[0]!;
  const deadline = Date.now() + 5000;
  while (seen.closedAt === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  t.ok(seen.closedAt !== undefined, 'the upstream saw the close');
  const ms = seen.closedAt! - abortedAt;
  t.comment(`upstream saw the client abort after ${ms.toFixed(1)} ms`);
  // The issue's bound is 100 ms; asserted with room for a loaded CI machine (a leak never closes).
  t.ok(ms < 1000, `closed within the bound (${ms.toFixed(1)} ms)`);
  t.match(await h.logs.waitFor('CANONICAL-PROXY-DECISION'), { status: 200, error: 'client closed before the response ended' });
});

t.test('SigV4 body cap: over it → 413 before anything goes upstream', async (t) => {
  const h = await startHarness(t, {
    rule: { id: 'aws', credentials: { type: 'aws-sigv4', service: 'bedrock', region: 'us-east-1' } },
    bodyCap: 1024,
    deps: { awsCredentials: async () => ({ accessKeyId: 'AKIDREAL', secretAccessKey: 'real-secret-key-0123456789' }) },
  });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const declared = await fetchVia(agent, h.url('/model/m/invoke'), { method: 'POST', body: 'x'.repeat(2048) });
  t.equal(declared.status, 413);
  t.match(declared.body, /over the 1024-byte signing limit/);
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = httpsRequest(h.url('/model/m/invoke'), { agent, method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => { res.resume(); resolve(res.statusCode!); });
    req.on('error', reject);
    for (let i = 0; i < 8; i++) req.write('y'.repeat(256));
    req.end();
  });
  t.equal(chunked, 413, 'a chunked body is cut off at the cap');
  const ok = await fetchVia(agent, h.url('/model/m/invoke'), { method: 'POST', body: 'z'.repeat(1000) });
  t.equal(ok.status, 200, 'under the cap passes');
  t.equal(h.upstream.seen.length, 1);
  t.match(h.upstream.seen[0]!.headers.authorization, /^AWS4-HMAC-SHA256 Credential=AKIDREAL\//);
  t.notOk(h.logs.text().includes('real-secret-key-0123456789'));
});

t.test('a missing credential is a 503 naming the source, never a request without it', async (t) => {
  const h = await startHarness(t, { rule: headerRule({ type: 'header', name: 'x-api-key', value: { env: 'NOT_SET' } }) });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  const r = await fetchVia(agent, h.url('/x'));
  t.equal(r.status, 503);
  t.match(r.body, /environment variable NOT_SET is not set/);
  t.equal(h.upstream.seen.length, 0);
});

t.test('malformed requests inside the tunnel get a clean 4xx', async (t) => {
  const h = await startHarness(t, { env: SECRET_ENV, rule: bearer });
  const socket = await openTunnel(h);
  const tls = tlsConnect({ socket, servername: API_HOST, ca: h.caPem });
  await once(tls, 'secureConnect');
  tls.write(`GET /x HTTP/1.1\r\nHost: ${API_HOST}:${h.upstream.port}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  const chunks: Buffer[] = [];
  for await (const c of tls) chunks.push(c as Buffer);
  t.match(Buffer.concat(chunks).toString(), /^HTTP\/1.1 431/);
  t.equal(h.upstream.seen.length, 0);
});

t.test('an upstream connection closed under a pooled request: idempotent ones are sent again, a POST gets 502', async (t) => {
  // Each upstream connection answers its first request and drops the connection on the next one,
  // as a server closing an idle keep-alive connection at that moment does.
  const perSocket = new WeakMap<object, number>();
  const log: string[] = [];
  const h = await startHarness(t, {
    env: SECRET_ENV, rule: bearer,
    handler: (req, res, seen) => {
      const n = (perSocket.get(req.socket) ?? 0) + 1;
      perSocket.set(req.socket, n);
      log.push(`${n === 1 ? 'new' : 'reused'} ${seen.method} ${seen.url}`);
      if (n > 1) {
        req.socket.destroy();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    },
  });
  const agent = proxyAgent(h);
  t.teardown(() => agent.destroy());
  t.equal((await fetchVia(agent, h.url('/1'))).status, 200);
  t.equal((await fetchVia(agent, h.url('/2'))).status, 200, 'GET: sent again on a new upstream connection');
  t.equal((await fetchVia(agent, h.url('/3'), { method: 'DELETE' })).status, 200, 'DELETE without a body: the same');
  const put = await fetchVia(agent, h.url('/4'), { method: 'PUT', headers: { 'content-length': 4 }, body: 'data' });
  t.equal(put.status, 502, 'PUT whose body was streamed on: not in hand, not sent again');
  t.equal((await fetchVia(agent, h.url('/5'))).status, 200);
  const post = await fetchVia(agent, h.url('/6'), { method: 'POST', headers: { 'content-length': 2 }, body: '{}' });
  t.equal(post.status, 502, 'POST: it could have been acted on, so the client decides');
  t.match(post.headers[HEADER_DENY_REASON.toLowerCase()], /upstream/);
  t.same(log, [
    'new GET /1', 'reused GET /2', 'new GET /2', 'reused DELETE /3', 'new DELETE /3', 'reused PUT /4',
    'new GET /5', 'reused POST /6',
  ]);
});
