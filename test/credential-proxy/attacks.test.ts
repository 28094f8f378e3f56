// The attack checklist, each as a real exchange with a real proxy.
import t from 'tap';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { createServer as createNetServer, type Socket } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { HEADER_DENY_REASON } from '../../lib/constants.ts';
import { AUDIT_MSG } from '../../credential-proxy/audit.ts';
import type { Resolver } from '../../credential-proxy/resolve.ts';
import { listenLocal, closeServer } from '../helpers/listen.ts';
import { headerOf, openTunnel, rawExchange, startProxy, startUpstreams, statusOf, testResolver } from './fixtures/proxy-harness.ts';

const connectTo = (authority: string) => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;

t.test('IP literals in every form are refused before any lookup', async (t) => {
  const resolver = testResolver();
  const p = await startProxy(t, { env: { ALLOWED_DOMAINS: '*.ws.test' }, deps: { resolver } });
  const forms = ['127.0.0.1:443', '127.1:443', '0x7f.0.0.1:443', '0177.0.0.1:443', '2130706433:443', '0x7f000001:443',
    '[::1]:443', '[::ffff:127.0.0.1]:443', '[::ffff:7f00:1]:443', '169.254.169.254:443', '169.254.170.23:443', '[fd00:ec2::254]:443', '[64:ff9b::a9fe:a9fe]:443', '0:443'];
  for (const authority of forms) {
    const raw = await rawExchange(p.port, connectTo(authority));
    t.equal(statusOf(raw), 403, authority);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /IP addresses are never allowed/, `${authority}: reason`);
  }
  for (const url of ['http://127.1/', 'http://0x7f.0.0.1/', 'http://2130706433/', 'http://[::1]/', 'http://169.254.169.254/latest/meta-data/']) {
    const host = new URL(url).host;
    const raw = await rawExchange(p.port, `GET ${url} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    t.equal(statusOf(raw), 403, url);
  }
  t.equal(resolver.calls.size, 0, 'no name was resolved');
});

t.test('SSRF guard: a name resolving to a non-public address is refused unless the rule allows private', async (t) => {
  const resolver = testResolver({
    'metadata.test': ['169.254.169.254'],
    'pod-identity.test': ['169.254.170.23'],
    'mixed.test': ['93.184.216.34', '10.0.0.8'],
    'mapped.test': ['::ffff:127.0.0.1'],
    'ula.test': ['fd00:ec2::254'],
    'cgnat.test': ['100.64.0.9'],
  });
  const up = await startUpstreams(t);
  const hosts = ['metadata.test', 'pod-identity.test', 'mixed.test', 'mapped.test', 'ula.test', 'cgnat.test'];
  const p = await startProxy(t, { rules: [{ id: 'names', hosts: [...hosts, 'upstream.test'], ports: [443, up.httpsPort] }], deps: { resolver } });
  for (const host of hosts) {
    const raw = await rawExchange(p.port, connectTo(`${host}:443`));
    t.equal(statusOf(raw), 403, host);
    // Metadata and Pod Identity addresses have their own, stricter refusal (attacks-runtime.test.ts).
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /resolves to a non-public address|resolves to .* never connects to/, `${host}: reason`);
    t.notMatch(raw, /169\.254|10\.0\.0\.8|127\.0\.0\.1|fd00/, `${host}: address not echoed`);
  }
  // The same local upstream by name: refused without allowPrivate...
  const raw = await rawExchange(p.port, connectTo(`upstream.test:${up.httpsPort}`));
  t.equal(statusOf(raw), 403);
  t.match(headerOf(raw, HEADER_DENY_REASON)!, /non-public address \(loopback\)/);
});

t.test('DNS rebinding: the proxy dials the address it checked and never looks the name up again', async (t) => {
  // A TCP upstream on 127.0.0.1; the stub answers 127.0.0.1 first and 10.255.255.1 afterwards.
  const upstream = createNetServer((s) => s.end('checked-address\n'));
  const { port } = await listenLocal(upstream);
  t.teardown(() => closeServer(upstream));
  let calls = 0;
  const resolver: Resolver = async () => (calls++ === 0 ? [{ address: '127.0.0.1', family: 4 }] : [{ address: '10.255.255.1', family: 4 }]);
  const p = await startProxy(t, { rules: [{ id: 'rebind', hosts: ['rebind.test'], ports: [port], allowPrivate: true }], deps: { resolver } });
  const { socket } = await openTunnel(p.port, `rebind.test:${port}`);
  let got = '';
  socket.on('data', (c: Buffer) => { got += c.toString(); });
  socket.resume();
  await once(socket, 'close');
  t.equal(got, 'checked-address\n', 'bytes came from the checked address');
  t.equal(calls, 1, 'one lookup per tunnel');
  t.equal((await p.logs.waitFor(AUDIT_MSG, (l) => l.decision === 'tunnel')).address, '127.0.0.1');

  // Public first, then private: a second tunnel's lookup sees the private answer and is refused.
  let n = 0;
  const flip: Resolver = async () => (n++ === 0 ? [{ address: '93.184.216.34', family: 4 }] : [{ address: '169.254.169.254', family: 4 }]);
  const q = await startProxy(t, { env: { ALLOWED_DOMAINS: 'flip.test:9', UPSTREAM_CONNECT_TIMEOUT_MS: '200' }, deps: { resolver: flip } });
  const first = await rawExchange(q.port, connectTo('flip.test:9'));
  t.not(statusOf(first), 403, 'first answer was public: allowed (its dial may fail offline)');
  const second = await rawExchange(q.port, connectTo('flip.test:9'));
  t.equal(statusOf(second), 403, 'rebound answer refused');
  await new Promise((r) => setTimeout(r, 20));
  const dialled = q.logs.find(AUDIT_MSG).map((l) => l.address).filter(Boolean);
  t.same(dialled, ['93.184.216.34'], 'only the checked public address was ever dialled');
});

t.test('CONNECT to a port the rule does not allow', async (t) => {
  const p = await startProxy(t, { env: { ALLOWED_DOMAINS: 'api.test' } });
  for (const port of [22, 25, 80, 6379, 8443]) {
    const raw = await rawExchange(p.port, connectTo(`api.test:${port}`));
    t.equal(statusOf(raw), 403);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, new RegExp(`port ${port} is not allowed for api\\.test \\(allowed: 443\\)`));
  }
});

t.test('tunnelling or forwarding to the proxy\'s own listeners is refused even with allowPrivate', async (t) => {
  const p = await startProxy(t, { rules: [{ id: 'self', hosts: ['self.test', 'localhost'], ports: [1], allowPrivate: true }] });
  // Rules cannot know port-0 ports in advance: add them through the API.
  const res = await fetch(`${p.adminUrl}/rules`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify([{ id: 'self-ports', hosts: ['self.test', 'localhost'], ports: [p.port, p.adminPort], allowPrivate: true }]) });
  t.equal(res.status, 403, 'writes disabled without a token file (default)');
  const q = await startProxy(t, { env: { RULES_ALLOW_UNAUTHENTICATED: 'true' } });
  const put = await fetch(`${q.adminUrl}/rules`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify([{ id: 'self-ports', hosts: ['self.test', 'localhost'], ports: [q.port, q.adminPort, 80], allowPrivate: true }]) });
  t.equal(put.status, 200);
  for (const authority of [`self.test:${q.adminPort}`, `localhost:${q.adminPort}`, `self.test:${q.port}`]) {
    const raw = await rawExchange(q.port, connectTo(authority));
    t.equal(statusOf(raw), 403, authority);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /this proxy's own listener/);
  }
  const viaHttp = await rawExchange(q.port, `PUT http://self.test:${q.adminPort}/rules HTTP/1.1\r\nHost: self.test:${q.adminPort}\r\nContent-Length: 2\r\n\r\n[]`);
  t.equal(statusOf(viaHttp), 403);
  t.match(headerOf(viaHttp, HEADER_DENY_REASON)!, /own listener/);
});

t.test('request smuggling shapes are refused with 400 and the connection closed', async (t) => {
  const up = await startUpstreams(t);
  const p = await startProxy(t, { rules: [{ id: 'plain', hosts: ['upstream.test'], ports: [up.httpPort], allowPrivate: true }] });
  const line = `POST http://upstream.test:${up.httpPort}/echo HTTP/1.1\r\nHost: upstream.test:${up.httpPort}\r\n`;
  const shapes: Record<string, string> = {
    'Transfer-Encoding: Chunked': `${line}Transfer-Encoding: Chunked\r\n\r\n1\r\na\r\n0\r\n\r\n`,
    'Transfer-Encoding: chunked, gzip': `${line}Transfer-Encoding: chunked, gzip\r\n\r\n1\r\na\r\n0\r\n\r\n`,
    'Transfer-Encoding: gzip, chunked': `${line}Transfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n`,
    'two Transfer-Encoding headers': `${line}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n1\r\na\r\n0\r\n\r\n`,
    'Content-Length : 1': `${line}Content-Length : 1\r\n\r\na`,
    'duplicate Content-Length': `${line}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`,
    'duplicate equal Content-Length': `${line}Content-Length: 1\r\nContent-Length: 1\r\n\r\na`,
    'Content-Length and Transfer-Encoding': `${line}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n`,
    'Content-Length with a sign': `${line}Content-Length: +1\r\n\r\na`,
    'obs-fold header': `${line}X-A: 1\r\n  folded\r\nContent-Length: 1\r\n\r\na`,
    'bare LF line endings': `POST http://upstream.test:${up.httpPort}/echo HTTP/1.1\nHost: upstream.test:${up.httpPort}\nContent-Length: 1\n\na`,
  };
  for (const [name, request] of Object.entries(shapes)) {
    const raw = await rawExchange(p.port, request);
    t.equal(statusOf(raw), 400, name);
    t.match(raw, /Connection: close/i, `${name}: connection closed`);
  }
  t.equal(up.seen.length, 0, 'nothing reached the upstream');
  const ok = await rawExchange(p.port, `${line}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\na\r\n0\r\n\r\n`);
  t.equal(statusOf(ok), 200, 'plain chunked still works, the proxy is alive');
  t.equal(up.seen[0]?.body, 'a');
});

t.test('malformed, oversized (16 KiB) and slow headers get a clean 4xx, never a crash', async (t) => {
  const p = await startProxy(t, { env: { HEADER_TIMEOUT_MS: '300', ALLOWED_DOMAINS: 'api.test' } });
  const cases: [string, string, number][] = [
    ['garbage request line', 'HELLO\r\n\r\n', 400],
    ['bad HTTP version', 'GET http://api.test/ HTTP/9.9\r\nHost: api.test\r\n\r\n', 400],
    ['CONNECT without a port is fine, with a bad one is not', 'CONNECT api.test:99999 HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['CONNECT with userinfo', 'CONNECT user@api.test:443 HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['NUL in a header', 'GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nX-A: a\0b\r\n\r\n', 400],
    ['oversized headers', `GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`, 431],
  ];
  for (const [name, request, status] of cases) {
    const raw = await rawExchange(p.port, request);
    t.equal(statusOf(raw), status, name);
  }
  // Slowloris: headers trickle and never finish.
  const slow = rawExchange(p.port, 'GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\n', { timeoutMs: 10_000 });
  const raw = await slow;
  t.equal(statusOf(raw), 408, 'slow headers time out with 408');
  t.match(headerOf(raw, HEADER_DENY_REASON)!, /not received within 300 ms/);
  // Still serving.
  t.equal(statusOf(await rawExchange(p.port, connectTo('evil.test:443'))), 403);
});

t.test('tunnel cap: over MAX_TUNNELS → 429', async (t) => {
  const upstream = createNetServer((s) => s.on('data', () => {}));
  const { port } = await listenLocal(upstream);
  t.teardown(() => closeServer(upstream));
  const p = await startProxy(t, { env: { MAX_TUNNELS: '2' }, rules: [{ id: 'up', hosts: ['upstream.test'], ports: [port], allowPrivate: true }] });
  const a = await openTunnel(p.port, `upstream.test:${port}`);
  const b = await openTunnel(p.port, `upstream.test:${port}`);
  const third = await rawExchange(p.port, connectTo(`upstream.test:${port}`));
  t.equal(statusOf(third), 429);
  t.match(headerOf(third, HEADER_DENY_REASON)!, /too many open tunnels and requests \(limit 2,/);
  a.socket.destroy();
  // The slot is released as the proxy sees the close, just before the tunnel's canonical line.
  await p.logs.waitFor(AUDIT_MSG, (l) => l.decision === 'tunnel');
  const c = await openTunnel(p.port, `upstream.test:${port}`);
  t.pass('a slot freed by a closed tunnel is reusable');
  b.socket.destroy();
  c.socket.destroy();
});

t.test('idle tunnels are closed after IDLE_TIMEOUT_MS', async (t) => {
  const upstream = createNetServer((s) => s.on('data', () => {}));
  const { port } = await listenLocal(upstream);
  t.teardown(() => closeServer(upstream));
  const p = await startProxy(t, { env: { IDLE_TIMEOUT_MS: '1000' }, rules: [{ id: 'up', hosts: ['upstream.test'], ports: [port], allowPrivate: true }] });
  const { socket } = await openTunnel(p.port, `upstream.test:${port}`);
  socket.on('error', () => {});
  await once(socket, 'close');
  t.equal((await p.logs.waitFor(AUDIT_MSG, (l) => l.decision === 'tunnel')).error, 'idle timeout');
});

t.test('a client abort closes the upstream side at once (tunnel and plain HTTP)', async (t) => {
  const upstreamSockets: Socket[] = [];
  const tcp = createNetServer((s) => {
    upstreamSockets.push(s);
    s.on('error', () => {});
  });
  const { port } = await listenLocal(tcp);
  t.teardown(() => closeServer(tcp));
  let upstreamReqClosed: Promise<unknown> | undefined;
  const http = createHttpServer((req) => { upstreamReqClosed = once(req.socket, 'close'); /* never answers */ });
  const h = await listenLocal(http);
  t.teardown(() => closeServer(http));
  const p = await startProxy(t, { rules: [{ id: 'up', hosts: ['upstream.test'], ports: [port, h.port], allowPrivate: true }] });

  const { socket } = await openTunnel(p.port, `upstream.test:${port}`);
  while (upstreamSockets.length === 0) await new Promise((r) => setTimeout(r, 5));
  const closed = once(upstreamSockets[0]!, 'close');
  socket.destroy();
  await closed;
  t.pass('upstream tunnel socket closed after the client aborted');

  const { connect } = await import('node:net');
  const c = connect(p.port, '127.0.0.1');
  c.write(`GET http://upstream.test:${h.port}/slow HTTP/1.1\r\nHost: upstream.test:${h.port}\r\n\r\n`);
  while (!upstreamReqClosed) await new Promise((r) => setTimeout(r, 5));
  c.destroy();
  await upstreamReqClosed;
  t.pass('upstream HTTP request closed after the client aborted');
});

t.test('backpressure: a client that does not read stalls the upstream instead of filling memory', async (t) => {
  let written = 0;
  let stalled: () => void = () => {};
  const isStalled = new Promise<void>((r) => { stalled = r; });
  const chunk = Buffer.alloc(64 * 1024, 120);
  const upstream = createNetServer((s) => {
    s.on('error', () => {});
    const pump = () => {
      while (written < 512 * 1024 * 1024) {
        written += chunk.length;
        if (!s.write(chunk)) {
          // Wait a little: if the proxy were buffering, it would keep draining us.
          const timer = setTimeout(stalled, 500);
          s.once('drain', () => { clearTimeout(timer); pump(); });
          return;
        }
      }
    };
    pump();
  });
  const { port } = await listenLocal(upstream);
  t.teardown(() => closeServer(upstream));
  const p = await startProxy(t, { rules: [{ id: 'up', hosts: ['upstream.test'], ports: [port], allowPrivate: true }] });
  const { socket } = await openTunnel(p.port, `upstream.test:${port}`);
  socket.pause();
  await isStalled;
  t.ok(written < 64 * 1024 * 1024, `upstream stalled after ${(written / 2 ** 20).toFixed(1)} MiB with a non-reading client`);
  socket.destroy();
});

t.test('tunnel data integrity: a slow, pausing client gets every byte in order (read buffers are reused)', async (t) => {
  const total = 48 * 1024 * 1024;
  // Every 4-byte word is its own offset: a reused buffer overwritten too early shows as a mismatch.
  const block = Buffer.alloc(1024 * 1024);
  const upstream = createNetServer((s) => {
    s.on('error', () => {});
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        for (let i = 0; i < block.length; i += 4) block.writeUInt32BE((sent + i) >>> 0, i);
        sent += block.length;
        if (!s.write(Buffer.from(block))) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
  const { port } = await listenLocal(upstream);
  t.teardown(() => closeServer(upstream));
  const p = await startProxy(t, { rules: [{ id: 'up', hosts: ['upstream.test'], ports: [port], allowPrivate: true }] });
  const { socket } = await openTunnel(p.port, `upstream.test:${port}`);
  const expected = createHash('sha256');
  for (let off = 0; off < total; off += block.length) {
    for (let i = 0; i < block.length; i += 4) block.writeUInt32BE((off + i) >>> 0, i);
    expected.update(block);
  }
  const got = createHash('sha256');
  let n = 0;
  let pauses = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (d: Buffer) => {
      got.update(d);
      n += d.length;
      // Stall now and then, long enough for the proxy to pause the upstream.
      if (n > (pauses + 1) * 6 * 1024 * 1024) {
        pauses++;
        socket.pause();
        setTimeout(() => socket.resume(), 30);
      }
    });
    socket.on('end', resolve);
    socket.on('error', reject);
    socket.resume();
  });
  t.equal(n, total, 'every byte arrived');
  t.equal(got.digest('hex'), expected.digest('hex'), 'in order, none overwritten');
  t.ok(pauses >= 5);
});
