// No input may end the agent (it is the workspace container's main process:
// its exit restarts the workspace). Generated requests go over raw sockets to a real agent process:
// request lines and header blocks, /execute JSON bodies, /files names and bodies, tar uploads
// (random bytes and mutated real archives). Afterwards it must still answer /health, and must not
// have hit an error it did not expect (logged with WS_ERR_INTERNAL and counted). CI: fixed seed,
// bounded runs; more on demand: FUZZ_RUNS=5000 FUZZ_SEED=7 npx tap test/agent/fuzz.test.ts
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { UNEXPECTED_ERROR_MSG } from '../../lib/guard.ts';
import { fuzzParameters, headerBlock, jsonBody, method, rawRequest, sendRaw, stillServing } from '../helpers/fuzz.ts';
import { freePort, spawnAgent, tempDir, waitHealthy } from './harness.ts';
import { pythonTar } from './tar-fixtures.ts';

const TOKEN = 'fuzz-token-0123456789abcdef';

/** Names as a client might put them in /files/<name>: nested, encoded, dotted, long, binary. */
const fileName = fc.oneof(
  fc.webPath(),
  fc.constantFrom('', '.', '..', '../x', '%2e%2e/x', '%', '%zz', '%00', 'a/./b', 'a//b', '~', 'a'.repeat(256), `${'d/'.repeat(2100)}f`, '%E2%82', '\\..\\x'),
  fc.array(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).map(encodeURIComponent), { minLength: 1, maxLength: 4 }).map((p) => p.join('/')),
  fc.integer({ min: 200, max: 5000 }).map((n) => 'n'.repeat(n)),
);

const query = fc.oneof(fc.constant(''), fc.constantFrom('?list', '?recursive', '?mode=0644', '?mode=7777', '?mode=', '?list&recursive', '?%zz'), fc.string({ unit: 'binary-ascii', maxLength: 20 }).map((q) => `?${q}`));

/**
 * /execute bodies: arbitrary JSON and request-shaped objects with hostile fields. The programs are a
 * fixed harmless set (a random argv could name a real program; a random shell script could do
 * anything): the fuzzing is of the request's decoding, not of what runs.
 */
const executeBody = fc.oneof(
  jsonBody,
  fc.record({
    cmd: fc.oneof(fc.tuple(fc.constantFrom('true', 'echo', '/bin/true', 'no-such-program', '', 'printf'), fc.array(fc.string(), { maxLength: 3 })).map(([c, a]) => [c, ...a]), fc.jsonValue()),
    shell: fc.oneof(fc.constant(false), fc.jsonValue().filter((v) => v !== true)),
    cwd: fc.oneof(fc.constantFrom('.', 'sub', '/', '/nonexistent', '..', ''), fc.string(), fc.jsonValue()),
    env: fc.oneof(fc.dictionary(fc.string({ maxLength: 10 }), fc.oneof(fc.string(), fc.jsonValue())), fc.jsonValue()),
    stdin: fc.oneof(fc.string({ maxLength: 50 }), fc.record({ base64: fc.oneof(fc.base64String({ maxLength: 40 }), fc.string()) }), fc.jsonValue()),
    timeoutMs: fc.oneof(fc.integer({ min: -5, max: 2000 }), fc.double(), fc.jsonValue()),
    maxOutputBytes: fc.oneof(fc.integer({ min: -5, max: 100_000 }), fc.double(), fc.jsonValue()),
    encoding: fc.oneof(fc.constantFrom('utf8', 'base64', 'hex'), fc.jsonValue()),
  }, { requiredKeys: [] }),
);

t.test('agent: no request ends it or reaches an unexpected error, and it still answers /health', async (t) => {
  const dir = tempDir('ws-fuzz-');
  writeFileSync(join(dir, 'token'), TOKEN);
  const root = tempDir('ws-fuzz-root-');
  const port = await freePort();
  const proc = spawnAgent({ AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port), AGENT_WORKSPACE_ROOT: root, AGENT_TOKEN_FILE: join(dir, 'token'), AGENT_KILL_GRACE_MS: '100', AGENT_MAX_FILE_BYTES: '100000', AGENT_MAX_UPLOAD_BYTES: '1000000' });
  t.teardown(() => { proc.child.kill('SIGKILL'); });
  const endpoint = { port };
  await waitHealthy(endpoint, proc);
  const auth: fc.Arbitrary<readonly string[]> = fc.oneof({ weight: 4, arbitrary: fc.constant([`Authorization: Bearer ${TOKEN}`]) }, { weight: 1, arbitrary: fc.constant<string[]>([]) }, { weight: 1, arbitrary: fc.constantFrom(['Authorization: Bearer wrong'], ['Authorization: Basic x'], ['Authorization: Bearer']) });
  const framed = (headers: readonly string[], body: Buffer) => [...headers, 'Host: agent', `Content-Length: ${body.length}`, 'Connection: close'];
  const statuses = new Map<number, number>();
  const send = async (data: Buffer) => {
    const r = await sendRaw(endpoint, data, { timeoutMs: 10_000 });
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    return r.status;
  };

  // Request lines and header blocks on every route.
  await fc.assert(fc.asyncProperty(method, fc.constantFrom('/health', '/execute', '/files', '/files/', '/metrics', '/nope', '*', '/files/x'), query, headerBlock, auth, fc.string({ maxLength: 200 }), async (m, path, q, headers, a, body) => {
    await send(rawRequest(m, `${path}${q}`, [...a, ...headers], body));
    return true;
  }), fuzzParameters(100));

  // /execute JSON bodies (well framed, so they reach the decoder).
  await fc.assert(fc.asyncProperty(executeBody, auth, fc.constantFrom('application/json', 'application/x-ndjson'), async (body, a, accept) => {
    const data = Buffer.from(JSON.stringify(body) ?? 'null');
    const status = await send(rawRequest('POST', '/execute', [...framed(a, data), 'Content-Type: application/json', `Accept: ${accept}`], data));
    return status !== 500 && status !== 0;
  }), fuzzParameters(150));

  // /files names, queries and bodies.
  await fc.assert(fc.asyncProperty(fc.constantFrom('GET', 'PUT', 'DELETE', 'POST', 'HEAD'), fileName, query, fc.uint8Array({ maxLength: 300 }), async (m, name, q, bytes) => {
    const body = Buffer.from(bytes);
    const status = await send(rawRequest(m, `/files/${name}${q}`, [...framed([`Authorization: Bearer ${TOKEN}`], body), 'Content-Type: application/octet-stream'], body));
    return status !== 500 && status !== 0;
  }), fuzzParameters(150));

  // Tar uploads: random bytes, and real archives (with links) with bytes overwritten at random.
  const base = pythonTar([
    { name: 'dir', type: 'dir' }, { name: 'dir/a.txt', data: 'alpha' }, { name: 'dir/l', type: 'symlink', linkname: 'a.txt' },
    { name: `p/${'x'.repeat(150)}`, data: 'long' }, { name: 'k/up', type: 'symlink', linkname: '..' },
  ]);
  await fc.assert(fc.asyncProperty(fc.oneof(
    fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)),
    fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 20 }).map((edits) => {
      const b = Buffer.from(base);
      for (const [at, v] of edits) b[at] = v;
      return b;
    }),
    fc.nat(base.length).map((n) => base.subarray(0, n)),
  ), fileName, async (tar, dest) => {
    const status = await send(rawRequest('POST', `/files/${dest}`, [...framed([`Authorization: Bearer ${TOKEN}`], tar), 'Content-Type: application/x-tar'], tar));
    return status !== 500 && status !== 0;
  }), fuzzParameters(150));

  t.comment(`answers: ${JSON.stringify(Object.fromEntries(statuses))}`);
  t.ok(await stillServing(endpoint, '/health'), 'still answers /health');
  t.equal(proc.child.exitCode, null, 'the agent process is running');
  t.notMatch(proc.stdout(), UNEXPECTED_ERROR_MSG, 'no error the agent did not expect');
  const metrics = await sendRaw(endpoint, rawRequest('GET', '/metrics', ['Host: agent', `Authorization: Bearer ${TOKEN}`, 'Connection: close']));
  t.equal(metrics.status, 200, '/metrics answers with the token');
  t.match(metrics.raw, /unexpected_errors_total/, 'the guard\'s counter is exported');
  t.notMatch(metrics.raw, /unexpected_errors_total\{[^}]*\} [1-9]/, 'and it never counted');
  t.equal((await sendRaw(endpoint, rawRequest('GET', '/metrics', ['Host: agent', 'Connection: close']))).status, 401, '/metrics needs the token');
});
