// The tunnel relay (lib/relay.ts) between real sockets: a TCP upstream that sends as fast as it can,
// and a client behind an accepted socket that reads fast, or not at all.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { DownloadRelay, RELAY_BUFFER_BYTES, RELAY_BUFFERS, startRelay } from '../../lib/relay.ts';

const MiB = 1024 * 1024;

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

/** An upstream sending `bytes` of a fixed pattern, the relay's client socket, and the far reader. */
async function tunnel(t: Test, bytes: number) {
  const pattern = Buffer.alloc(MiB, 7);
  for (let i = 0; i < pattern.length; i++) pattern[i] = i % 251;
  const upstreamServer = createServer((s) => {
    s.on('error', () => s.destroy());
    let left = bytes;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, pattern.length);
        left -= n;
        if (!s.write(pattern.subarray(0, n))) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
  const accepted: Socket[] = [];
  const clientServer = createServer((s) => accepted.push(s));
  const [upPort, clientPort] = await Promise.all([listen(upstreamServer), listen(clientServer)]);
  t.teardown(() => {
    for (const s of accepted) s.destroy();
    upstreamServer.close();
    clientServer.close();
  });
  const reader = connect({ port: clientPort, host: '127.0.0.1' });
  await once(clientServer, 'connection');
  const client = accepted[0]!;
  const relay = new DownloadRelay(client);
  const upstream = connect({ port: upPort, host: '127.0.0.1', onread: relay.onread });
  relay.source = upstream;
  t.teardown(() => {
    upstream.destroy();
    reader.destroy();
  });
  await once(upstream, 'connect');
  startRelay(client, upstream, relay, Buffer.alloc(0));
  // As the tunnels do: the upstream's end ends the client's side.
  upstream.once('close', () => client.end());
  return { client, reader, upstream, pattern };
}

t.test('a fast client gets every byte in order, through the pooled buffers', async (t) => {
  const bytes = 256 * MiB;
  const { reader, pattern } = await tunnel(t, bytes);
  const expected = createHash('sha256');
  for (let left = bytes; left > 0; left -= MiB) expected.update(pattern.subarray(0, Math.min(left, MiB)));
  const got = createHash('sha256');
  let received = 0;
  reader.on('data', (c: Buffer) => {
    got.update(c);
    received += c.length;
  });
  await once(reader, 'end');
  t.equal(received, bytes);
  t.equal(got.digest('hex'), expected.digest('hex'), 'the bytes arrive intact and in order');
});

t.test('a client that never reads pins a bounded number of relay buffers: the upstream is paused', async (t) => {
  const { client, reader, upstream } = await tunnel(t, 512 * MiB);
  reader.pause();
  // Let the kernel buffers on both sides fill and the relay settle.
  let last = -1;
  while (upstream.bytesRead !== last) {
    last = upstream.bytesRead;
    await new Promise((r) => setTimeout(r, 200));
  }
  t.ok(upstream.bytesRead < 64 * MiB, `the upstream was paused after ${(upstream.bytesRead / MiB).toFixed(1)} MiB (kernel buffers included)`);
  t.ok(client.writableLength <= RELAY_BUFFERS * RELAY_BUFFER_BYTES, `at most ${RELAY_BUFFERS} relay buffers queued for the client (${client.writableLength} bytes)`);
});
