// The example backend end to end: its HTTP API over the SDK with the Docker backend (DOCKER_HOST),
// a real redis-server and a one-workspace warm pool. A conversation's commands land in one
// workspace, errors carry the SDK's codes, DELETE ends the workspace.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import t from 'tap';
import { createExampleBackend } from '../../examples/backend/server.ts';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { createBackend, createPool, loadSdkConfig } from '../../sdk/index.ts';
import { dockerSkipReason, ensureTestImage, proxiesOf } from '../helpers/docker.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { NO_COVERAGE } from '../agent/harness.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';
import { redisSkipReason, startRedis } from '../helpers/redis.ts';
import Docker from 'dockerode';

const skip = (await dockerSkipReason()) ?? redisSkipReason();

t.test('example backend: POST /conversations/:id/exec on the SDK', { skip }, async (t) => {
  const image = await ensureTestImage(new Docker());
  const redisServer = await startRedis(t);
  const stateDir = mkdtempSync(join(tmpdir(), 'ws-example-'));
  const config = loadSdkConfig({
    CONTAINER_BACKEND: 'docker', DOCKER_HOST: process.env.DOCKER_HOST, DOCKER_RUNTIME: 'runc', DOCKER_STATE_DIR: stateDir,
    WORKSPACE_IMAGE: image, WORKSPACE_OWNER: `example-${process.pid}`, REDIS_URL: redisServer.url, POOL_MIN: '1', POOL_MAX: '2',
    WORKSPACE_DEFAULT_MEMORY: '256Mi', LOG_LEVEL: 'warn',
  });
  const logger = createLogger({ name: 'example-backend', level: 'info', destination: captureLogs().destination });
  const metrics = createMetricsRegistry({ program: 'example-backend', defaultMetrics: false });
  const backend = await createBackend(config, { logger, proxyEnv: NO_COVERAGE });
  const redis = new Redis(redisServer.url);
  const pool = createPool(config, backend, redis, { logger, metrics });
  await pool.replenish();
  const server = createExampleBackend({ pool, metrics, logger });
  const { url } = await listenLocal(server);
  t.teardown(async () => {
    await closeServer(server);
    for (const ws of await backend.list()) await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
    await backend.close();
    redis.disconnect();
    rmSync(stateDir, { recursive: true, force: true });
  });
  const post = (conv: string, body: unknown) => fetch(`${url}/conversations/${conv}/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  const first = await post('demo-1', { cmd: ['sh', '-c', 'echo hello > note; cat note; id -u'], allowedDomains: ['example.com'] });
  t.equal(first.status, 200);
  const a = await first.json() as { workspace: string; source: string; stdout: string; exitCode: number };
  t.match(a, { source: 'pool', stdout: 'hello\n1000\n', exitCode: 0 }, 'the warm workspace was claimed');
  const b = await (await post('demo-1', { cmd: ['cat', 'note'] })).json() as { workspace: string; source: string; stdout: string };
  t.match(b, { workspace: a.workspace, source: 'existing', stdout: 'hello\n' }, 'the conversation keeps its workspace and files');
  t.same((await backend.getRules(a.workspace)).rules.map((r) => r.hosts), [['example.com']], 'its allowed domains were pushed at claim time');

  t.match(await (await post('demo-1', { cmd: [] })).json(), { error: { code: 'WS_ERR_VALIDATION' } });
  t.equal((await fetch(`${url}/conversations/bad%20id/exec`, { method: 'POST', body: '{"cmd":["true"]}' })).status, 400, 'an id that cannot be a label: 400 WS_ERR_INVALID_OPTIONS');
  t.equal((await fetch(`${url}/nowhere`)).status, 404);
  t.match(await (await fetch(`${url}/metrics`)).text(), /workspace_pool_claims_total\{[^}]*result="hit"[^}]*\} 1/);

  t.equal((await fetch(`${url}/conversations/demo-1`, { method: 'DELETE' })).status, 204);
  await t.rejects(backend.get(a.workspace), { code: 'WS_ERR_WORKSPACE_GONE' }, 'DELETE destroyed the workspace');
  for (const ws of await backend.list()) await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
  t.same(proxiesOf(stateDir), []);
});
