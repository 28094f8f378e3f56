// The warm pool and the collector against a real redis-server and real workspaces (the Docker
// backend on DOCKER_HOST, runc): several pool instances (replicas) claiming at once, a replica
// process killed mid-claim, replenishment within min/max, TTL and idle expiry, orphans and
// records whose workspace is gone. The collector's clock is passed in (`sweep(now)`) instead of
// waiting for real TTLs.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import t from 'tap';
import Docker from 'dockerode';
import { LABEL_OWNER } from '../../lib/constants.ts';
import { DockerBackend } from '../../sdk/docker-backend.ts';
import { GarbageCollector } from '../../sdk/gc.ts';
import { WarmPool } from '../../sdk/pool.ts';
import { dockerSkipReason, ensureTestImage, proxiesOf } from '../helpers/docker.ts';
import { redisSkipReason, startRedis } from '../helpers/redis.ts';
import { NO_COVERAGE } from '../agent/harness.ts';

const skip = (await dockerSkipReason()) ?? redisSkipReason(true);
const CHILD = fileURLToPath(new URL('./fixtures/claim-and-hang.ts', import.meta.url));

t.test('warm pool and collector', { skip }, async (t) => {
  const docker = new Docker();
  const image = await ensureTestImage(docker);
  const redisServer = await startRedis(t, { needsControl: true });
  const stateDir = mkdtempSync(join(tmpdir(), 'ws-sdk-pool-'));
  const owner = `pool-test-${process.pid}`;
  const clients: Redis[] = [];
  const backends: DockerBackend[] = [];
  const replica = (name: string, min = 3, max = 5) => {
    const redis = new Redis(redisServer.url);
    clients.push(redis);
    const backend = new DockerBackend({
      docker, image, stateDir, owner, runtime: 'runc',
      defaultResources: { cpu: '0.5', memory: '256Mi' }, maxResources: { cpu: '1', memory: '512Mi' }, readyTimeoutMs: 30_000,
      proxyEnv: { LOG_LEVEL: 'warn', ...NO_COVERAGE },
    });
    backends.push(backend);
    const metrics = new Registry();
    return { pool: new WarmPool({ backend, redis, owner, min, max, claimTimeoutMs: 5_000, metrics, replica: name }), backend, metrics, redis };
  };
  t.teardown(async () => {
    for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${owner}`] } })) {
      await backends[0]!.destroy(c.Names[0]!.slice(1), { gracePeriodSeconds: 0 }).catch(() => {});
    }
    for (const b of backends) await b.close();
    for (const c of clients) c.disconnect();
    rmSync(stateDir, { recursive: true, force: true });
  });

  const a = replica('a');
  const b = replica('b');
  const c = replica('c');

  t.test('replenishment fills the pool to min, across replicas, never past it', async (t) => {
    const [na, nb] = await Promise.all([a.pool.replenish(), b.pool.replenish()]);
    t.equal(na + nb, 3, 'two replicas replenishing at once make min workspaces, not 2×min');
    t.match(await a.pool.records.sizes('default'), { ready: 3, warming: 0, claiming: 0 });
    t.equal(await c.pool.replenish(), 0, 'a full pool gets nothing more');
    t.match(await a.metrics.getSingleMetricAsString('workspace_pool_size'), /state="ready"} 3/);
  });

  t.test('concurrent claims from three replicas: no workspace claimed twice, misses fall back to create', async (t) => {
    const pools = [a.pool, b.pool, c.pool];
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => pools[i % 3]!.acquire(`conv-${i}`, {
      rules: [{ id: `only-conv-${i}`, hosts: [`conv-${i}.example.com`] }],
      labels: { n: String(i) },
    })));
    const ids = results.map((r) => r.workspace.id);
    t.equal(new Set(ids).size, 5, 'five conversations, five workspaces');
    t.equal(results.filter((r) => r.source === 'pool').length, 3, 'three warm hits');
    t.equal(results.filter((r) => r.source === 'created').length, 2, 'two misses created');
    for (const [i, r] of results.entries()) {
      t.equal(r.workspace.conversationId, `conv-${i}`);
      const rules = await a.backend.getRules(r.workspace.id);
      t.same(rules.rules.map((x) => x.id), [`only-conv-${i}`], `conv-${i}'s workspace carries its rules only`);
      t.equal((await a.backend.get(r.workspace.id)).labels.n, String(i), 'labelled at claim time');
      t.equal((await a.pool.exec(r.workspace.id, ['sh', '-c', 'echo ok'])).stdout, 'ok\n');
    }
    const again = await Promise.all([b.pool.acquire('conv-0'), c.pool.acquire('conv-0')]);
    t.same(again.map((r) => [r.source, r.workspace.id]), [['existing', ids[0]], ['existing', ids[0]]], 'a conversation keeps its workspace');
    const both = await Promise.all([a.pool.acquire('conv-x'), b.pool.acquire('conv-x')]);
    t.equal(both[0].workspace.id, both[1].workspace.id, 'two replicas acquiring one new conversation at once agree on one workspace');
    let hits = 0;
    for (const r of [a, b, c]) {
      const m = /result="hit"} (\d+)/.exec(await r.metrics.getSingleMetricAsString('workspace_pool_claims_total'));
      hits += Number(m?.[1] ?? 0);
    }
    t.equal(hits, 3, 'the replicas\' hit counters add up to the three warm claims');
  });

  t.test('refilled after claims, within max (claims in flight count)', async (t) => {
    t.equal(await a.pool.replenish(), 3);
    t.match(await a.pool.records.sizes('default'), { ready: 3 });
  });

  t.test('a replica killed mid-claim: its workspace is never handed out, and is destroyed after the deadline', async (t) => {
    const child = spawn(process.execPath, [CHILD, redisServer.url, owner, 'default', '1000'], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...NO_COVERAGE } });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    while (!out.includes('\n')) await once(child.stdout!, 'data');
    const victim = out.trim();
    t.match(victim, /^ws-/);
    child.kill('SIGKILL');
    await once(child, 'exit');
    t.match(await a.pool.records.sizes('default'), { ready: 2, claiming: 1 });
    const others = await Promise.all([a.pool.acquire('conv-after-1'), b.pool.acquire('conv-after-2')]);
    t.notOk(others.some((r) => r.workspace.id === victim), 'the half-claimed workspace is not claimed again');
    const gc = new GarbageCollector({ backend: a.backend, records: a.pool.records, pools: ['default'] });
    const sweep = await gc.sweep(Date.now() + 1_500);
    t.ok(sweep.leader);
    t.match(sweep.removed, [{ id: victim, reason: 'claim-expired' }]);
    await t.rejects(a.backend.get(victim), { code: 'WS_ERR_WORKSPACE_GONE' }, 'destroyed, not leaked');
    t.equal(await a.pool.records.get(victim), undefined);
    await gc.stop();
  });

  t.test('TTL, idle expiry, gone records, orphans; one collector at a time', async (t) => {
    const gc1 = new GarbageCollector({ backend: a.backend, records: a.pool.records, pools: ['default'], orphanGraceMs: 60_000, replica: 'gc1' });
    const gc2 = new GarbageCollector({ backend: b.backend, records: b.pool.records, pools: ['default'], orphanGraceMs: 60_000, replica: 'gc2' });
    const ttl = await a.pool.acquire('conv-ttl', { ttlSeconds: 120 });
    const idle = await a.pool.acquire('conv-idle', { idleSeconds: 20 });
    const busy = await a.pool.acquire('conv-busy', { idleSeconds: 20 });
    const gone = await a.pool.acquire('conv-gone');
    const orphan = await a.backend.create(undefined, {});
    await docker.getContainer(gone.workspace.id).remove({ force: true });

    const now = Date.now();
    const [s1, s2] = await Promise.all([gc1.sweep(now), gc2.sweep(now)]);
    t.equal([s1, s2].filter((s) => s.leader).length, 1, 'the lease lets one replica sweep');
    const first = s1.leader ? s1 : s2;
    t.same(first.removed, [{ id: gone.workspace.id, reason: 'gone' }], 'at first only the record whose workspace is gone');
    t.equal(await a.pool.records.conversation('conv-gone'), undefined, 'its conversation is free again');

    await a.pool.exec(busy.workspace.id, ['true']);
    await new Promise((r) => setTimeout(r, 50)); // the last-use write is not awaited by exec
    const later = now + 25_000;
    await a.redis.hset(a.pool.records.record(busy.workspace.id), 'lastUsedAt', String(later - 1_000));
    const s3 = s1.leader ? await gc1.sweep(later) : await gc2.sweep(later);
    t.same(s3.removed.map((r) => `${r.id}:${r.reason}`).sort(), [`${idle.workspace.id}:idle`].sort(), 'idle past 20 s: removed; used a second ago: kept');
    const s4 = s1.leader ? await gc1.sweep(now + 130_000) : await gc2.sweep(now + 130_000);
    const reasons = Object.fromEntries(s4.removed.map((r) => [r.id, r.reason]));
    t.equal(reasons[ttl.workspace.id], 'ttl');
    t.equal(reasons[orphan.id], 'orphan', 'a workspace no record knows, past the grace period');
    t.equal(reasons[busy.workspace.id], 'idle');
    await gc1.stop();
    await gc2.stop();
    t.ok(await gc2.sweep(now + 130_000).then((s) => s.leader), 'a stopped collector hands the lease on');
    await gc2.stop();
  });

  t.test('release ends a conversation\'s workspace; nothing is left behind', async (t) => {
    await a.pool.release('conv-0');
    t.equal(await a.pool.records.conversation('conv-0'), undefined);
    for (const ws of await a.backend.list()) await a.backend.destroy(ws.id, { gracePeriodSeconds: 0 });
    t.same(await docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${owner}`] } }), []);
    t.same(proxiesOf(stateDir), [], 'no proxy process');
  });

  t.test('pool sizes are validated', async (t) => {
    t.throws(() => new WarmPool({ backend: a.backend, redis: a.redis, owner, min: 5, max: 2 }), { code: 'WS_ERR_INVALID_OPTIONS' });
  });
});
