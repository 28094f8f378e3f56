// The local stack's life cycle as a newcomer meets it: a second `npm start`, a taken port, a
// program stopped from outside, the parent (npm, a terminal) going away, the demo without a stack.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { alive, childPids, stackEnv, waitFor, type Test } from './processes.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const STACK = join(ROOT, 'local/stack.ts');


interface Started { child: ChildProcess; output: () => string }

function start(t: Test, env: Record<string, string>, command = process.execPath, args = [STACK]): Started {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => { output += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { output += c.toString(); });
  t.teardown(async () => {
    for (const pid of child.pid ? childPids(child.pid) : []) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  return { child, output: () => output };
}

async function ready(s: Started): Promise<void> {
  await waitFor(() => s.output().includes('local stack is ready') || s.child.exitCode !== null, 90_000, 'the stack to be ready');
  if (!s.output().includes('local stack is ready')) throw new Error(`stack did not start:\n${s.output()}`);
}

async function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const [code] = await once(child, 'exit') as [number | null];
  return code;
}

t.test('a second stack on the same state refuses to start and leaves the first untouched', async (t) => {
  const env = await stackEnv(t);
  const first = start(t, env);
  await ready(first);
  const token = readFileSync(join(env.LOCAL_STATE_DIR!, 'rules-token'), 'utf8');
  const second = start(t, env);
  t.equal(await exited(second.child), 1, 'the second exits 1');
  t.match(second.output(), new RegExp(`a local stack is already running \\(pid ${first.child.pid}, state in `));
  t.equal(readFileSync(join(env.LOCAL_STATE_DIR!, 'rules-token'), 'utf8'), token, 'the running stack\'s state was not wiped');
  t.equal(childPids(first.child.pid!).length, 3, 'the first stack still runs its three programs');
  first.child.kill('SIGINT');
  t.equal(await exited(first.child), 0);
  t.notOk(existsSync(`${env.LOCAL_STATE_DIR}.pid`), 'the lock is released on exit');
});

t.test('a port taken by another program fails fast and names the variable to change', async (t) => {
  const env = await stackEnv(t);
  const squatter: Server = createServer();
  squatter.listen(Number(env.LOCAL_PROXY_PORT), '127.0.0.1');
  await once(squatter, 'listening');
  t.teardown(() => new Promise<void>((r) => squatter.close(() => r())));
  const s = start(t, env);
  t.equal(await exited(s.child), 1);
  t.match(s.output(), new RegExp(`port ${env.LOCAL_PROXY_PORT} is in use by another program: set LOCAL_PROXY_PORT to a free port`));
  t.notMatch(s.output(), /restarting/, 'no restart loop');
});

t.test('a program that fails before it is ready stops the stack with its last lines instead of a restart loop', async (t) => {
  const env = await stackEnv(t);
  // The ports are free, but the proxy refuses its rules file at start-up: every restart would too.
  const rules = join(env.LOCAL_STATE_DIR!, '..', 'rules.yaml');
  writeFileSync(rules, 'rules: [{id: "x", hosts: []}]\n');
  const s = start(t, { ...env, LOCAL_RULES_FILE: rules });
  t.equal(await exited(s.child), 1);
  t.match(s.output(), /proxy exited \(code 1\) before it was ready; its last lines:\n.*rules/, 'the proxy\'s own error is shown');
  t.notMatch(s.output(), /restarting/, 'no restart loop');
  t.notOk(existsSync(`${env.LOCAL_STATE_DIR}.pid`), 'the lock is released');
});

t.test('SIGTERM to any program of the stack stops all of it', async (t) => {
  const env = await stackEnv(t);
  const s = start(t, env);
  await ready(s);
  const programs = childPids(s.child.pid!);
  t.equal(programs.length, 3);
  process.kill(programs[1]!, 'SIGTERM');
  t.equal(await exited(s.child), 0, 'the stack exits 0');
  t.match(s.output(), /was stopped \(code 0\)|was stopped \(SIGTERM\)/);
  await waitFor(() => programs.every((p) => !alive(p)), 15_000, 'every program to exit');
  t.pass('no program outlives the stack');
});

t.test('when its parent dies without a signal (npm SIGKILLed), the stack stops', async (t) => {
  const env = await stackEnv(t);
  // A stand-in for npm: a parent that starts the stack, then is killed with SIGKILL.
  const parent = start(t, env, process.execPath, ['-e', `require('node:child_process').spawn(process.execPath, [${JSON.stringify(STACK)}], { stdio: 'inherit' }); setInterval(() => {}, 1000);`]);
  await ready(parent);
  const stackPid = childPids(parent.child.pid!)[0]!;
  const programs = childPids(stackPid);
  t.equal(programs.length, 3);
  parent.child.kill('SIGKILL');
  await waitFor(() => !alive(stackPid) && programs.every((p) => !alive(p)), 20_000, 'the orphaned stack and its programs to exit');
  t.pass('nothing outlives the parent');
});

t.test('`npm start` then `kill <npm pid>` stops everything', async (t) => {
  const env = await stackEnv(t);
  const npm = start(t, env, 'npm', ['start', '--silent']);
  await ready(npm);
  const all = (pid: number): number[] => childPids(pid).flatMap((c) => [c, ...all(c)]);
  const tree = all(npm.child.pid!);
  t.ok(tree.length >= 4, `npm runs the stack and its three programs (${tree.length} processes)`);
  npm.child.kill('SIGTERM');
  await exited(npm.child);
  await waitFor(() => tree.every((p) => !alive(p)), 20_000, 'every process under npm to exit');
  t.pass('no process of the stack outlives npm');
});

t.test('the demo without a running stack says so', async (t) => {
  const env = await stackEnv(t);
  const demo = start(t, env, process.execPath, [join(ROOT, 'local/demo.ts')]);
  t.equal(await exited(demo.child), 1);
  t.match(demo.output(), /demo FAILED: no local stack is running \(state dir .*\): start one with 'npm start'/);
  t.notMatch(demo.output(), /ECONNREFUSED/);
});
