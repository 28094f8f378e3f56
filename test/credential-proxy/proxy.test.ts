// Real clients (curl, Python urllib, Node undici) through a real proxy to real HTTP/TLS upstreams.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { fetch, ProxyAgent } from 'undici';
import { HEADER_DENY_REASON } from '../../lib/constants.ts';
import { AUDIT_FIELDS, AUDIT_MSG } from '../../credential-proxy/audit.ts';
import { rawExchange, startProxy, startUpstreams, statusOf, headerOf } from './fixtures/proxy-harness.ts';

const run = promisify(execFile);

interface Result { code: number; stdout: string; stderr: string }
async function sh(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  try {
    const r = await run(cmd, args, { env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env }, timeout: 30_000, encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const PY_FETCH = `
import json, ssl, sys, urllib.request, urllib.error
url, proxy, cafile = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': proxy, 'https': proxy}), urllib.request.HTTPSHandler(context=ctx))
try:
    with opener.open(url, timeout=20) as r:
        print(json.dumps({'status': r.status, 'body': r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({'status': e.code, 'body': e.read().decode(), 'reason': e.headers.get('${HEADER_DENY_REASON}')}))
except Exception as e:
    print(json.dumps({'error': str(e)}))
`;

t.test('allowed HTTPS through a CONNECT tunnel: curl, Python and undici, TLS verified end to end', async (t) => {
  const up = await startUpstreams(t);
  const p = await startProxy(t, { rules: [{ id: 'up', hosts: ['upstream.test'], ports: [up.httpsPort], allowPrivate: true }] });
  const target = `https://upstream.test:${up.httpsPort}/hello`;

  const curl = await sh('curl', ['-sS', '--cacert', up.caFile, target], { HTTPS_PROXY: p.url });
  t.equal(curl.code, 0, curl.stderr);
  t.equal(curl.stdout, 'hello https /hello');

  const py = JSON.parse((await sh('python3', ['-c', PY_FETCH, target, p.url, up.caFile])).stdout) as { status: number; body: string };
  t.same(py, { status: 200, body: 'hello https /hello' });

  const dispatcher = new ProxyAgent({ uri: p.url, requestTls: { ca: readFileSync(up.caFile, 'utf8') } });
  t.teardown(() => dispatcher.close());
  const res = await fetch(target, { dispatcher });
  t.equal(res.status, 200);
  t.equal(await res.text(), 'hello https /hello');

  // The client verified the upstream's certificate: without the test CA it fails.
  const untrusted = await sh('curl', ['-sS', target], { HTTPS_PROXY: p.url });
  t.not(untrusted.code, 0, 'the tunnel does not terminate TLS: an untrusted upstream cert is rejected by the client');

  const lines = await p.logs.waitForLines(AUDIT_MSG, (l) => l.decision === 'tunnel', 3);
  t.ok(lines.length >= 3, 'one canonical line per tunnel');
  const line = lines[0]!;
  t.equal(line[AUDIT_FIELDS.kind], 'connect');
  t.equal(line[AUDIT_FIELDS.rule], 'up');
  t.equal(line[AUDIT_FIELDS.host], 'upstream.test');
  t.equal(line[AUDIT_FIELDS.port], up.httpsPort);
  t.equal(line[AUDIT_FIELDS.address], '127.0.0.1');
  t.equal(line[AUDIT_FIELDS.status], 200);
  t.equal(line[AUDIT_FIELDS.pod], 'ws-test-pod');
  t.ok((line[AUDIT_FIELDS.bytesUp] as number) > 0 && (line[AUDIT_FIELDS.bytesDown] as number) > 0, 'bytes both ways');
  t.type(line[AUDIT_FIELDS.durationMs], 'number');
});

t.test('denied hosts get 403 with the reason, for every client', async (t) => {
  const up = await startUpstreams(t);
  const p = await startProxy(t, { env: { ALLOWED_DOMAINS: 'allowed.test' } });
  const target = `https://evil.test:${up.httpsPort}/`;

  const curl = await sh('curl', ['-sS', '-v', '--cacert', up.caFile, target], { HTTPS_PROXY: p.url });
  t.not(curl.code, 0);
  t.match(curl.stderr, /CONNECT tunnel failed, response 403/);
  t.match(curl.stderr, new RegExp(`< ${HEADER_DENY_REASON}: host evil\\.test is not in the allowlist`, 'i'), 'curl -v shows why');

  const plain = await sh('curl', ['-sS', '-i', `http://evil.test:${up.httpPort}/`], { http_proxy: p.url });
  t.match(plain.stdout, /^HTTP\/1\.1 403/);
  t.match(plain.stdout, /workspace-sandbox proxy: evil\.test:\d+: host evil\.test is not in the allowlist/, 'plain-HTTP body names host and reason');

  const json = await sh('curl', ['-sS', '-H', 'Accept: application/json', `http://evil.test:${up.httpPort}/`], { http_proxy: p.url });
  const body = JSON.parse(json.stdout) as { error: { code: string; host: string; message: string } };
  t.equal(body.error.code, 'WS_ERR_FORBIDDEN');
  t.equal(body.error.host, 'evil.test');
  t.match(body.error.message, /not in the allowlist/);

  const py = JSON.parse((await sh('python3', ['-c', PY_FETCH, `http://evil.test:${up.httpPort}/x`, p.url, up.caFile])).stdout) as { status: number; reason: string };
  t.equal(py.status, 403);
  t.match(py.reason, /not in the allowlist/);
  const pyTls = JSON.parse((await sh('python3', ['-c', PY_FETCH, target, p.url, up.caFile])).stdout) as { error: string };
  t.match(pyTls.error, /403/, 'Python reports the failed tunnel with its status');

  const dispatcher = new ProxyAgent({ uri: p.url });
  t.teardown(() => dispatcher.close());
  await t.rejects(fetch(target, { dispatcher }), 'undici fetch fails on the refused tunnel');
  t.equal(up.seen.length, 0, 'nothing reached the upstream');
  const denies = p.logs.find(AUDIT_MSG).filter((l) => l.decision === 'deny');
  t.ok(denies.length >= 4);
  t.equal(denies[0]!.level, 'warn');
});

t.test('plain HTTP: forwarded to the checked address, hop-by-hop and Proxy-* stripped, redirects not followed', async (t) => {
  const up = await startUpstreams(t);
  const p = await startProxy(t, { rules: [{ id: 'plain', hosts: ['upstream.test'], ports: [up.httpPort], allowPrivate: true }] });
  const url = `http://upstream.test:${up.httpPort}/echo?token=query-secret-123`;
  const r = await sh('curl', ['-sS', '-i', '-H', 'Proxy-Authorization: Basic cHJveHktc2VjcmV0', '-H', 'Connection: keep-alive, X-Drop-Me', '-H', 'X-Drop-Me: 1', '-H', 'X-Keep: 2', '-H', 'Proxy-Connection: keep-alive', url], { http_proxy: p.url });
  t.equal(statusOf(r.stdout), 200, r.stderr);
  const echoed = JSON.parse(r.stdout.split('\r\n\r\n')[1]!) as { url: string; headers: Record<string, string> };
  t.equal(echoed.url, '/echo?token=query-secret-123', 'origin-form path with query to the upstream');
  t.equal(echoed.headers.host, `upstream.test:${up.httpPort}`, 'Host kept');
  t.equal(echoed.headers['x-keep'], '2');
  for (const h of ['proxy-authorization', 'proxy-connection', 'x-drop-me']) t.notOk(h in echoed.headers, `${h} stripped on the way up`);
  t.notOk(headerOf(r.stdout, 'x-hop'), 'header named by the upstream Connection stripped on the way down');
  t.notOk(headerOf(r.stdout, 'proxy-agent'), 'Proxy-* stripped on the way down');

  const redirect = await sh('curl', ['-sS', '-i', `http://upstream.test:${up.httpPort}/redirect`], { http_proxy: p.url });
  t.equal(statusOf(redirect.stdout), 302, 'redirect handed back to the client');
  t.equal(up.seen.filter((s) => s.url === '/redirect').length, 1);

  const post = await sh('curl', ['-sS', '--data-binary', 'payload-body', `http://upstream.test:${up.httpPort}/echo`], { http_proxy: p.url });
  t.equal((JSON.parse(post.stdout) as { body: string }).body, 'payload-body');

  const line = await p.logs.waitFor(AUDIT_MSG, (l) => l.kind === 'http' && l.decision === 'tunnel');
  t.equal(line.method, 'GET');
  t.equal(line.path, '/echo', 'path without query string');
  t.equal(line.address, '127.0.0.1');
  t.equal(line.status, 200);
  t.ok((line.bytes_down as number) > 0);
  t.notMatch(p.logs.text(), /query-secret-123|cHJveHktc2VjcmV0/, 'no query string or proxy credential in any log line');
});

t.test('Host header must match the request target; origin-form and https:// absolute-form are refused', async (t) => {
  const up = await startUpstreams(t);
  const p = await startProxy(t, { rules: [{ id: 'plain', hosts: ['upstream.test'], ports: [up.httpPort], allowPrivate: true }] });
  const mismatch = await rawExchange(p.port, `GET http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: metadata.internal\r\n\r\n`);
  t.equal(statusOf(mismatch), 400);
  t.match(headerOf(mismatch, HEADER_DENY_REASON)!, /Host header .* does not match/);
  const portMismatch = await rawExchange(p.port, `GET http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: upstream.test\r\n\r\n`);
  t.equal(statusOf(portMismatch), 400, 'a Host without the port means port 80');
  const caseOnly = await rawExchange(p.port, `GET http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: UPSTREAM.test.:${up.httpPort}\r\nConnection: close\r\n\r\n`);
  t.equal(statusOf(caseOnly), 200, 'case and trailing dot are not a mismatch');
  const origin = await rawExchange(p.port, 'GET /rules HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  t.equal(statusOf(origin), 400);
  t.match(origin, /forward proxy/);
  const https = await rawExchange(p.port, `GET https://upstream.test:${up.httpsPort}/ HTTP/1.1\r\nHost: upstream.test:${up.httpsPort}\r\n\r\n`);
  t.equal(statusOf(https), 400);
  t.match(https, /CONNECT/);
  t.equal(up.seen.length, 1, 'only the matching request reached the upstream');
});

t.test('upstream failure → 502 with a reason and no internal address', async (t) => {
  const up = await startUpstreams(t);
  const closedPort = up.httpPort;
  await new Promise<void>((r) => up.http.close(() => r()));
  const p = await startProxy(t, { rules: [{ id: 'down', hosts: ['down.test'], ports: [closedPort], allowPrivate: true }] });
  const c = await rawExchange(p.port, `CONNECT down.test:${closedPort} HTTP/1.1\r\nHost: down.test:${closedPort}\r\n\r\n`);
  t.equal(statusOf(c), 502);
  t.match(headerOf(c, HEADER_DENY_REASON)!, /upstream refused the connection/);
  t.notMatch(c, /127\.0\.0\.1/, 'no internal address in the answer');
  const h = await sh('curl', ['-sS', '-i', `http://down.test:${closedPort}/`], { http_proxy: p.url });
  t.equal(statusOf(h.stdout), 502);
  t.notMatch(h.stdout, /127\.0\.0\.1|ECONNREFUSED/);
  const nx = await rawExchange(p.port, 'CONNECT nowhere.invalid:443 HTTP/1.1\r\nHost: x\r\n\r\n');
  t.equal(statusOf(nx), 403, 'not in the allowlist comes before any lookup');
});

t.test('metrics name decisions, bytes, tunnels, connect time, rules version and store state', async (t) => {
  const up = await startUpstreams(t);
  const p = await startProxy(t, { rules: [{ id: 'up', hosts: ['upstream.test'], ports: [up.httpsPort], allowPrivate: true }] });
  await sh('curl', ['-sS', '--cacert', up.caFile, `https://upstream.test:${up.httpsPort}/`], { HTTPS_PROXY: p.url });
  await sh('curl', ['-sS', `https://evil.test:${up.httpsPort}/`], { HTTPS_PROXY: p.url });
  // Bytes are counted when a tunnel closes, just before its canonical line is written.
  await p.logs.waitFor(AUDIT_MSG, (l) => l.decision === 'tunnel');
  const text = await (await fetch(`${p.adminUrl}/metrics`)).text();
  t.match(text, /proxy_requests_total\{decision="tunnel",rule="up",program="credential-proxy"\} 1/);
  t.match(text, /proxy_requests_total\{decision="deny",rule="",program="credential-proxy"\} 1/);
  t.match(text, /proxy_bytes_total\{direction="down",program="credential-proxy"\} [1-9]/);
  t.match(text, /proxy_bytes_total\{direction="up",program="credential-proxy"\} [1-9]/);
  t.match(text, /proxy_active_tunnels\{program="credential-proxy"\} 0/);
  t.match(text, /proxy_upstream_connect_seconds_count\{program="credential-proxy"\} 1/);
  t.match(text, /rules_version\{program="credential-proxy"\} 0/);
  t.match(text, /rules_store_up\{program="credential-proxy"\} 1/);
});
