// No input may end the webhook. Generated requests (methods, paths, header
// blocks, AdmissionReview bodies whose fields hold hostile JSON) go to a live webhook over raw TLS
// connections; afterwards it must still answer /healthz and must not have hit an error it did not
// expect (each would be a bug, logged with WS_ERR_INTERNAL and counted). CI: fixed seed, bounded
// runs; more on demand: FUZZ_RUNS=5000 FUZZ_SEED=7 npx tap test/webhook/fuzz.test.ts
import t from 'tap';
import { connect } from 'node:tls';
import fc from 'fast-check';
import { UNEXPECTED_ERROR_MSG } from '../../lib/guard.ts';
import { DEFAULT_INJECTION_CONFIG } from '../../webhook/config.ts';
import { fuzzParameters, headerBlock, jsonBody, method, rawRequest, statusOf } from '../helpers/fuzz.ts';
import { podArb } from './arbitraries.ts';
import { startWebhook } from './helpers.ts';

/** Writes `data` over TLS and resolves with the status of the answer (0: none, the connection closed). */
function sendTls(port: number, ca: string, data: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
    let raw = '';
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(statusOf(raw));
    };
    const timer = setTimeout(done, 5000);
    s.setEncoding('latin1');
    s.on('data', (chunk: string) => {
      raw += chunk;
      if (/\r\n\r\n/.test(raw)) setTimeout(done, 50);
    });
    s.on('error', done);
    s.on('close', done);
    s.write(data);
  });
}

/** Mostly `value` (so the body gets past the envelope checks to inject), sometimes anything. */
const mostly = <T>(value: T) => fc.oneof({ weight: 6, arbitrary: fc.constant(value) as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: fc.jsonValue() });
const gvk = mostly({ group: '', version: 'v1', kind: 'Pod' });
const review = fc.record({
  apiVersion: mostly('admission.k8s.io/v1'),
  kind: mostly('AdmissionReview'),
  request: fc.oneof(
    fc.record({
      uid: fc.oneof({ weight: 6, arbitrary: fc.uuid() as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: fc.jsonValue() }),
      kind: gvk,
      resource: fc.jsonValue(),
      subResource: fc.option(fc.jsonValue(), { nil: undefined }),
      operation: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('CREATE', 'CREATE', 'UPDATE', 'DELETE') as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: fc.jsonValue() }),
      namespace: mostly('sandboxes'),
      name: fc.jsonValue(),
      dryRun: fc.jsonValue(),
      object: fc.oneof({ weight: 3, arbitrary: podArb as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: fc.jsonValue() }, { weight: 1, arbitrary: jsonBody }),
      oldObject: fc.jsonValue(),
    }, { requiredKeys: ['uid', 'kind', 'operation', 'object'] }),
    fc.jsonValue(),
  ),
}, { requiredKeys: ['apiVersion', 'kind', 'request'] });

t.test('webhook: no request ends it or reaches an unexpected error, and it still answers /healthz', async (t) => {
  const webhook = await startWebhook(t, { injection: DEFAULT_INJECTION_CONFIG });
  const port = Number(new URL(webhook.url).port);
  const ca = webhook.server.devCaPem!;
  const statuses = new Map<number, number>();
  const count = (s: number) => statuses.set(s, (statuses.get(s) ?? 0) + 1);

  // AdmissionReview bodies, well framed, with hostile content.
  await fc.assert(fc.asyncProperty(fc.oneof({ weight: 4, arbitrary: review as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: fc.jsonValue() }), async (body) => {
    const text = JSON.stringify(body) ?? 'null';
    const status = await sendTls(port, ca, rawRequest('POST', '/mutate', ['Host: localhost', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(text)}`, 'Connection: close'], text));
    count(status);
    return status === 200 || status === 400;
  }), fuzzParameters(150));

  // Request lines and header blocks: any method, path and headers, any body.
  await fc.assert(fc.asyncProperty(method, fc.oneof(fc.constantFrom('/mutate', '/healthz', '/readyz', '/metrics', '*', '/mutate?x=%zz'), fc.webPath(), fc.string({ unit: 'binary-ascii', maxLength: 60 })), headerBlock, fc.string({ maxLength: 200 }), async (m, path, headers, body) => {
    count(await sendTls(port, ca, rawRequest(m, path, headers, body)));
    return true;
  }), fuzzParameters(150));

  t.comment(`answers: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.equal((await webhook.post({})).status, 400, 'still answering reviews');
  const health = await sendTls(port, ca, rawRequest('GET', '/healthz', ['Host: localhost', 'Connection: close']));
  t.equal(health, 200, 'still answers /healthz');
  t.same(webhook.logs.find(UNEXPECTED_ERROR_MSG), [], 'no error the webhook did not expect');
  t.notOk(statuses.has(500), 'no 500');
});
