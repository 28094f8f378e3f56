import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { begin, call, open, startAgent, stream, tempDir, type Frame } from './harness.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('buffered: exit code, both streams, reason, durations, exec id header', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const r = await call(a.target, '/execute', { body: { cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'] } });
  t.equal(r.status, 200);
  const b = r.json();
  t.match(b, {
    exitCode: 3, signal: null, reason: 'exited', stdout: 'out\n', stderr: 'err\n',
    stdoutTruncatedBytes: 0, stderrTruncatedBytes: 0, stdoutBytes: 4, stderrBytes: 4, encoding: 'utf8',
  });
  t.type(b.durationMs, 'number');
  t.equal(r.headers['x-exec-id'], b.execId);
});

t.test('a command killed by a signal it did not get from the agent reports reason signal', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const b = (await call(a.target, '/execute', { body: { cmd: ['sh', '-c', 'kill -KILL $$'] } })).json();
  t.match(b, { exitCode: null, signal: 'SIGKILL', reason: 'signal' });
});

t.test('shell: true runs cmd[0] through /bin/sh -c with the rest as $1..', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const b = (await call(a.target, '/execute', { body: { cmd: ['echo "$1-$2" | tr a-z A-Z', 'ab', 'cd'], shell: true } })).json();
  t.equal(b.stdout, 'AB-CD\n');
});

t.test('large binary output round-trips byte-exact in base64, buffered and streamed', async (t) => {
  const a = await startAgent({ AGENT_MAX_OUTPUT_BYTES_LIMIT: String(32 * 1024 * 1024) });
  t.teardown(a.close);
  const data = randomBytes(6 * 1024 * 1024 + 123);
  writeFileSync(join(a.root, 'blob.bin'), data);

  const buffered = (await call(a.target, '/execute', {
    body: { cmd: ['cat', 'blob.bin'], encoding: 'base64', maxOutputBytes: 16 * 1024 * 1024 },
  })).json<{ stdout: string; stdoutTruncatedBytes: number; encoding: string }>();
  t.equal(buffered.encoding, 'base64');
  t.equal(buffered.stdoutTruncatedBytes, 0);
  t.equal(sha256(Buffer.from(buffered.stdout, 'base64')), sha256(data), 'buffered bytes identical');

  const s = await stream(a.target, { cmd: ['cat', 'blob.bin'], encoding: 'base64' });
  const parts = s.frames.filter((f) => f.type === 'stdout');
  t.ok(parts.length > 1, `output arrived in ${parts.length} frames`);
  let expected = 0;
  for (const f of parts) {
    t.equal(f.offset, expected, 'offsets are contiguous byte offsets');
    expected += Buffer.from(f.data!, 'base64').length;
  }
  const streamed = Buffer.concat(parts.map((f) => Buffer.from(f.data!, 'base64')));
  t.equal(sha256(streamed), sha256(data), 'streamed bytes identical');
  t.match(s.frames.at(-1), { type: 'exit', reason: 'exited', exitCode: 0, stdoutBytes: data.length });
});

t.test('UTF-8: a character split across pipe writes is never split across frames or mangled', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  // "€" is E2 82 AC and "😀" is F0 9F 98 80; each is written in pieces with pauses so the agent
  // reads them in separate chunks.
  const script = "printf 'a\\342'; sleep 0.15; printf '\\202'; sleep 0.15; printf '\\254b\\360\\237'; sleep 0.15; printf '\\230\\200c'";
  const s = await stream(a.target, { cmd: ['sh', '-c', script] });
  const parts = s.frames.filter((f) => f.type === 'stdout');
  t.ok(parts.length >= 2, `several frames (${parts.length})`);
  t.equal(parts.map((f) => f.data).join(''), 'a€b😀c');
  for (const f of parts) t.notMatch(f.data!, /\uFFFD/, 'no replacement characters');
  let offset = 0;
  for (const f of parts) {
    t.equal(f.offset, offset);
    offset += Buffer.byteLength(f.data!);
  }
  const b = (await call(a.target, '/execute', { body: { cmd: ['sh', '-c', script] } })).json();
  t.equal(b.stdout, 'a€b😀c', 'buffered mode too');
});

t.test('UTF-8: a stream that really ends inside a character still delivers its bytes', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const s = await stream(a.target, { cmd: ['sh', '-c', "printf 'x\\342\\202'"] });
  const parts = s.frames.filter((f) => f.type === 'stdout');
  t.equal(parts.map((f) => f.data).join(''), 'x\uFFFD', 'invalid trailing bytes become one replacement character');
  t.match(s.frames.at(-1), { stdoutBytes: 3, stdoutTruncatedBytes: 0 });
});

t.test('stdin: a string or {base64}, closed after writing', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const text = (await call(a.target, '/execute', { body: { cmd: ['cat'], stdin: 'hello ✓\n' } })).json();
  t.equal(text.stdout, 'hello ✓\n');
  const bin = randomBytes(300_000);
  const b = (await call(a.target, '/execute', { body: { cmd: ['sha256sum'], stdin: { base64: bin.toString('base64') } } })).json();
  t.equal((b.stdout as string).split(' ')[0], sha256(bin));
  const none = (await call(a.target, '/execute', { body: { cmd: ['cat'], timeoutMs: 5000 } })).json();
  t.match(none, { reason: 'exited', exitCode: 0, stdout: '' }, 'no stdin: EOF at once, not a hang');
});

t.test('cwd: the workspace root by default, relative to it otherwise, and it must exist', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  mkdirSync(join(a.root, 'sub'));
  t.equal((await call(a.target, '/execute', { body: { cmd: ['pwd'] } })).json().stdout, `${a.agent.workspace.root}\n`);
  t.equal((await call(a.target, '/execute', { body: { cmd: ['pwd'], cwd: 'sub' } })).json().stdout, `${a.agent.workspace.root}/sub\n`);
  t.equal((await call(a.target, '/execute', { body: { cmd: ['pwd'], cwd: '/tmp' } })).json().stdout, '/tmp\n');
  const missing = await call(a.target, '/execute', { body: { cmd: ['pwd'], cwd: 'nope' } });
  t.equal(missing.status, 400);
  t.match(missing.json(), { error: { code: 'WS_ERR_VALIDATION', message: /cwd .*nope.* not an existing directory/ } });
});

t.test('env: merged over a clean base; the agent\'s own variables and token never reach the child', async (t) => {
  const dir = tempDir();
  const tokenFile = join(dir, 'token');
  const token = 'tok-' + randomBytes(16).toString('hex');
  writeFileSync(tokenFile, `${token}\n`);
  const a = await startAgent({
    AGENT_TOKEN_FILE: tokenFile,
    HTTPS_PROXY: 'http://127.0.0.1:8080',
    SOME_AGENT_SECRET: 'do-not-leak-me',
    NODE_OPTIONS: '--inspect',
    LANG: 'en_US.UTF-8',
  });
  t.teardown(a.close);
  const r = await call(a.target, '/execute', {
    headers: { authorization: `Bearer ${token}` },
    body: { cmd: ['env'], env: { FOO: 'bar', LANG: 'C.UTF-8' } },
  });
  const env = Object.fromEntries((r.json().stdout as string).trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  t.equal(env.FOO, 'bar', 'request env applied');
  t.equal(env.LANG, 'C.UTF-8', 'request env wins over the base');
  t.equal(env.HTTPS_PROXY, 'http://127.0.0.1:8080', 'proxy settings pass through');
  t.ok(env.PATH, 'PATH set');
  t.match(env.WORKSPACE_SANDBOX_EXEC_ID, /^[0-9a-f]{24}$/, 'exec id tag set');
  // (tap's process tracking adds its own NODE_OPTIONS to every spawn of the test process.)
  t.not(env.NODE_OPTIONS, '--inspect', 'the agent\'s NODE_OPTIONS not inherited');
  for (const k of ['SOME_AGENT_SECRET', 'AGENT_TOKEN_FILE', 'AGENT_WORKSPACE_ROOT', 'AGENT_KILL_GRACE_MS']) t.notOk(k in env, `${k} not inherited`);
  t.notOk(r.body.toString().includes(token), 'token value not visible');
  const spoof = await call(a.target, '/execute', {
    headers: { authorization: `Bearer ${token}` },
    body: { cmd: ['true'], env: { WORKSPACE_SANDBOX_EXEC_ID: 'x' } },
  });
  t.equal(spoof.status, 400, 'the exec id cannot be set by the caller');
});

t.test('bad input: stable codes, never a crash', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  writeFileSync(join(a.root, 'data.txt'), 'not a program', { mode: 0o644 });
  const cases: [string, Parameters<typeof call>[2], number, string][] = [
    ['malformed JSON', { method: 'POST', body: '{"cmd": [', headers: { 'content-type': 'application/json' } }, 400, 'WS_ERR_INVALID_JSON'],
    ['not an object', { body: [1, 2] }, 400, 'WS_ERR_VALIDATION'],
    ['cmd missing', { body: {} }, 400, 'WS_ERR_VALIDATION'],
    ['empty cmd', { body: { cmd: [] } }, 400, 'WS_ERR_VALIDATION'],
    ['empty cmd[0]', { body: { cmd: [''] } }, 400, 'WS_ERR_VALIDATION'],
    ['cmd not strings', { body: { cmd: ['echo', 1] } }, 400, 'WS_ERR_VALIDATION'],
    ['cmd a string', { body: { cmd: 'ls -la' } }, 400, 'WS_ERR_VALIDATION'],
    ['NUL in argv', { body: { cmd: ['echo', 'a\0b'] } }, 400, 'WS_ERR_VALIDATION'],
    ['unknown field', { body: { cmd: ['true'], timeoutMS: 5 } }, 400, 'WS_ERR_VALIDATION'],
    ['timeout not a number', { body: { cmd: ['true'], timeoutMs: '5' } }, 400, 'WS_ERR_VALIDATION'],
    ['timeout over the max', { body: { cmd: ['true'], timeoutMs: 10 ** 12 } }, 400, 'WS_ERR_VALIDATION'],
    ['negative output cap', { body: { cmd: ['true'], maxOutputBytes: -1 } }, 400, 'WS_ERR_VALIDATION'],
    ['bad encoding', { body: { cmd: ['true'], encoding: 'latin1' } }, 400, 'WS_ERR_VALIDATION'],
    ['bad stdin', { body: { cmd: ['true'], stdin: { base64: '***' } } }, 400, 'WS_ERR_VALIDATION'],
    ['env not strings', { body: { cmd: ['true'], env: { A: 1 } } }, 400, 'WS_ERR_VALIDATION'],
    ['env name with =', { body: { cmd: ['true'], env: { 'A=B': 'c' } } }, 400, 'WS_ERR_VALIDATION'],
    ['missing command', { body: { cmd: ['/no/such/binary'] } }, 400, 'WS_ERR_SPAWN_FAILED'],
    ['not executable', { body: { cmd: ['./data.txt'] } }, 400, 'WS_ERR_SPAWN_FAILED'],
    ['wrong media type', { method: 'POST', body: 'cmd=ls', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415, 'WS_ERR_UNSUPPORTED_MEDIA_TYPE'],
    ['too large', { body: { cmd: ['true'], stdin: 'x'.repeat(17 * 1024 * 1024) } }, 413, 'WS_ERR_PAYLOAD_TOO_LARGE'],
    ['wrong method', { method: 'GET' }, 405, 'WS_ERR_METHOD_NOT_ALLOWED'],
  ];
  for (const [name, opts, status, code] of cases) {
    const r = await call(a.target, '/execute', opts);
    t.equal(r.status, status, `${name}: status`);
    t.equal(r.json<{ error: { code: string } }>().error.code, code, `${name}: code`);
  }
  const unknownRoute = await call(a.target, '/nope');
  t.equal(unknownRoute.status, 404);
  t.equal((await call(a.target, '/health')).status, 200, 'still serving after all that');
});

t.test('output cap: head and tail kept, dropped bytes reported, never split inside a character', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  // 5000 lines "line N\n", capped at 1000 bytes: the first 500 and the last 500 bytes.
  const script = 'i=0; while [ $i -lt 5000 ]; do echo "line $i"; i=$((i+1)); done';
  const b = (await call(a.target, '/execute', { body: { cmd: ['sh', '-c', script], maxOutputBytes: 1000 } })).json<{ stdout: string; stdoutBytes: number; stdoutTruncatedBytes: number }>();
  const full = Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join('');
  t.equal(b.stdoutBytes, full.length);
  t.equal(b.stdoutTruncatedBytes, full.length - 1000);
  t.equal(b.stdout, full.slice(0, 500) + full.slice(-500), 'head + tail');

  // Three-byte characters with a cap that cuts through them: the cut moves to a boundary.
  const euros = '€'.repeat(2000); // 6000 bytes
  const u = (await call(a.target, '/execute', { body: { cmd: ['cat'], stdin: euros, maxOutputBytes: 1001 } })).json<{ stdout: string; stdoutTruncatedBytes: number }>();
  t.notMatch(u.stdout, /\uFFFD/, 'no replacement characters');
  t.match(u.stdout, /^€+$/);
  t.equal(Buffer.byteLength(u.stdout) + u.stdoutTruncatedBytes, 6000, 'kept + dropped = written');
  t.ok(Buffer.byteLength(u.stdout) <= 1001);

  const bin = (await call(a.target, '/execute', { body: { cmd: ['head', '-c', '100000', '/dev/zero'], maxOutputBytes: 10, encoding: 'base64' } })).json<{ stdout: string; stdoutTruncatedBytes: number }>();
  t.equal(Buffer.from(bin.stdout, 'base64').length, 10);
  t.equal(bin.stdoutTruncatedBytes, 99_990);
});

t.test('output cap: a huge output is capped without holding it (the command runs to its end)', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const b = (await call(a.target, '/execute', { body: { cmd: ['sh', '-c', 'head -c 100000000 /dev/zero; echo END'], maxOutputBytes: 4096 } })).json<{ stdout: string; stdoutBytes: number; reason: string }>();
  t.equal(b.reason, 'exited');
  t.equal(b.stdoutBytes, 100_000_004);
  t.ok(b.stdout.endsWith('END\n'), 'the tail is the real end');
});

t.test('streaming: maxOutputBytes ends the command with output_limit and still sends the exit frame', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const s = await stream(a.target, { cmd: ['sh', '-c', 'while :; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done'], maxOutputBytes: 100_000, timeoutMs: 30_000 });
  const sent = s.frames.filter((f) => f.type === 'stdout').reduce((n, f) => n + Buffer.byteLength(f.data!), 0);
  t.equal(sent, 100_000, 'exactly the limit was forwarded');
  const exit = s.frames.at(-1)!;
  t.match(exit, { type: 'exit', reason: 'output_limit' });
  t.equal((exit.stdoutBytes as number) - (exit.stdoutTruncatedBytes as number), 100_000, 'the rest is reported dropped');
  t.equal(s.frames.filter((f) => f.type === 'exit').length, 1, 'one exit frame');
});

t.test('streaming: stdout and stderr frames interleave as output arrives, exit frame last', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const { res } = await open(a.target, '/execute', {
    body: { cmd: ['sh', '-c', 'echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three'] },
    headers: { accept: 'application/x-ndjson' },
  });
  t.equal(res.headers['content-type'], 'application/x-ndjson');
  const seen: { frame: Frame; at: number }[] = [];
  const start = Date.now();
  const { frames } = await import('./harness.ts');
  for await (const frame of frames(res)) seen.push({ frame, at: Date.now() - start });
  t.same(seen.map((s) => [s.frame.type, s.frame.data ?? null]), [
    ['stdout', 'one\n'], ['stderr', 'two\n'], ['stdout', 'three\n'], ['exit', null],
  ]);
  t.ok(seen[0]!.at < seen[2]!.at, 'the first frame came before the command ended');
});

t.test('429 with Retry-After over the concurrency limit; a slot frees when a command ends', async (t) => {
  const a = await startAgent({ AGENT_MAX_CONCURRENT: '2' });
  t.teardown(a.close);
  // Buffered answers only come at the end: hold two commands without waiting for them.
  const held = [begin(a.target, '/execute', { body: { cmd: ['sleep', '30'] } }), begin(a.target, '/execute', { body: { cmd: ['sleep', '30'] } })];
  for (let i = 0; i < 500 && a.agent.running < 2; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(a.agent.running, 2);
  const third = await call(a.target, '/execute', { body: { cmd: ['true'] } });
  t.equal(third.status, 429);
  t.equal(third.headers['retry-after'], '1');
  t.equal(third.json<{ error: { code: string } }>().error.code, 'WS_ERR_TOO_MANY_REQUESTS');
  held[0]!.destroy(); // the client leaves: its command ends and frees the slot
  for (let i = 0; i < 500 && a.agent.running > 1; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(a.agent.running, 1, 'a client leaving frees its slot');
  const fourth = await call(a.target, '/execute', { body: { cmd: ['true'] } });
  t.equal(fourth.status, 200);
  held[1]!.destroy();
});

t.test('token: required on everything but /health, compared in full', async (t) => {
  const dir = tempDir();
  const token = randomBytes(24).toString('base64url');
  writeFileSync(join(dir, 'token'), token);
  const a = await startAgent({ AGENT_TOKEN_FILE: join(dir, 'token') });
  t.teardown(a.close);
  t.equal((await call(a.target, '/health')).status, 200, '/health open');
  for (const auth of [undefined, 'Bearer', `Bearer ${token.slice(0, -1)}`, `Bearer ${token}x`, `Basic ${token}`, token]) {
    const r = await call(a.target, '/execute', { body: { cmd: ['true'] }, headers: auth ? { authorization: auth } : {} });
    t.equal(r.status, 401, `refused: ${auth === undefined ? 'none' : auth.replace(token, '<token…>')}`);
    t.equal(r.json<{ error: { code: string } }>().error.code, 'WS_ERR_UNAUTHORIZED');
    t.match(r.headers['www-authenticate'], /^Bearer/);
  }
  t.equal((await call(a.target, '/files/?list', { headers: {} })).status, 401, '/files too');
  const ok = await call(a.target, '/execute', { body: { cmd: ['true'] }, headers: { authorization: `Bearer ${token}` } });
  t.equal(ok.status, 200);
  t.notOk(a.logs.text().includes(token), 'token never logged');
});

t.test('one log line per command: exec id, argv[0] only, reason, exit code, bytes, duration', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const b = (await call(a.target, '/execute', { body: { cmd: ['echo', 'password=hunter2-secret'] } })).json();
  await call(a.target, '/execute', { body: { cmd: ['echo "$1"', 'hunter2-secret'], shell: true } });
  const lines = a.logs.find('command');
  t.equal(lines.length, 2);
  t.match(lines[0], { execId: b.execId, argv0: 'echo', reason: 'exited', exitCode: 0, stdoutBytes: 24, stderrBytes: 0, durationMs: Number });
  t.equal(lines[1]!.argv0, '/bin/sh -c', 'a shell script is not logged');
  t.notOk(a.logs.text().includes('hunter2'), 'arguments never logged');
});

t.test('streaming back-pressure: a client that stops reading stalls the command instead of filling memory', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const progress = join(a.root, 'progress');
  const req = begin(a.target, '/execute', {
    body: { cmd: ['sh', '-c', 'i=0; while [ $i -lt 400 ]; do head -c 1048576 /dev/zero; i=$((i+1)); echo $i > progress; done'], encoding: 'base64' },
    headers: { accept: 'application/x-ndjson' },
  });
  const res = await req.response;
  res.pause(); // read nothing
  const read = () => Number(readFileSync(progress, 'utf8').trim() || 0);
  // Wait until the command stops making progress (it blocks on a full pipe).
  let last = -1;
  let stable = 0;
  for (let i = 0; i < 200 && stable < 5; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = existsSync(progress) ? read() : 0;
    stable = now === last ? stable + 1 : 0;
    last = now;
  }
  t.ok(last < 100, `the command stalled after ${last} of 400 MiB`);
  res.resume(); // now read everything: the command finishes
  let frames = 0;
  res.on('data', () => { frames++; });
  await new Promise((r) => res.on('end', r));
  t.equal(read(), 400, 'and completes once the client reads');
  t.ok(frames > 0);
});
