// The Docker backend end to end on a real Docker engine (DOCKER_HOST; .ci/run starts a private one
// with scripts/docker-daemon.sh): workspaces under runc and, where the engine has it, runsc; commands
// through the agent's Unix socket; no network interface but loopback; egress only through the
// workspace's own proxy, allowed by the rules the SDK pushes; nothing left behind.
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import Docker from 'dockerode';
import { LABEL_CONVERSATION, LABEL_OWNER } from '../../lib/constants.ts';
import { signPodToken } from '../../lib/pod-token.ts';
import { DockerBackend } from '../../sdk/docker-backend.ts';
import { isWorkspaceError } from '../../sdk/errors.ts';
import { dockerRuntimes, dockerSkipReason, ensureTestImage, proxiesOf } from '../helpers/docker.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';
import { NO_COVERAGE } from '../agent/harness.ts';

const skip = await dockerSkipReason();

t.test('Docker backend', { skip }, async (t) => {
  const docker = new Docker();
  const image = await ensureTestImage(docker);
  const runtimes = await dockerRuntimes(docker);
  const stateDir = mkdtempSync(join(tmpdir(), 'ws-sdk-docker-'));
  const owner = `test-${process.pid}`;
  const upstream = createServer((req, res) => res.end(`upstream saw ${req.method} ${req.url}`));
  const { port } = await listenLocal(upstream);
  t.teardown(async () => {
    await closeServer(upstream);
    rmSync(stateDir, { recursive: true, force: true });
  });

  for (const runtime of runtimes) {
    t.test(`a workspace under ${runtime}`, async (t) => {
      const backend = new DockerBackend({
        docker, image, stateDir, owner, runtime,
        defaultResources: { cpu: '1', memory: '512Mi' }, maxResources: { cpu: '2', memory: '2Gi' },
        readyTimeoutMs: 30_000,
        // The upstream is this test's server on loopback: named, and allowed to be private, by the test only.
        proxyEnv: { STATIC_HOSTS: `upstream.test=127.0.0.1`, LOG_LEVEL: 'warn', ...NO_COVERAGE },
      });
      t.teardown(() => backend.close());

      const ws = await backend.create('conv-1', { labels: { team: 'a' }, ttlSeconds: 600, allowedDomains: ['example.com'] });
      t.match(ws, { backend: 'docker', conversationId: 'conv-1', labels: { team: 'a', [LABEL_CONVERSATION]: 'conv-1', [LABEL_OWNER]: owner }, ttlSeconds: 600 });
      t.ok(ws.readyAt instanceof Date, 'create waits for the agent');
      const info = await docker.getContainer(ws.id).inspect();
      t.equal(info.HostConfig.Runtime, runtime, `runs under ${runtime}`);
      t.equal(info.HostConfig.NetworkMode, 'none');

      const r = await backend.exec(ws.id, ['sh', '-c', 'echo out; echo err >&2; id -u; exit 3']);
      t.match(r, { exitCode: 3, stdout: 'out\n1000\n', stderr: 'err\n', reason: 'exited' });
      const bin = await backend.execBinary(ws.id, ['sh', '-c', 'printf "\\377\\000\\001"']);
      t.same([...bin.stdout], [255, 0, 1], 'binary-safe output');
      const frames = [];
      for await (const f of backend.execStream(ws.id, ['sh', '-c', 'echo a; sleep 0.1; echo b'])) frames.push(f);
      t.equal(frames.filter((f) => f.type === 'stdout').map((f) => (f as { data: string }).data).join(''), 'a\nb\n');
      t.match(frames.at(-1), { type: 'exit', exitCode: 0 });
      t.match((await backend.exec(ws.id, ['cat', '/proc/1/cmdline'])).stdout, /workspace-agent|workspace-sandbox-init|sh/);

      const ifaces = (await backend.exec(ws.id, ['sh', '-c', "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"])).stdout.trim().split('\n');
      t.same(ifaces, ['lo'], 'no network interface but loopback');
      // (busybox's -T crashes in its static build: the agent's timeout bounds these instead.)
      const direct = await backend.exec(ws.id, ['sh', '-c', 'env -u http_proxy -u HTTP_PROXY wget -q -O - http://192.0.2.1/ 2>&1; echo "exit=$?"'], { timeoutMs: 10_000 });
      t.match(direct.stdout, /(unreachable|no route)[\s\S]*exit=1/i, 'a direct connection has no route');

      const fetchUpstream = () => backend.exec(ws.id, ['sh', '-c', `wget -q -S -O - http://upstream.test:${port}/hello 2>&1; echo "exit=$?"`], { timeoutMs: 10_000 });
      const denied = await fetchUpstream();
      t.match(denied.stdout, /403/, 'not allowed yet: the proxy refuses');
      t.match(denied.stdout, /exit=[1-9]/);

      const rules = await backend.setRules(ws.id, [{ id: 'upstream', hosts: ['upstream.test'], ports: [port], allowPrivate: true }]);
      t.match(rules.rules, [{ id: 'upstream' }]);
      t.match((await backend.getRules(ws.id)).rules, [{ id: 'upstream', hosts: ['upstream.test'] }]);
      // /rules takes only a token minted for this workspace: one for another is refused.
      const { adminUrl } = JSON.parse(readFileSync(join(stateDir, ws.id, 'proxy.json'), 'utf8')) as { adminUrl: string };
      const key = readFileSync(join(stateDir, 'pod-token', 'private.pem'), 'utf8');
      const foreign = await signPodToken(key, { purpose: 'rules', podUid: 'another-workspace', ttlSeconds: 60 });
      t.equal((await fetch(`${adminUrl}/rules`, { headers: { authorization: `Bearer ${foreign}` } })).status, 401, 'a token for another workspace opens nothing');
      t.equal((await fetch(`${adminUrl}/rules`)).status, 401, 'nor does no token');
      const allowed = await fetchUpstream();
      t.match(allowed.stdout, /upstream saw GET http:\/\/upstream\.test:\d+\/hello|upstream saw GET \/hello/, 'allowed: reached through the proxy');
      t.match(allowed.stdout, /exit=0/);

      t.equal(await backend.isHealthy(ws.id), true);
      const listed = await backend.list();
      t.ok(listed.some((w) => w.id === ws.id && w.labels.team === 'a'), 'list shows it with its labels');
      t.match(await backend.logs(ws.id), /agent listening/);

      await t.rejects(backend.assign(ws.id, 'conv-2'), { code: 'WS_ERR_INVALID_OPTIONS' }, 'a workspace of one conversation is never handed to another');

      await backend.destroy(ws.id, { gracePeriodSeconds: 1 });
      await t.rejects(backend.get(ws.id), { code: 'WS_ERR_WORKSPACE_GONE' });
      await t.rejects(backend.exec(ws.id, ['true']), { code: 'WS_ERR_WORKSPACE_GONE' });
      t.equal(await backend.isHealthy(ws.id), false);
      await backend.destroy(ws.id); // idempotent
      t.same(proxiesOf(stateDir), [], 'its proxy is gone');
      t.notOk(existsSync(join(stateDir, ws.id)), 'its host directory is gone');
    });
  }

  t.test('unassigned workspaces are assigned at claim time; typed errors', async (t) => {
    const backend = new DockerBackend({
      docker, image, stateDir, owner, runtime: 'runc',
      defaultResources: { cpu: '1', memory: '256Mi' }, maxResources: { cpu: '2', memory: '1Gi' }, readyTimeoutMs: 30_000, proxyEnv: NO_COVERAGE,
    });
    t.teardown(() => backend.close());
    await t.rejects(backend.create('conv', { resources: { memory: '8Gi' } }), { code: 'WS_ERR_INVALID_OPTIONS', message: /above the allowed 1Gi/ });
    await t.rejects(backend.create('bad id!'), { code: 'WS_ERR_INVALID_OPTIONS' });
    await t.rejects(backend.create('conv', { labels: { 'workspace-sandbox.io/owner': 'x' } }), { code: 'WS_ERR_INVALID_OPTIONS', message: /reserved/ });
    await t.rejects(backend.create('conv', { image: 'workspace-sandbox/absent:none' }), { code: 'WS_ERR_IMAGE_PULL_FAILED' });

    const ws = await backend.create(undefined, { pool: 'p1' });
    t.equal(ws.conversationId, undefined);
    const assigned = await backend.assign(ws.id, 'conv-9', { tier: 'gold' });
    t.match(assigned, { conversationId: 'conv-9', labels: { tier: 'gold', [LABEL_CONVERSATION]: 'conv-9' } });
    t.match(await backend.get(ws.id), { conversationId: 'conv-9', labels: { tier: 'gold' } }, 'the assignment is visible to every replica');

    // A workspace whose container died: the orchestrator's answer, not a socket error.
    await docker.getContainer(ws.id).kill();
    await t.rejects(backend.exec(ws.id, ['true']), { code: 'WS_ERR_WORKSPACE_FAILED' });
    t.equal(await backend.isHealthy(ws.id), false);
    await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
    const err = await backend.exec(ws.id, ['true']).catch((e: unknown) => e);
    t.ok(isWorkspaceError(err, 'WS_ERR_WORKSPACE_GONE'));
  });

  t.test('nothing is left behind', async (t) => {
    const left = await docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${owner}`] } });
    t.same(left, [], 'no container');
    t.same(readdirSync(stateDir), ['pod-token'], 'no workspace directory (the backend\'s signing key stays)');
    t.same(proxiesOf(stateDir), [], 'no proxy process');
  });
});
