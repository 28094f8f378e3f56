import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { alive, begin, call, frames, freePort, spawnAgent, startAgent, survivors, tempDir, waitFor, waitHealthy, BIN } from './harness.ts';

const pidsIn = (text: string) => text.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);

t.test('timeout ends the whole tree: group members, a TERM-ignoring process and a setsid escapee', async (t) => {
  const a = await startAgent({ AGENT_KILL_GRACE_MS: '300' });
  t.teardown(a.close);
  // Each background process prints its own pid as the agent sees it (/proc is the agent's: a
  // command in its own PID namespace would print a namespace-local pid with `$!`), then becomes sleep.
  const selfPid = 'read -r p r </proc/self/stat; echo $p; exec sleep 100';
  const script = [
    `sh -c '${selfPid}' &`,
    `setsid sh -c '${selfPid}' &`, // new session and process group: only the exec-id sweep finds it
    `setsid sh -c 'trap "" TERM; ${selfPid}' &`, // escapee that ignores SIGTERM
    `sh -c 'trap "" TERM; ${selfPid}' &`, // group member that ignores SIGTERM
    'sleep 100',
  ].join('\n');
  const r = await call(a.target, '/execute', { body: { cmd: ['sh', '-c', script], timeoutMs: 400 } });
  const b = r.json<{ reason: string; execId: string; stdout: string; exitCode: number | null; signal: string }>();
  t.equal(b.reason, 'timeout');
  t.equal(b.exitCode, null);
  t.equal(b.signal, 'SIGTERM');
  const pids = pidsIn(b.stdout);
  t.equal(pids.length, 4, 'the command reported its four background pids');
  // The answer is sent only once nothing tagged survives: no waiting needed.
  t.same(pids.filter(alive), [], 'no background process survives');
  t.same(survivors(b.execId), [], 'nothing with the exec id is left in /proc');
  t.match(a.logs.find('command')[0], { reason: 'timeout', execId: b.execId });
});

t.test('a command that exits normally may leave a background process running (answer comes promptly)', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const b = (await call(a.target, '/execute', { body: { cmd: ['sh', '-c', 'sleep 30 & echo $!'] } })).json<{ reason: string; stdout: string }>();
  const [pid] = pidsIn(b.stdout);
  t.teardown(() => { try { process.kill(pid!, 'SIGKILL'); } catch { /* gone */ } });
  t.equal(b.reason, 'exited');
  t.ok(alive(pid!), 'a deliberate background job is not killed when its parent exits');
});

t.test('client disconnect mid-stream ends the command and its escapees', async (t) => {
  const a = await startAgent({ AGENT_KILL_GRACE_MS: '300' });
  t.teardown(a.close);
  const req = begin(a.target, '/execute', {
    body: { cmd: ['sh', '-c', 'setsid sleep 100 & sleep 100 & echo started; while :; do echo tick; sleep 0.05; done'] },
    headers: { accept: 'application/x-ndjson' },
  });
  const res = await req.response;
  const execId = res.headers['x-exec-id'] as string;
  t.match(execId, /^[0-9a-f]{24}$/);
  for await (const frame of frames(res)) {
    if (frame.type === 'stdout' && frame.data?.includes('started')) break;
  }
  t.ok(survivors(execId).length >= 3, 'the tree is running');
  req.destroy();
  t.ok(await waitFor(() => survivors(execId).length === 0, 10_000), 'every tagged process ended after the disconnect');
  t.ok(await waitFor(() => a.logs.find('command').length === 1, 5000));
  t.match(a.logs.find('command')[0], { execId, reason: 'client_cancel' });
});

t.test('client disconnect while waiting for a buffered answer ends the command', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const req = begin(a.target, '/execute', { body: { cmd: ['sh', '-c', 'sleep 100'] } });
  t.ok(await waitFor(() => a.agent.running === 1, 5000));
  req.destroy();
  t.ok(await waitFor(() => a.logs.find('command').length === 1, 10_000));
  const line = a.logs.find('command')[0]!;
  t.equal(line.reason, 'client_cancel');
  t.same(survivors(line.execId as string), []);
  t.equal(a.agent.running, 0);
});

// PID 1: a new PID namespace makes the agent PID 1 of its own process tree, as in a container.
const unshareOk = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true'], { stdio: 'ignore' }).status === 0;
const zombieScript = 'for p in /proc/[0-9]*; do s=$(sed -e "s/.*) //" $p/stat 2>/dev/null | cut -c1); [ "$s" = Z ] && echo "$p"; done; true';

async function pid1Agent(t: { teardown(fn: () => void): void }, reaper: 'auto' | 'off') {
  const port = await freePort();
  const root = tempDir('ws-pid1-');
  const proc = spawnAgent({ AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port), AGENT_WORKSPACE_ROOT: root, AGENT_INIT_REAPER: reaper, AGENT_KILL_GRACE_MS: '300' }, {
    command: ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child', process.execPath, BIN, 'agent'],
  });
  t.teardown(() => { proc.child.kill('SIGKILL'); });
  const target = { port };
  await waitHealthy(target, proc);
  return { proc, target };
}

t.test('as PID 1 the agent hands PID 1 to a reaper: orphans are reaped, exit codes are not stolen', { skip: unshareOk ? false : 'unshare --pid needs root' }, async (t) => {
  const { proc, target } = await pid1Agent(t, 'auto');
  const run = async (cmd: string) => (await call(target, '/execute', { body: { cmd: ['sh', '-c', cmd] } })).json<{ stdout: string; exitCode: number; reason: string }>();
  t.match((await run('tr "\\0" " " < /proc/1/cmdline')).stdout, /workspace-sandbox-init/, 'PID 1 is the reaper');
  const parent = await run('echo $PPID');
  t.not(parent.stdout.trim(), '1', 'the agent is no longer PID 1');
  // Many commands that each orphan a short-lived child, concurrently: the orphans die under PID 1.
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => run(`(sleep 0.2) & (sleep 0.1 &) ; exit ${i + 1}`)));
  t.same(results.map((r) => r.exitCode), Array.from({ length: 12 }, (_, i) => i + 1), 'every exit code reported, none stolen');
  t.same(results.map((r) => r.reason), Array(12).fill('exited'));
  // The orphans end within 0.2 s; looked at until they are gone (a missing reaper leaves them for good).
  let zombies = '';
  await waitFor(async () => (zombies = (await run(zombieScript)).stdout) === '', 10_000, 100);
  t.equal(zombies, '', 'no zombies left');

  // SIGTERM to the container's PID 1 reaches the agent, which shuts down; the reaper exits with its status.
  const nsInit = Number(readFileSync(`/proc/${proc.child.pid}/task/${proc.child.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  process.kill(nsInit, 'SIGTERM');
  const exit = await proc.exited;
  t.equal(exit.code, 0, 'clean exit');
  t.match(proc.stdout(), /"msg":"shutdown complete"/);
});

t.test('the zombie check can fail: without the reaper, PID 1 collects zombies', { skip: unshareOk ? false : 'unshare --pid needs root' }, async (t) => {
  const { target } = await pid1Agent(t, 'off');
  const run = async (cmd: string) => (await call(target, '/execute', { body: { cmd: ['sh', '-c', cmd] } })).json<{ stdout: string; exitCode: number }>();
  t.match((await run('tr "\\0" " " < /proc/1/cmdline')).stdout, / agent\b/, 'the agent is PID 1');
  await run('(sleep 0.1 &) ; exit 0');
  t.ok(await waitFor(async () => (await run(zombieScript)).stdout !== '', 10_000, 100), 'a zombie is there');
});

t.test('a multithreaded command runs in its PID namespace, and its exit code or signal is its own', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const health = (await call(a.target, '/health')).json<{ processIsolation: string }>();
  t.equal(health.processIsolation, 'pid-namespace', 'the isolation under test');
  type Result = { exitCode: number | null; signal: string | null; stdout: string; stderr: string };
  const run = async (cmd: string[]) => (await call(a.target, '/execute', { body: { cmd } })).json<Result>();
  // Node creates its thread pool at start: a process that may not create threads aborts here.
  const node = await run([process.execPath, '-e', 'new (require("node:worker_threads").Worker)("process.exit(0)", { eval: true }).on("exit", () => console.log("threads ok"))']);
  t.equal(node.stdout.trim(), 'threads ok', node.stderr);
  t.equal(node.exitCode, 0);
  const code = await run(['sh', '-c', 'exit 7']);
  t.same([code.exitCode, code.signal], [7, null]);
  const signalled = await run(['sh', '-c', 'kill -USR1 $$']);
  t.same([signalled.exitCode, signalled.signal], [null, 'SIGUSR1']);
  const graceful = await run(['sh', '-c', "trap 'exit 3' TERM; kill -TERM $$; sleep 5 & wait"]);
  t.same([graceful.exitCode, graceful.signal], [3, null], 'a command that handles SIGTERM reports its own exit');
});
