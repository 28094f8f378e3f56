import t from 'tap';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { readBody } from '../../lib/http.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';

t.test('readBody returns the whole body and refuses one past the limit, declared or received', async (t) => {
  const server = createServer((req, res) => {
    readBody(req, 1024).then(
      (body) => res.end(`ok ${body.length} ${body.toString('utf8').slice(0, 5)}`),
      (err: { code?: string; message: string }) => {
        res.writeHead(413, { connection: 'close' });
        res.end(`${err.code} ${err.message}`);
      },
    );
  });
  const { url, port } = await listenLocal(server);
  t.teardown(() => closeServer(server));

  const ok = await fetch(url, { method: 'POST', body: 'hello world' });
  t.equal(await ok.text(), 'ok 11 hello');
  const empty = await fetch(url, { method: 'POST' });
  t.equal(await empty.text(), 'ok 0 ');

  const declared = await fetch(url, { method: 'POST', body: 'x'.repeat(2000) });
  t.equal(declared.status, 413);
  t.equal(await declared.text(), 'WS_ERR_PAYLOAD_TOO_LARGE request body exceeds 1024 bytes');

  // Chunked, so only the received size can tell.
  const chunked = await new Promise<string>((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write('POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
      for (let i = 0; i < 3; i++) s.write(`200\r\n${'y'.repeat(512)}\r\n`);
    });
    let out = '';
    s.on('data', (d: Buffer) => { out += d.toString(); });
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
  t.match(chunked, /^HTTP\/1\.1 413/);
  t.match(chunked, /WS_ERR_PAYLOAD_TOO_LARGE/);
});
