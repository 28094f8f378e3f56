// The local stack and the demo as a newcomer runs them: real processes, real ports.
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatLogLine } from '../../local/supervisor.ts';
import { alive, childPids, stackEnv, waitFor } from './processes.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

t.test('log lines are printed readable', async (t) => {
  t.equal(formatLogLine('{"level":"info","time":"2026-11-29T20:00:01.123Z","pid":1,"name":"x","msg":"listening","port":8080,"path":"a b"}'),
    '20:00:01 INFO  listening port=8080 path="a b"');
  t.equal(formatLogLine('plain text'), 'plain text');
  t.equal(formatLogLine('[1,2]'), '[1,2]');
});

t.test('npm start brings up all three, the demo passes, a crash is restarted, Ctrl-C stops everything', async (t) => {
  const env = { ...await stackEnv(t), LOCAL_READY_TIMEOUT_MS: '60000' };

  const stack = spawn(process.execPath, [join(ROOT, 'local/stack.ts')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  stack.stdout.on('data', (c: Buffer) => { output += c.toString(); });
  stack.stderr.on('data', (c: Buffer) => { output += c.toString(); });
  t.teardown(() => { if (stack.exitCode === null) stack.kill('SIGKILL'); });

  await waitFor(() => output.includes('local stack is ready') || stack.exitCode !== null, 90_000, 'the stack to be ready');
  t.match(output, /local stack is ready/, 'status summary printed');
  t.match(output, new RegExp(`\\[webhook\\]\\s.*listening`), 'prefixed, readable program logs');
  t.match(output, /\/rules token \(shown once/);
  t.match(output, /serving CA: .*ca\.crt/, 'says where the webhook CA is');
  const children = childPids(stack.pid!);
  t.equal(children.length, 3, 'three program processes');

  const demo = spawn(process.execPath, [join(ROOT, 'local/demo.ts')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let demoOut = '';
  demo.stdout.on('data', (c: Buffer) => { demoOut += c.toString(); });
  demo.stderr.on('data', (c: Buffer) => { demoOut += c.toString(); });
  const [code] = await once(demo, 'exit') as [number];
  t.equal(code, 0, `demo exits 0\n${demoOut}`);
  t.match(demoOut, /Step 1\..*\n[\s\S]*\+ \/spec\/runtimeClassName/);
  t.match(demoOut, /the API received the proxy's credential/);
  t.match(demoOut, /X-Workspace-Sandbox-Deny-Reason: /i);
  t.match(demoOut, /now allowed/);
  t.match(demoOut, /Demo complete/);

  // A crash: the supervisor reports it and restarts the program.
  const before = childPids(stack.pid!);
  const victim = before[before.length - 1]!;
  process.kill(victim, 'SIGKILL');
  await waitFor(() => /exited \(SIGKILL\); restarting/.test(output), 30_000, 'the crash report');
  await waitFor(() => childPids(stack.pid!).length === 3 && !childPids(stack.pid!).includes(victim), 30_000, 'the restart');
  t.pass('crashed program reported and restarted');

  const running = childPids(stack.pid!);
  stack.kill('SIGINT');
  const [stackCode] = await once(stack, 'exit') as [number];
  t.equal(stackCode, 0, 'Ctrl-C exits 0');
  t.match(output, /stopping all programs/);
  await waitFor(() => running.every((p) => !alive(p)), 15_000, 'every program to exit');
  t.pass('no program outlives the stack');
});
