// The agent's proxy relay (Docker mode): 127.0.0.1:8080 inside the container piped to the
// credential proxy's Unix socket. Bytes go through unchanged both ways, a missing proxy closes the
// client's connection, and the number of relayed connections is bounded.
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { createProxyRelay } from '../../agent/relay.ts';
import { createLogger } from '../../lib/log.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';
import { tempDir } from './harness.ts';

async function connect(port: number): Promise<Socket> {
  const s = createConnection(port, '127.0.0.1');
  await once(s, 'connect');
  return s;
}

/** Reads `bytes` bytes and leaves the connection open (an async iterator's break would destroy it). */
function read(s: Socket, bytes: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const onData = (c: Buffer) => {
      chunks.push(c);
      n += c.length;
      if (n >= bytes) {
        s.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    s.on('data', onData);
  });
}

t.test('relays bytes both ways to the Unix socket; closes when the proxy is absent; bounded', async (t) => {
  const dir = tempDir('ws-relay-');
  const socketPath = join(dir, 'proxy.sock');
  const logs = captureLogs();
  const relay = createProxyRelay(socketPath, createLogger({ name: 'agent', level: 'debug', destination: logs.destination }), 2);
  const { port } = await listenLocal(relay.server);
  t.teardown(() => relay.close());

  const gone = await connect(port);
  await once(gone, 'close');
  t.pass('no proxy listening: the client is closed, the relay keeps running');

  const upstream = createServer((s) => s.on('data', (d: Buffer) => s.write(Buffer.concat([Buffer.from('echo:'), d]))));
  upstream.listen(socketPath);
  await once(upstream, 'listening');
  t.teardown(() => closeServer(upstream));

  const binary = Buffer.from([0, 255, 13, 10, 67]);
  const a = await connect(port);
  a.write(binary);
  t.same(await read(a, 10), Buffer.concat([Buffer.from('echo:'), binary]), 'bytes unchanged');
  const b = await connect(port);
  b.write('x');
  t.equal((await read(b, 6)).toString(), 'echo:x');
  t.equal(relay.open, 2);
  const c = await connect(port);
  await once(c, 'close');
  t.pass('a third connection past the bound of 2 is closed');
  t.ok(logs.lines().some((l) => l.msg === 'proxy relay full: connection closed'), 'and says why');
  a.destroy();
  b.destroy();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(relay.open, 0, 'closed connections are released');
});
