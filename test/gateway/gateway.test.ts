// The egress gateway, end to end on port 0: CONNECT with a projected ServiceAccount token, checked by
// TokenReview against a stand-in for the Kubernetes API (test/helpers/kube-api-stand-in.ts follows
// the API's documented behaviour; no API server runs here). Upstreams are on loopback: the
// gateway's dial of a checked lab address (198.51.100.0/24) is handed to a local echo server, and
// every dialled address is recorded so tests assert on what would have left.
import t from 'tap';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { HEADER_DENY_REASON } from '../../lib/constants.ts';
import { AUDIT_MSG } from '../../credential-proxy/audit.ts';
import { foreignKey } from '../helpers/kube-api-stand-in.ts';
import { connectRequest, echo, exchange, mapResolver, metricsText, startGateway } from './harness.ts';

t.test('an authenticated pod gets a tunnel to the checked address; the audit line and metrics name the pod', async (t) => {
  const g = await startGateway(t);
  const token = g.api.mint(g.pod);
  const r = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(r.status, 200, r.head);
  t.equal(await echo(r.socket, 'hello through the gateway'), 'hello through the gateway');
  r.socket.end();
  const line = await g.logs.waitFor(AUDIT_MSG, (l) => l.decision === 'tunnel');
  t.match(line, { pod: 'sandboxes/pod-a', host: 'api.lab.test', port: 443, address: '198.51.100.10', status: 200, bytes_up: 25, bytes_down: 25, client: '127.0.0.1' });
  t.same(g.dialled, ['198.51.100.10'], 'the checked address was dialled');
  t.notMatch(g.logs.text(), token.split('.')[2]!, 'the token is never logged');

  // A second tunnel with the same token is answered from the cache: no second TokenReview.
  const again = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(again.status, 200);
  again.socket.destroy();
  t.equal(g.api.calls.tokenReviews, 1, 'one TokenReview for two tunnels');
  t.equal(g.api.calls.podReads, 1, 'one pod read for two tunnels');
  await g.logs.waitForLines(AUDIT_MSG, (l) => l.decision === 'tunnel', 2);
  const m = await metricsText(g.metricsPort);
  t.match(m, /gateway_connections_total\{namespace="sandboxes",pod="pod-a",decision="tunnel",program="gateway"\} 2/);
  t.match(m, /gateway_bytes_total\{namespace="sandboxes",pod="pod-a",direction="up",program="gateway"\} 25/);
  t.match(m, /gateway_token_validations_total\{cached="true",program="gateway"\} 1/);
});

t.test('every credential that is not this pod\'s valid gateway token is refused with its reason', async (t) => {
  const g = await startGateway(t, { GATEWAY_NAMESPACES: 'sandboxes,other-sandboxes' });
  const other = g.api.addPod({ namespace: 'sandboxes', name: 'pod-b', podIPs: ['10.1.2.3'] });
  const gone = g.api.addPod({ namespace: 'sandboxes', name: 'pod-gone', podIPs: ['127.0.0.1'] });
  const goneToken = g.api.mint(gone);
  g.api.deletePod('sandboxes', 'pod-gone');
  const foreignNs = g.api.addPod({ namespace: 'default', name: 'not-a-workspace', podIPs: ['127.0.0.1'] });
  const cases: [string, string, number, string, RegExp][] = [
    ['no credential', connectRequest('api.lab.test:443'), 407, 'missing', /Proxy-Authorization with the pod's gateway token is required/],
    ['Basic credentials', connectRequest('api.lab.test:443', undefined, 'Proxy-Authorization: Basic dXNlcjpwYXNz\r\n'), 407, 'malformed', /must be "Bearer/],
    ['a bearer that is no JWT', connectRequest('api.lab.test:443', 'not-a-token'), 407, 'malformed', /must be "Bearer/],
    ['a forged token (wrong key)', connectRequest('api.lab.test:443', g.api.mint(g.pod, { key: foreignKey() })), 407, 'rejected', /not valid/],
    ['an expired token', connectRequest('api.lab.test:443', g.api.mint(g.pod, { expiresIn: -60 })), 407, 'rejected', /not valid/],
    ['a token for another audience', connectRequest('api.lab.test:443', g.api.mint(g.pod, { audiences: ['https://kubernetes.default.svc'] })), 407, 'rejected', /not valid/],
    ['a replayed token of a deleted pod', connectRequest('api.lab.test:443', goneToken), 407, 'rejected', /not valid/],
    ['a token of another pod', connectRequest('api.lab.test:443', g.api.mint(other)), 403, 'source-address', /not that pod's/],
    ['a pod of a namespace the gateway does not serve', connectRequest('api.lab.test:443', g.api.mint(foreignNs)), 403, 'namespace', /namespace default may not use this gateway/],
  ];
  for (const [name, request, status, reason, message] of cases) {
    const r = await exchange(g.port, request);
    t.equal(r.status, status, `${name}: status`);
    t.match(r.header(HEADER_DENY_REASON), message, `${name}: reason header`);
    if (status === 407) t.equal(r.header('Proxy-Authenticate'), 'Bearer realm="workspace-sandbox-gateway"', `${name}: challenge`);
    t.match(await r.body, message, `${name}: body`);
    const m = await metricsText(g.metricsPort);
    t.match(m, new RegExp(`gateway_auth_failures_total\\{reason="${reason}",program="gateway"\\} \\d`), `${name}: counted as ${reason}`);
  }
  t.same(g.dialled, [], 'nothing was dialled');
  const denials = g.logs.find(AUDIT_MSG).filter((l) => l.decision === 'deny');
  t.equal(denials.length, cases.length, 'every refusal has its audit line');
  t.ok(denials.every((l) => l.pod === null && l.client === '127.0.0.1'), 'unauthenticated lines name the client, no pod');
});

t.test('a deleted pod\'s token stops working once its cached validation expires', async (t) => {
  const g = await startGateway(t, { TOKEN_CACHE_TTL_MS: '300' });
  const pod = g.api.addPod({ namespace: 'sandboxes', name: 'short-lived', podIPs: ['127.0.0.1'] });
  const token = g.api.mint(pod);
  const first = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(first.status, 200);
  first.socket.destroy();
  g.api.deletePod('sandboxes', 'short-lived');
  await new Promise((r) => setTimeout(r, 400));
  const replay = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(replay.status, 407);
  t.equal(g.api.calls.tokenReviews, 2);
});

t.test('the target policy: names only, allowed ports, the ceiling, and the SSRF guard on its own resolution', async (t) => {
  const resolver = mapResolver({
    'api.lab.test': ['198.51.100.10'],
    'other.lab.test': ['198.51.100.11'],
    'metadata.evil.test': ['169.254.169.254'],
    'pod-identity.evil.test': ['169.254.170.23'],
    'pod-identity6.evil.test': ['fd00:ec2::23'],
    'private.evil.test': ['10.0.0.8'],
    'loopback.evil.test': ['127.0.0.1'],
    'kube-dns.evil.test': ['172.20.0.10'],
    'mapped.evil.test': ['::ffff:10.0.0.1'],
    'rebind.evil.test': ['198.51.100.10', '10.0.0.1'],
    'test-net-2.evil.test': ['203.0.113.5'],
  });
  const g = await startGateway(t, { GATEWAY_CEILING: '*.lab.test,*.evil.test,*.evil.test:22' }, { resolver });
  const token = g.api.mint(g.pod);
  const refused: [string, number, RegExp][] = [
    ['198.51.100.10:443', 403, /IP addresses are never allowed/],
    ['[2001:db8::1]:443', 403, /IP addresses are never allowed/],
    ['169.254.169.254:80', 403, /IP addresses are never allowed/],
    ['api.lab.test:22', 403, /port 22 is not open at the gateway/],
    ['example.com:443', 403, /beyond the cluster-wide ceiling: host example.com is not in the allowlist/],
    ['metadata.evil.test:443', 403, /non-public address \(link-local\)/],
    ['pod-identity.evil.test:443', 403, /non-public address \(link-local\)/],
    ['pod-identity6.evil.test:443', 403, /non-public address \(ula\)/],
    ['private.evil.test:443', 403, /non-public address \(private\)/],
    ['loopback.evil.test:443', 403, /non-public address \(loopback\)/],
    ['kube-dns.evil.test:443', 403, /non-public address \(private\)/],
    ['mapped.evil.test:443', 403, /non-public address \(ipv4-mapped\)/],
    ['rebind.evil.test:443', 403, /non-public address \(private\)/],
    ['test-net-2.evil.test:443', 403, /non-public address \(documentation\)/],
    ['nxdomain.lab.test:443', 502, /no such host/],
    ['bad_host!:443', 400, /invalid host/],
    ['no-port-is-fine-but-path/x', 400, /authority-form/],
  ];
  for (const [authority, status, reason] of refused) {
    const r = await exchange(g.port, connectRequest(authority, token));
    t.equal(r.status, status, authority);
    t.match(r.header(HEADER_DENY_REASON), reason, `${authority}: reason`);
    t.notMatch(r.head, /169\.254|10\.0\.0|127\.0\.0\.1|172\.20|fd00/, `${authority}: no internal address echoed`);
  }
  t.same(g.dialled, [], 'nothing was dialled');
  const ok = await exchange(g.port, connectRequest('other.lab.test:443', token));
  t.equal(ok.status, 200);
  ok.socket.destroy();
  t.same(g.dialled, ['198.51.100.11']);
  const m = await metricsText(g.metricsPort);
  t.match(m, new RegExp(`gateway_connections_total\\{namespace="sandboxes",pod="pod-a",decision="deny",program="gateway"\\} ${refused.length}`));
});

t.test('nothing a client sends ends the gateway, and buffers stay bounded', async (t) => {
  const g = await startGateway(t, { HEADER_TIMEOUT_MS: '300' });
  const token = g.api.mint(g.pod);
  const r1 = await exchange(g.port, 'GET http://api.lab.test/ HTTP/1.1\r\nHost: api.lab.test\r\n\r\n');
  t.equal(r1.status, 405, 'plain HTTP is not served');
  const r2 = await exchange(g.port, connectRequest('api.lab.test:443', token, `X-Pad: ${'a'.repeat(20_000)}\r\n`));
  t.equal(r2.status, 431, 'oversized headers');
  const r3 = await exchange(g.port, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00, 0x0d, 0x0a, 0x0d, 0x0a]));
  t.equal(r3.status, 400, 'TLS bytes instead of HTTP');
  const r4 = await exchange(g.port, 'GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nHost: x\r\n\r\n');
  t.equal(r4.status, 405, 'upgrade');
  const r5 = await exchange(g.port, `CONNECT api.lab.test:443 HTTP/1.1\r\nProxy-Authorization: Bearer ${'a'.repeat(9000)}.${'b'.repeat(9000)}.c\r\n\r\n`);
  t.equal(r5.status, 431, 'a huge token is cut off by the header limit');
  // A slow client that never finishes its request is answered and dropped.
  const slow = netConnect({ host: '127.0.0.1', port: g.port });
  slow.on('error', () => {});
  let answer = '';
  slow.on('data', (c: Buffer) => { answer += c.toString(); });
  slow.write('CONNECT api.lab.test:443 HTTP/1.1\r\n');
  await once(slow, 'close');
  t.match(answer, /^HTTP\/1\.1 408 /, 'answered 408');
  t.pass('a client that never finished its request was dropped');
  // A client that goes away during token review or dialling leaves nothing open.
  for (let i = 0; i < 20; i++) {
    const s = netConnect({ host: '127.0.0.1', port: g.port });
    s.on('error', () => {});
    s.write(connectRequest('api.lab.test:443', token));
    s.destroy();
  }
  await new Promise((r) => setTimeout(r, 200));
  const ok = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(ok.status, 200, 'still serving');
  ok.socket.destroy();
  await new Promise((r) => setTimeout(r, 100));
  t.match(await metricsText(g.metricsPort), /gateway_active_tunnels\{program="gateway"\} 0/, 'no tunnel left counted');
});

t.test('an unreachable API server closes the gateway (503), and the failure is not remembered', async (t) => {
  const g = await startGateway(t, { TOKEN_REVIEW_TIMEOUT_MS: '500' });
  const token = g.api.mint(g.pod);
  await g.api.close();
  const r = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(r.status, 503);
  t.match(r.header(HEADER_DENY_REASON), /could not be checked/);
  t.match(await metricsText(g.metricsPort), /gateway_auth_failures_total\{reason="review-failed",program="gateway"\} 1/);
  t.same(g.dialled, []);
});

t.test('the gateway\'s tunnel cap holds for CONNECTs that arrive together, and answers 429 with its reason', async (t) => {
  const g = await startGateway(t, { MAX_TUNNELS: '2', MAX_TUNNELS_PER_POD: '100' });
  const token = g.api.mint(g.pod);
  const all = await Promise.all(Array.from({ length: 10 }, () => exchange(g.port, connectRequest('api.lab.test:443', token))));
  t.same(all.map((r) => r.status).sort(), [200, 200, 429, 429, 429, 429, 429, 429, 429, 429]);
  t.match(all.find((r) => r.status === 429)!.header(HEADER_DENY_REASON), /tunnel limit \(2\)/);
  for (const r of all) r.socket.destroy();
});

t.test('per-pod tunnel limit', async (t) => {
  const g = await startGateway(t, { MAX_TUNNELS_PER_POD: '2' });
  const token = g.api.mint(g.pod);
  const a = await exchange(g.port, connectRequest('api.lab.test:443', token));
  const b = await exchange(g.port, connectRequest('api.lab.test:443', token));
  const c = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.same([a.status, b.status, c.status], [200, 200, 429]);
  t.match(c.header(HEADER_DENY_REASON), /limit 2/);
  a.socket.destroy();
  b.socket.destroy();
});

t.test('a bug in a handler (a dial that throws) is answered 500, logged and counted, and the gateway keeps serving', async (t) => {
  let planted = true;
  const g = await startGateway(t, {}, {
    connect: (target) => {
      if (planted) throw new Error('planted bug');
      return netConnect({ host: '127.0.0.1', port: g.upstreamPort, onread: target.onread });
    },
  });
  const token = g.api.mint(g.pod);
  const bad = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(bad.status, 500);
  t.match(g.logs.text(), /"code":"WS_ERR_INTERNAL".*"where":"gateway.connect"|"where":"gateway.connect".*"code":"WS_ERR_INTERNAL"/);
  t.match(await metricsText(g.metricsPort), /unexpected_errors_total\{where="gateway.connect",program="gateway"\} 1/);
  planted = false;
  const good = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(good.status, 200, 'the next CONNECT is served');
  t.equal(await echo(good.socket, 'ping'), 'ping');
  good.socket.destroy();
});
