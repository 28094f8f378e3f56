import t from 'tap';
import { request, createServer, Agent } from 'node:http';
import { mkdtempSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createShutdown, listen } from '../../lib/server.ts';

function get(port: number, path: string, agent?: Agent): Promise<{ status: number; body: string; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('listen on port 0 resolves the bound port', async (t) => {
  const server = createServer((_req, res) => res.end('hi'));
  const addr = await listen(server, { port: 0, host: '127.0.0.1' });
  t.teardown(() => server.close());
  t.ok(addr.port! > 0);
  t.equal(addr.display, `127.0.0.1:${addr.port}`);
  t.equal((await get(addr.port!, '/')).body, 'hi');
});

t.test('listen on a Unix socket: stale socket replaced, mode applied, regular file refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-sock-'));
  const path = join(dir, 'agent.sock');
  // A stale socket left by a crashed process.
  const stale = createNetServer();
  await listen(stale, { path });
  await new Promise<void>((r) => { stale.close(() => r()); });
  const staleAgain = createNetServer();
  await listen(staleAgain, { path }); // leave the file behind by not closing cleanly
  staleAgain.unref();
  // Simulate a crash: close the handle without unlinking.
  (staleAgain as unknown as { _handle: { close(): void } | null })._handle?.close();

  const server = createServer((_req, res) => res.end('uds'));
  const addr = await listen(server, { path, mode: 0o660 });
  t.teardown(() => server.close());
  t.equal(addr.path, path);
  t.equal(statSync(path).mode & 0o777, 0o660);
  const body = await new Promise<string>((resolve, reject) => {
    request({ socketPath: path, path: '/' }, (res) => {
      let b = '';
      res.on('data', (c: Buffer) => { b += c.toString(); });
      res.on('end', () => resolve(b));
    }).on('error', reject).end();
  });
  t.equal(body, 'uds');

  const file = join(dir, 'not-a-socket');
  writeFileSync(file, 'data');
  await t.rejects(listen(createServer(), { path: file }), /is not a socket/);
  t.ok(existsSync(file), 'regular file left alone');
});

t.test('shutdown lets an in-flight request finish, refuses new ones, closes idle keep-alive sockets', async (t) => {
  let releaseSlow: () => void = () => {};
  let slowStarted: () => void = () => {};
  const started = new Promise<void>((r) => { slowStarted = r; });
  const server = createServer((req, res) => {
    if (req.url !== '/slow') return res.end('fast');
    releaseSlow = () => res.end('slow done');
    slowStarted();
  });
  const addr = await listen(server, { port: 0, host: '127.0.0.1' });
  const shutdown = createShutdown({ servers: [server], drainTimeoutMs: 5000 });
  const keepAlive = new Agent({ keepAlive: true });
  t.teardown(() => keepAlive.destroy());
  // An idle keep-alive connection that must not hold the shutdown up.
  t.equal((await get(addr.port!, '/fast', keepAlive)).body, 'fast');
  const slow = get(addr.port!, '/slow');
  await started;
  const done = shutdown('test');
  t.equal(shutdown.started, true);
  t.equal(shutdown('again'), done, 'idempotent');
  await t.rejects(get(addr.port!, '/fast'), { code: 'ECONNREFUSED' }, 'new connections refused');
  releaseSlow();
  const res = await slow;
  t.equal(res.status, 200);
  t.equal(res.body, 'slow done', 'in-flight request finished');
  t.equal(res.connection, 'close', 'answer sent during drain closes its connection');
  t.same(await done, { forced: false }, 'drained without force, idle keep-alive socket closed');
});

t.test('shutdown forces remaining connections closed after the drain timeout and runs hooks', async (t) => {
  const server = createServer(() => { /* never answers */ });
  const addr = await listen(server, { port: 0, host: '127.0.0.1' });
  const calls: string[] = [];
  const shutdown = createShutdown({
    servers: [server],
    drainTimeoutMs: 150,
    beforeDrain: () => { calls.push('before'); },
    afterDrain: async () => { calls.push('after'); },
  });
  const hung = get(addr.port!, '/hang').then(() => 'answered', (err: NodeJS.ErrnoException) => err.code);
  await new Promise<void>((r) => setTimeout(r, 50));
  const started = Date.now();
  t.same(await shutdown('test'), { forced: true });
  t.ok(Date.now() - started >= 100, 'waited for the drain');
  t.equal(await hung, 'ECONNRESET');
  t.same(calls, ['before', 'after']);
});
