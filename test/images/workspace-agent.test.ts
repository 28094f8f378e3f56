// The agent as a single executable (scripts/build-agent-sea.ts): built here, copied alone into an
// empty directory (no node_modules, no Node on the PATH it needs), then driven over TCP and a Unix
// socket; and the same binary inside gVisor the way a workspace Pod runs it: /usr/local/bin from
// the image, read-only root, /workspace and /tmp as emptyDirs, uid 1000, PID 1.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, chmodSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pkg from '../../package.json' with { type: 'json' };
import { buildAgentSea, SEA_FUSE } from '../../scripts/build-agent-sea.ts';
import { pythonTar } from '../agent/tar-fixtures.ts';
import { fetchText, freePort, waitForAnswer } from './net.ts';
import { runscSkipReason, startSandbox } from './runsc.ts';

const ENTRYPOINT = fileURLToPath(new URL('../../examples/workspace-base/entrypoint.sh', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'ws-sea-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

// Built into its own directory (not dist/), from the sources as they are now.
const { output: binary } = await buildAgentSea(join(work, 'build', 'workspace-agent'));

/** An empty directory holding nothing but the executable. */
function isolatedCopy(): string {
  const dir = mkdtempSync(join(work, 'bin-'));
  chmodSync(dir, 0o755);
  copyFileSync(binary, join(dir, 'workspace-agent'));
  chmodSync(join(dir, 'workspace-agent'), 0o755);
  return dir;
}

// A clean environment: no NODE_PATH, NODE_OPTIONS or anything else from the test runner.
const BASE_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };

interface Running {
  child: ChildProcess;
  output: () => string;
  alive: () => boolean;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

function start(command: string, env: Record<string, string>, cwd: string): Running {
  const child = spawn(command, [], { cwd, env: { ...BASE_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  return { child, output: () => out, alive: () => child.exitCode === null && child.signalCode === null, exited };
}

/** The `t` of a subtest (the last overload of t.test takes only the callback). */
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

async function stop(r: Running, t: Tap): Promise<void> {
  r.child.kill('SIGTERM');
  const [code] = await r.exited;
  t.equal(code, 0, 'SIGTERM: clean exit');
}

const json = (headers: Record<string, string> = {}) => ({ 'content-type': 'application/json', ...headers });

t.test('the executable carries the agent (SEA fuse flipped) and answers --version and --help without Node', async (t) => {
  t.ok(readFileSync(binary).includes(`${SEA_FUSE}:1`), 'postject flipped the fuse: the blob is injected');
  const dir = isolatedCopy();
  const version = spawnSync('./workspace-agent', ['--version'], { cwd: dir, env: BASE_ENV, encoding: 'utf8' });
  t.equal(version.status, 0);
  t.equal(version.stdout.trim(), pkg.version);
  t.equal(version.stderr, '', 'no experimental-feature warning');
  const help = spawnSync('./workspace-agent', ['--help'], { cwd: dir, env: BASE_ENV, encoding: 'utf8' });
  t.equal(help.status, 0);
  t.match(help.stdout, /AGENT_LISTEN_MODE/);
  // A user image's NODE_OPTIONS (meant for the user's Node programs) must not reach the agent.
  const hostile = spawnSync('./workspace-agent', ['--version'], { cwd: dir, env: { ...BASE_ENV, NODE_OPTIONS: '--require=/nonexistent/preload.js' }, encoding: 'utf8' });
  t.equal(hostile.status, 0, 'NODE_OPTIONS is ignored');
  t.equal(hostile.stdout.trim(), pkg.version);
  const bad = spawnSync('./workspace-agent', ['frobnicate'], { cwd: dir, env: BASE_ENV, encoding: 'utf8' });
  t.equal(bad.status, 2, 'unexpected arguments are refused');
});

t.test('from an empty directory over TCP: /health, /execute and a tar upload', async (t) => {
  const dir = isolatedCopy();
  const workspace = mkdtempSync(join(work, 'ws-'));
  const port = await freePort();
  const agent = start(join(dir, 'workspace-agent'), { AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port), AGENT_WORKSPACE_ROOT: workspace }, dir);
  t.teardown(() => { agent.child.kill('SIGKILL'); });
  const base = `http://127.0.0.1:${port}`;

  const health = await waitForAnswer(`${base}/health`, { alive: agent.alive, output: agent.output });
  t.equal(health.status, 200);
  t.match(JSON.parse(health.body), { status: 'ok', version: pkg.version });

  const r = await fetchText(`${base}/execute`, { method: 'POST', headers: json(), body: JSON.stringify({ cmd: ['sh', '-c', 'pwd; echo out; echo err >&2; exit 3'] }) });
  t.equal(r.status, 200, 'POST /execute');
  t.match(JSON.parse(r.body), { exitCode: 3, reason: 'exited', stdout: `${workspace}\nout\n`, stderr: 'err\n' });

  const bin = await fetchText(`${base}/execute`, { method: 'POST', headers: json(), body: JSON.stringify({ cmd: ['printf', '\\377\\000'], encoding: 'base64' }) });
  t.equal(JSON.parse(bin.body).stdout, Buffer.from([0xff, 0x00]).toString('base64'), 'binary-safe output');

  const stream = await fetchText(`${base}/execute`, { method: 'POST', headers: json({ accept: 'application/x-ndjson' }), body: JSON.stringify({ cmd: ['echo', 'streamed'] }) });
  const frames = stream.body.trim().split('\n').map((l) => JSON.parse(l) as { type: string });
  t.equal(frames.at(-1)!.type, 'exit', 'a stream ends with its exit frame');

  const timeout = await fetchText(`${base}/execute`, { method: 'POST', headers: json(), body: JSON.stringify({ cmd: ['sh', '-c', 'sleep 100 & sleep 100'], timeoutMs: 300 }) });
  t.equal(JSON.parse(timeout.body).reason, 'timeout');

  // The batch upload's tar reader is in the executable too.
  const tar = pythonTar([{ name: 'd', type: 'dir', mode: 0o755 }, { name: `d/${'n'.repeat(120)}`, data: 'from a tar' }]);
  const up = await fetchText(`${base}/files/up`, { method: 'POST', headers: { 'content-type': 'application/x-tar' }, body: tar });
  t.equal(up.status, 200, 'POST /files (tar)');
  t.equal(readFileSync(join(workspace, 'up', 'd', 'n'.repeat(120)), 'utf8'), 'from a tar');
  const bad = await fetchText(`${base}/files/up`, { method: 'POST', headers: { 'content-type': 'application/x-tar' }, body: tar.subarray(0, 700) });
  t.match({ status: bad.status, body: JSON.parse(bad.body) }, { status: 400, body: { error: { code: 'WS_ERR_INVALID_TAR' } } }, 'a truncated tar is a 400 with a reason');

  await stop(agent, t);
});

t.test('from an empty directory over a Unix socket', async (t) => {
  const dir = isolatedCopy();
  const workspace = mkdtempSync(join(work, 'ws-'));
  const socketPath = join(dir, 'agent.sock');
  const agent = start(join(dir, 'workspace-agent'), { AGENT_LISTEN_MODE: 'uds', AGENT_SOCKET: socketPath, AGENT_WORKSPACE_ROOT: workspace }, dir);
  t.teardown(() => { agent.child.kill('SIGKILL'); });
  const health = await waitForAnswer('http://agent/health', { socketPath, alive: agent.alive, output: agent.output });
  t.equal(health.status, 200);
  const r = await fetchText('http://agent/execute', { socketPath, method: 'POST', headers: json(), body: JSON.stringify({ cmd: ['echo', 'over uds'] }) });
  t.equal(JSON.parse(r.body).stdout, 'over uds\n');
  await stop(agent, t);
});

t.test("examples/workspace-base/entrypoint.sh seeds the workspace, makes the socket's directory and execs the agent", async (t) => {
  const dir = isolatedCopy();
  const workspace = mkdtempSync(join(work, 'ws-'));
  const skel = mkdtempSync(join(work, 'skel-'));
  writeFileSync(join(skel, 'hello.txt'), 'from the image\n');
  const socketPath = join(work, `sockets-${process.pid}`, 'nested', 'agent.sock');
  // The command runs in a PID namespace of its own, under a wrapper the agent spawned: the parent of
  // its parent, read from /proc (the agent's view, so real pids), is the agent.
  const PARENT_OF_WRAPPER = 'cat hello.txt; read -r _ _ _ w _ </proc/self/stat; read -r _ _ _ a _ </proc/$w/stat; echo $a';
  const agent = start(ENTRYPOINT, {
    WORKSPACE_AGENT_BIN: join(dir, 'workspace-agent'), WORKSPACE_SKELETON: skel,
    AGENT_LISTEN_MODE: 'uds', AGENT_SOCKET: socketPath, AGENT_WORKSPACE_ROOT: workspace,
  }, dir);
  t.teardown(() => { agent.child.kill('SIGKILL'); });
  await waitForAnswer('http://agent/health', { socketPath, alive: agent.alive, output: agent.output });
  const r = await fetchText('http://agent/execute', { socketPath, method: 'POST', headers: json(), body: JSON.stringify({ cmd: ['sh', '-c', PARENT_OF_WRAPPER] }) });
  const [seeded, parent] = (JSON.parse(r.body) as { stdout: string }).stdout.split('\n');
  t.equal(seeded, 'from the image', 'the empty workspace got the starter files');
  t.equal(Number(parent), agent.child.pid, 'exec: the agent is the process the entrypoint started, not its child');
  await stop(agent, t);
});

const runscSkip = runscSkipReason();

t.test('inside gVisor as a workspace Pod runs it (read-only root, uid 1000, PID 1)', { skip: runscSkip }, async (t) => {
  const dir = isolatedCopy();
  const port = await freePort();
  const sandbox = startSandbox({
    // What a workspace image declares: ENTRYPOINT ["/usr/local/bin/workspace-agent"].
    args: ['/usr/local/bin/workspace-agent'],
    cwd: '/workspace',
    user: { uid: 1000, gid: 1000 },
    env: { ...BASE_ENV, AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port), HOME: '/workspace' },
    mounts: [
      { destination: '/usr/local/bin', source: dir, readonly: true },
      { destination: '/workspace' },
      { destination: '/tmp' },
    ],
  });
  t.teardown(() => sandbox.destroy());
  const alive = () => sandbox.child.exitCode === null && sandbox.child.signalCode === null;
  const base = `http://127.0.0.1:${port}`;

  const health = await waitForAnswer(`${base}/health`, { alive, output: sandbox.output, timeoutMs: 120_000 });
  t.equal(health.status, 200, 'GET /health');
  t.match(JSON.parse(health.body), { status: 'ok', version: pkg.version });

  const exec = async (cmd: string[], extra: Record<string, unknown> = {}) => {
    const r = await fetchText(`${base}/execute`, { method: 'POST', headers: json(), body: JSON.stringify({ cmd, ...extra }) });
    t.equal(r.status, 200, `POST /execute ${cmd[0]}`);
    return JSON.parse(r.body) as { exitCode: number | null; reason: string; stdout: string; stderr: string };
  };
  const kernel = await exec(['uname', '-r']);
  t.not(kernel.stdout.trim(), release(), `commands run on gVisor's kernel (${kernel.stdout.trim()}), not the host's (${release()})`);
  t.equal((await exec(['id', '-u'])).stdout, '1000\n');
  t.equal((await exec(['sh', '-c', 'echo data > /workspace/f && cat /workspace/f'])).stdout, 'data\n', '/workspace is writable');
  // /var/tmp is world-writable on the host: only a read-only root refuses uid 1000 there.
  const ro = await exec(['sh', '-c', 'echo x > /var/tmp/workspace-test']);
  t.not(ro.exitCode, 0, 'the root filesystem is read-only');
  t.match(ro.stderr, /Read-only file system/);
  const timeout = await exec(['sh', '-c', 'sleep 100 & sleep 100'], { timeoutMs: 500 });
  t.equal(timeout.reason, 'timeout', 'a timeout kills the process tree inside the sandbox');
  // By command line: every command's namespace holder runs short `sleep 1`s of its own.
  const left = await exec(['sh', '-c', 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < $f 2>/dev/null; echo; done | grep -c "^sleep 100 $" || true']);
  t.equal(left.stdout.trim(), '0', 'no sleep survived');

  sandbox.signal('TERM');
  const code = await sandbox.exited;
  if (code !== 0) t.comment(sandbox.output());
  t.equal(code, 0, 'SIGTERM to PID 1: clean exit');
});
