import t from 'tap';
import express from 'express';
import { createServer } from 'node:http';
import { errorMiddleware } from '../../lib/http.ts';
import { WorkspaceSandboxError } from '../../lib/errors.ts';
import { createLogger } from '../../lib/log.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';

t.test('the error middleware answers stable codes and logs only server-side failures', async (t) => {
  const cap = captureLogs();
  const app = express();
  app.use(express.json({ limit: '1kb' }));
  app.post('/echo', (req, res) => { res.json(req.body); });
  app.get('/missing', () => { throw new WorkspaceSandboxError('WS_ERR_NOT_FOUND', 'no such thing'); });
  app.get('/boom', async () => { throw new Error('database password is hunter22'); });
  app.use(errorMiddleware(createLogger({ name: 't', destination: cap.destination })));
  const server = createServer(app);
  const { url } = await listenLocal(server);
  t.teardown(() => closeServer(server));

  const bad = await fetch(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":' });
  t.equal(bad.status, 400);
  t.equal(((await bad.json()) as { error: { code: string } }).error.code, 'WS_ERR_INVALID_JSON');

  const big = await fetch(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: 'x'.repeat(2000) }) });
  t.equal(big.status, 413);
  t.equal(((await big.json()) as { error: { code: string } }).error.code, 'WS_ERR_PAYLOAD_TOO_LARGE');

  const missing = await fetch(`${url}/missing`);
  t.equal(missing.status, 404);
  t.same(await missing.json(), { error: { code: 'WS_ERR_NOT_FOUND', message: 'no such thing' } });

  const boom = await fetch(`${url}/boom`);
  t.equal(boom.status, 500);
  t.same(await boom.json(), { error: { code: 'WS_ERR_INTERNAL', message: 'internal error' } });

  const logged = cap.find('request failed');
  t.equal(logged.length, 1, 'only the 500 is logged');
  t.equal(logged[0]!.path, '/boom');
});
