// Processes that escape the kill. The agent used to find a command's escaped descendants by an
// environment tag, so anything that dropped the tag (`env -i`, `unset`, a renamed variable) and left
// the process group (`setsid`, a double fork) survived a timeout or a cancel. Each command now has
// its own PID namespace: every descendant is a member whatever it does, and the kernel kills all
// members when the namespace's PID 1 dies. Survivors are found here by a unique marker in their
// command line (a sleep duration no other process uses), not by anything the agent relies on.
import t from 'tap';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { begin, call, frames, processesWith, startAgent, waitFor } from './harness.ts';

/** The escapes, each leaving a `sleep <marker>` behind; `$1` is the marker. */
const ESCAPES: [string, string][] = [
  ['env -i setsid sleep &', 'env -i setsid sleep "$1" &'],
  ['unset the exec id; setsid sleep &', 'unset WORKSPACE_SANDBOX_EXEC_ID; setsid sleep "$1" &'],
  ['renamed exec id variable', 'env -u WORKSPACE_SANDBOX_EXEC_ID RENAMED_ID="$WORKSPACE_SANDBOX_EXEC_ID" setsid sleep "$1" &'],
  ['double fork with a clean environment', '(env -i setsid sh -c \'sleep "$0" & exit 0\' "$1" &)'],
  ['SIGTERM-ignoring daemon with a clean environment', 'env -i setsid sh -c \'trap "" TERM HUP; sleep "$0"; :\' "$1" &'],
  ['nohup in a new session', 'env -i nohup setsid sleep "$1" >/dev/null 2>&1 &'],
];

const uniqueDuration = () => `${300 + randomInt(1000)}.${randomInt(1e9)}`;

t.test('pid namespaces are in use here (the tests below are about them)', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  t.equal(a.agent.processIsolation, 'pid-namespace');
  t.match((await call(a.target, '/health')).json(), { processIsolation: 'pid-namespace' });
});

t.test('timeout: nothing the command started survives, whatever it did to its environment, session or group', async (t) => {
  const a = await startAgent({ AGENT_KILL_GRACE_MS: '300' });
  t.teardown(a.close);
  for (const [name, escape] of ESCAPES) {
    const marker = uniqueDuration();
    const r = await call(a.target, '/execute', { body: { cmd: ['sh', '-c', `${escape}\nsleep 0.2; echo started; sleep 100`, 'sh', marker], timeoutMs: 700 } });
    const b = r.json<{ reason: string; stdout: string }>();
    t.equal(b.reason, 'timeout', `${name}: timed out`);
    t.equal(b.stdout, 'started\n', `${name}: the escape ran first`);
    // The answer comes once the namespace is empty: no waiting here.
    t.same(processesWith(marker), [], `${name}: no survivor`);
  }
});

t.test('client cancel: nothing the command started survives', async (t) => {
  const a = await startAgent({ AGENT_KILL_GRACE_MS: '300' });
  t.teardown(a.close);
  for (const [name, escape] of ESCAPES) {
    const marker = uniqueDuration();
    const req = begin(a.target, '/execute', {
      body: { cmd: ['sh', '-c', `${escape}\nsleep 0.2; echo started; sleep 100`, 'sh', marker] },
      headers: { accept: 'application/x-ndjson' },
    });
    const res = await req.response;
    // Read up to 'started' without ending the iteration: leaving a for-await would close the response, a cancel.
    const reading = frames(res);
    while (!(await reading.next()).value?.data?.includes('started'));
    t.ok(processesWith(marker).length > 0, `${name}: the escapee runs`);
    req.destroy();
    t.ok(await waitFor(() => a.agent.running === 0, 10_000), `${name}: the command ended`);
    t.same(processesWith(marker), [], `${name}: no survivor`);
  }
});

t.test('a normal exit still leaves deliberate background processes running (and they stay contained)', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const marker = uniqueDuration();
  const b = (await call(a.target, '/execute', { body: { cmd: ['sh', '-c', 'env -i setsid sleep "$1" & echo ok', 'sh', marker] } })).json<{ reason: string }>();
  t.equal(b.reason, 'exited');
  const [pid] = processesWith(marker);
  t.ok(pid, 'the background process lives on');
  t.teardown(() => { try { process.kill(pid!, 'SIGKILL'); } catch { /* gone */ } });
  t.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /NSpid:\s+\d+\s+\d+/, 'inside a PID namespace of its own');
});

t.test('with AGENT_PROCESS_ISOLATION=sweep the exec-id sweep still ends tagged escapees (and says which mode runs)', async (t) => {
  const a = await startAgent({ AGENT_PROCESS_ISOLATION: 'sweep', AGENT_KILL_GRACE_MS: '300' });
  t.teardown(a.close);
  t.match((await call(a.target, '/health')).json(), { processIsolation: 'sweep' });
  const marker = uniqueDuration();
  const b = (await call(a.target, '/execute', { body: { cmd: ['sh', '-c', 'setsid sleep "$1" & (setsid sleep "$1" &); sleep 100', 'sh', marker], timeoutMs: 400 } })).json<{ reason: string }>();
  t.equal(b.reason, 'timeout');
  t.same(processesWith(marker), []);
});
