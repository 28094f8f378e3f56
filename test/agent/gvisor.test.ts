// The agent inside gVisor, driven over TCP from outside the sandbox, the way the backend reaches a
// workspace Pod. The OCI bundle's root looks like the host's / (its directories bound read-only:
// hostLikeRoot of test/images/runsc.ts), a writable host directory as the workspace, the
// host network (no network namespace: loopback reaches the agent), an unprivileged user, and the
// agent as the container's PID 1. Missing runsc skips loudly; REQUIRE_RUNSC=1 (CI) makes it fail.
// runsc creates a missing mount point in the root filesystem, through whatever is mounted there: the
// root is a directory of the test's own, so the mount points the agent needs (/workspace and the
// parts of the checkout under /workspace-sandbox) are made there, never on the host.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { hostLikeRoot } from '../images/runsc.ts';
import { BIN, REPO, begin, call, frames, freePort, stream, tempDir, waitFor, waitHealthy } from './harness.ts';

const RUNSC = process.env.RUNSC_BIN ?? 'runsc';

function skipReason(): string | false {
  let why: string | undefined;
  if (spawnSync(RUNSC, ['--version'], { stdio: 'ignore' }).status !== 0) why = `${RUNSC} not found (apt-get install -t bookworm-backports runsc)`;
  else if (process.getuid?.() !== 0) why = 'runsc run with a host-root bundle needs root';
  if (!why) return false;
  if (process.env.REQUIRE_RUNSC === '1') throw new Error(`REQUIRE_RUNSC=1 but ${why}`);
  process.stderr.write(`\n${'!'.repeat(72)}\n!! gVisor agent tests SKIPPED: ${why}\n${'!'.repeat(72)}\n\n`);
  return `gVisor agent tests SKIPPED: ${why}`;
}

const skip = skipReason();

t.test('the agent inside gVisor: /health, /execute, streaming, files, a timeout that kills a tree, SIGTERM', { skip }, async (t) => {
  const dir = tempDir('ws-gvisor-');
  const state = join(dir, 'state');
  const bundle = join(dir, 'bundle');
  const workspace = join(dir, 'workspace');
  for (const d of [state, bundle, workspace]) mkdirSync(d);
  chmodSync(dir, 0o755);
  chmodSync(workspace, 0o777);
  const spec = spawnSync(RUNSC, ['spec', '--bundle', bundle], { encoding: 'utf8' });
  t.equal(spec.status, 0, 'runsc spec');
  const config = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
  const port = await freePort();
  const rootfs = join(dir, 'rootfs');
  config.root = { path: rootfs, readonly: true };
  config.mounts.push(...hostLikeRoot(rootfs));
  config.process.terminal = false;
  config.process.user = { uid: 1000, gid: 1000 };
  // The sandbox user (uid 1000) may not traverse the checkout's parents (a clone into `mktemp -d` is
  // 0700), so the parts the agent runs from are mounted under a fresh path.
  const inside = '/workspace-sandbox';
  const workspaceInside = '/workspace';
  config.process.cwd = workspaceInside;
  const nodeRel = relative(REPO, process.execPath);
  const node = nodeRel.startsWith('..') ? process.execPath : join(inside, nodeRel);
  config.process.args = [node, join(inside, relative(REPO, BIN)), 'agent'];
  config.process.env = [
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    `HOME=${workspaceInside}`,
    'AGENT_HOST=127.0.0.1',
    `AGENT_PORT=${port}`,
    `AGENT_WORKSPACE_ROOT=${workspaceInside}`,
    'AGENT_KILL_GRACE_MS=500',
  ];
  config.linux.namespaces = config.linux.namespaces.filter((n: { type: string }) => n.type !== 'network');
  delete config.hostname;
  config.mounts.push(
    { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
    { destination: workspaceInside, type: 'bind', source: workspace, options: ['rbind', 'rw'] },
    ...['bin', 'lib', 'agent', 'node_modules', 'package.json'].map((part) => (
      { destination: join(inside, part), type: 'bind', source: join(REPO, part), options: ['rbind', 'ro'] })),
  );
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(config, null, 2));

  const hostRootBefore = readdirSync('/').sort();
  const id = `ws-agent-test-${process.pid}-${Date.now()}`;
  const runsc = (...args: string[]) => spawnSync(RUNSC, ['--root', state, ...args], { encoding: 'utf8', timeout: 30_000 });
  const child = spawn(RUNSC, ['--root', state, '--network=host', 'run', '--bundle', bundle, id], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      runsc('kill', id, 'KILL');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    }
    runsc('delete', '-force', id);
    rmSync(dir, { recursive: true, force: true });
  });
  const target = { port };
  await waitHealthy(target, { child, stdout: () => output, stderr: () => '', exited: exited.then((code) => ({ code, signal: null })) }, 60_000);

  const health = await call(target, '/health');
  t.match(health.json(), { status: 'ok', version: String });

  const run = async (cmd: string, extra: object = {}) => (await call(target, '/execute', { body: { cmd: ['sh', '-c', cmd], ...extra } })).json<{ stdout: string; stderr: string; exitCode: number; reason: string; execId: string }>();
  t.match((await run('dmesg')).stdout, /gVisor/i, 'commands run inside gVisor');
  t.match((await run('tr "\\0" " " < /proc/1/cmdline')).stdout, /workspace-sandbox-init/, 'PID 1 of the sandbox is the reaper the agent handed it to');
  t.equal((await run('id -u')).stdout, '1000\n');
  t.match(await run('echo out; echo err >&2; exit 5'), { stdout: 'out\n', stderr: 'err\n', exitCode: 5, reason: 'exited' });

  const s = await stream(target, { cmd: ['sh', '-c', 'echo one; sleep 0.2; echo two'] });
  t.same(s.frames.filter((f) => f.type === 'stdout').map((f) => f.data).join(''), 'one\ntwo\n');
  t.match(s.frames.at(-1), { type: 'exit', reason: 'exited', exitCode: 0 });

  t.equal((await call(target, '/files/from-outside.txt', { method: 'PUT', body: 'written through the agent' })).status, 201);
  t.equal(readFileSync(join(workspace, 'from-outside.txt'), 'utf8'), 'written through the agent', 'lands in the workspace volume');
  t.equal((await run('cat from-outside.txt')).stdout, 'written through the agent');

  // A process tree inside the sandbox, with a setsid escapee, ended by the timeout.
  const tree = await run('sleep 100 & echo $!; setsid sleep 100 & echo $!; sh -c "trap \\"\\" TERM; exec sleep 100" & echo $!; sleep 100', { timeoutMs: 700 });
  t.equal(tree.reason, 'timeout');
  const pids = tree.stdout.trim().split('\n');
  t.equal(pids.length, 3);
  const check = await run(`for p in ${pids.join(' ')}; do [ -d /proc/$p ] && [ "$(sed -e 's/.*) //' /proc/$p/stat | cut -c1)" != Z ] && echo "alive $p"; done; for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null | grep -qx "WORKSPACE_SANDBOX_EXEC_ID=${tree.execId}" && echo "tagged $p"; done; true`);
  t.equal(check.stdout, '', 'no process of the timed-out tree survives inside the sandbox');
  t.match(health.json(), { processIsolation: 'pid-namespace' }, 'an unprivileged agent gets a PID namespace per command under runsc');
  // Escapes that drop the exec id and leave the group, ended by a timeout and by a cancel.
  const escapes = 'env -i setsid sleep 301.5 & (env -i setsid sh -c \'trap "" TERM; sleep 302.5\' &); unset WORKSPACE_SANDBOX_EXEC_ID; setsid sleep 303.5 & sleep 0.2; echo started; sleep 100';
  const marked = "for p in /proc/[0-9]*; do [ \"$(sed -e 's/.*) //' $p/stat 2>/dev/null | cut -c1)\" = Z ] && continue; tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q 'sleep 30[123]\\.5' && echo \"$p\"; done; true";
  t.equal((await run(escapes, { timeoutMs: 1000 })).reason, 'timeout');
  t.equal((await run(marked)).stdout, '', 'timeout: no escapee survives inside the sandbox');
  const cancelled = begin(target, '/execute', { body: { cmd: ['sh', '-c', escapes] }, headers: { accept: 'application/x-ndjson' } });
  // Read up to 'started' without ending the iteration: leaving a for-await would close the response, a cancel.
  const reading = frames(await cancelled.response);
  while (!(await reading.next()).value?.data?.includes('started'));
  t.not((await run(marked)).stdout, '', 'the escapees run');
  cancelled.destroy();
  let left = 'not checked';
  t.ok(await waitFor(async () => (left = (await run(marked)).stdout) === '', 10_000, 100), 'cancel: no escapee survives inside the sandbox');
  t.equal(left, '');

  let zombies = '';
  await waitFor(async () => (zombies = (await run('for p in /proc/[0-9]*; do [ "$(sed -e "s/.*) //" $p/stat 2>/dev/null | cut -c1)" = Z ] && echo $p; done; true')).stdout) === '', 10_000, 100);
  t.equal(zombies, '', 'the killed escapees were reaped by PID 1');

  // Pod termination: SIGTERM to the container's PID 1 reaches the agent; the container exits 0.
  runsc('kill', id, 'TERM');
  t.equal(await exited, 0, 'the sandbox exits cleanly on SIGTERM');
  t.match(output, /"msg":"shutdown complete"/);
  t.same(readdirSync('/').sort(), hostRootBefore, 'the sandbox created nothing in the host\'s / (its mount points live in its own root)');
  t.same(readdirSync(rootfs).filter((n) => n === 'workspace' || n === 'workspace-sandbox').sort(), ['workspace', 'workspace-sandbox'], 'they were made in the sandbox\'s root');
});
