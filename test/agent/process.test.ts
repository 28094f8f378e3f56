// The agent as a real process through the bin: config errors, the Unix socket mode, SIGTERM with a
// command running, and the single-bundle constraint of the future single executable.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { BIN, NO_COVERAGE, REPO, call, frames, freePort, begin, spawnAgent, survivors, tempDir, waitFor, waitHealthy, type Frame } from './harness.ts';

function runBin(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, ...NO_COVERAGE, ...env }, timeout: 30_000 });
}

t.test('--help names the command and every variable', async (t) => {
  const r = runBin(['agent', '--help']);
  t.equal(r.status, 0);
  t.match(r.stdout, /workspace-sandbox agent/);
  for (const v of ['AGENT_LISTEN_MODE', 'AGENT_PORT', 'AGENT_SOCKET', 'AGENT_TOKEN_FILE', 'AGENT_WORKSPACE_ROOT', 'AGENT_MAX_CONCURRENT', 'LOG_LEVEL']) t.match(r.stdout, v);
});

t.test('a bad configuration lists every problem at once and exits 1', async (t) => {
  const root = tempDir();
  const r = runBin(['agent'], { AGENT_WORKSPACE_ROOT: root, AGENT_LISTEN_MODE: 'pipe', AGENT_PORT: 'eighty', AGENT_MAX_CONCURRENT: '0', AGENT_CHILD_ENV: 'PATH,AGENT_TOKEN_FILE' });
  t.equal(r.status, 1);
  t.match(r.stderr, /WS_ERR_CONFIG_INVALID/);
  t.match(r.stderr, /AGENT_LISTEN_MODE/);
  t.match(r.stderr, /AGENT_PORT/);
  t.match(r.stderr, /AGENT_MAX_CONCURRENT/);
  t.match(r.stderr, /AGENT_TOKEN_FILE.*belongs to the agent/);
});

// The file checks used to stop at the first one (a missing workspace root hid a bad token),
// and a test that left no root set passed only where another test had created /workspace on the host.
t.test('file problems are listed with the others: a missing workspace root, a weak token and a bad port all at once', async (t) => {
  const dir = tempDir();
  const missingRoot = join(dir, 'no-such-root');
  writeFileSync(join(dir, 't'), 'short');
  const r = runBin(['agent'], { AGENT_WORKSPACE_ROOT: missingRoot, AGENT_TOKEN_FILE: join(dir, 't'), AGENT_PORT: 'eighty' });
  t.equal(r.status, 1);
  t.match(r.stderr, /3 problems/);
  t.match(r.stderr, /AGENT_WORKSPACE_ROOT: must be an existing directory/);
  t.match(r.stderr, /no-such-root/);
  t.match(r.stderr, /AGENT_TOKEN_FILE: token must be at least 16 characters/);
  t.match(r.stderr, /AGENT_PORT/);
  const unreadable = runBin(['agent'], { AGENT_WORKSPACE_ROOT: missingRoot, AGENT_TOKEN_FILE: join(dir, 'absent') });
  t.match(unreadable.stderr, /2 problems/);
  t.match(unreadable.stderr, /AGENT_TOKEN_FILE: cannot read/);
});

t.test('uds mode: stale socket replaced, mode 0660, served, secrets kept from commands, socket removed at exit', async (t) => {
  const dir = tempDir('ws-uds-');
  const socketPath = join(dir, 'agent.sock');
  // A stale socket file from a crashed agent: bound by a process that exited without unlinking it.
  t.equal(spawnSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', socketPath]).status, 0);
  t.ok(lstatSync(socketPath).isSocket(), 'stale socket present');
  const tokenFile = join(dir, 'token');
  const token = 'uds-token-0123456789abcdef';
  writeFileSync(tokenFile, token);
  const root = tempDir('ws-root-');
  const proc = spawnAgent({
    AGENT_LISTEN_MODE: 'uds', AGENT_SOCKET: socketPath, AGENT_WORKSPACE_ROOT: root, AGENT_TOKEN_FILE: tokenFile,
    MY_DEPLOYMENT_SECRET: 'hush-hush-value',
  });
  t.teardown(() => { proc.child.kill('SIGKILL'); });
  const target = { socketPath };
  await waitHealthy(target, proc);
  t.equal(statSync(socketPath).mode & 0o777, 0o660, 'socket mode 0660');
  const auth = { authorization: `Bearer ${token}` };
  t.equal((await call(target, '/execute', { body: { cmd: ['true'] } })).status, 401, 'token required over the socket too');
  const r = (await call(target, '/execute', { body: { cmd: ['env'] }, headers: auth })).json<{ stdout: string }>();
  t.notMatch(r.stdout, /MY_DEPLOYMENT_SECRET|hush-hush|AGENT_|uds-token/, 'nothing of the agent\'s own environment or token');
  t.match(r.stdout, /^PATH=/m);
  t.equal((await call(target, '/files/hello.txt', { method: 'PUT', body: 'hi', headers: auth })).status, 201);
  proc.child.kill('SIGTERM');
  const exit = await proc.exited;
  t.equal(exit.code, 0, 'clean exit on SIGTERM');
  t.notOk(existsSync(socketPath), 'socket removed at exit');
  t.notMatch(proc.stdout(), /uds-token-0123456789abcdef/, 'token never logged');
  t.match(proc.stdout(), /"msg":"command"/);
});

t.test('SIGTERM with commands running: they end with agent_shutdown, every frame stream gets its exit frame, exit 0', async (t) => {
  const port = await freePort();
  const root = tempDir('ws-root-');
  const proc = spawnAgent({ AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port), AGENT_WORKSPACE_ROOT: root, AGENT_KILL_GRACE_MS: '300', AGENT_DRAIN_TIMEOUT_MS: '5000' });
  t.teardown(() => { proc.child.kill('SIGKILL'); });
  const target = { port };
  await waitHealthy(target, proc);
  const streamed = begin(target, '/execute', {
    body: { cmd: ['sh', '-c', "setsid sleep 100 & trap '' TERM; echo started; sleep 100"] },
    headers: { accept: 'application/x-ndjson' },
  });
  const buffered = begin(target, '/execute', { body: { cmd: ['sleep', '100'] } });
  const res = await streamed.response;
  const execId = res.headers['x-exec-id'] as string;
  const seen: Frame[] = [];
  const reading = (async () => { for await (const f of frames(res)) seen.push(f); })();
  t.ok(await waitFor(() => seen.some((f) => f.data === 'started\n'), 10_000), 'command running');
  proc.child.kill('SIGTERM');
  await reading;
  t.match(seen.at(-1), { type: 'exit', reason: 'agent_shutdown', execId });
  const b = await buffered.response;
  const body = await new Promise<string>((resolve) => { let s = ''; b.on('data', (c: Buffer) => { s += c; }); b.on('end', () => resolve(s)); });
  t.match(JSON.parse(body), { reason: 'agent_shutdown' });
  t.equal(b.headers.connection, 'close', 'answers during the drain close their connection');
  const exit = await proc.exited;
  t.equal(exit.code, 0);
  t.same(survivors(execId), [], 'the TERM-ignoring command and its escapee are gone');
  t.match(proc.stdout(), /"msg":"shutdown complete"/);
});

t.test('the agent bundles into one CommonJS file (no top-level await, no import.meta) that runs', async (t) => {
  const out = join(tempDir('ws-bundle-'), 'agent.cjs');
  const result = await build({
    stdin: {
      contents: "import { main } from './agent/main.ts';\nmain(process.argv.slice(2)).then((c) => { if (c) process.exitCode = c; });",
      resolveDir: REPO,
      loader: 'ts',
    },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    outfile: out,
    logLevel: 'silent',
    // As the single-executable build does: shared lib code may resolve lazily loaded modules from
    // import.meta.url; in the executable that is the binary's own URL.
    define: { 'import.meta.url': '__agentUrl' },
    banner: { js: 'const __agentUrl = require("node:url").pathToFileURL(process.execPath).href;' },
  });
  t.same(result.errors, []);
  t.same(result.warnings.map((w) => `${w.location?.file}: ${w.text}`), [], 'no warnings (import.meta, top-level await)');
  for (const file of readdirSync(join(REPO, 'agent')).filter((f) => f.endsWith('.ts'))) {
    t.notMatch(readFileSync(join(REPO, 'agent', file), 'utf8'), /import\.meta\.|^await /m, `agent/${file}: no import.meta, no top-level await`);
  }
  const help = spawnSync(process.execPath, [out, '--help'], { encoding: 'utf8', env: { PATH: process.env.PATH, ...NO_COVERAGE } });
  t.equal(help.status, 0);
  t.match(help.stdout, /AGENT_LISTEN_MODE/);
  const port = await freePort();
  const proc = spawnAgent({ AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port), AGENT_WORKSPACE_ROOT: tempDir() }, { command: [process.execPath, out] });
  t.teardown(() => { proc.child.kill('SIGKILL'); });
  await waitHealthy({ port }, proc);
  t.equal((await call({ port }, '/execute', { body: { cmd: ['echo', 'bundled'] } })).json().stdout, 'bundled\n');
  proc.child.kill('SIGTERM');
  t.equal((await proc.exited).code, 0);
});
