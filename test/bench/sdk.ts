// Workspace SDK benchmark, Docker backend, every path in the same run:
//   node test/bench/sdk.ts        (BENCH_CLAIMS=20 BENCH_CREATES=8 BENCH_EXECS=400 to change sizes)
// - warm claim (acquire from a full pool: claim in Redis → the conversation's rules pushed to the
//   proxy + assigned + the agent answers /health → committed) vs a create (container started →
//   proxy up → agent /health), under runc and, where the engine has it, runsc;
// - exec of `true` through the SDK (backend.exec: argument mapping, typed errors) vs the agent
//   client straight on the same Unix socket, interleaved in blocks so load falls on both alike.
// Uses DOCKER_HOST when set, else starts a private engine (scripts/docker-daemon.sh, root) for the
// run; Redis: a redis-server of its own on a free port.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { Redis } from 'ioredis';
import { AgentClient } from '../../clients/agent-client.ts';
import { DockerBackend } from '../../sdk/docker-backend.ts';
import { WarmPool } from '../../sdk/pool.ts';
import { dockerRuntimes, ensureTestImage } from '../helpers/docker.ts';
import { startRedis } from '../helpers/redis.ts';
import { BenchRun, machineLine, median, percentile, table, writeSection } from './results.ts';

const CLAIMS = Number(process.env.BENCH_CLAIMS ?? 20);
const CREATES = Number(process.env.BENCH_CREATES ?? 8);
const EXECS = Number(process.env.BENCH_EXECS ?? 400);
const WARMUP = 20;
const POOL_BATCH = 5;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const bench = new BenchRun('sdk');

const ms = (v: number) => v.toFixed(1);

async function withEngine<T>(fn: () => Promise<T>): Promise<T> {
  if (process.env.DOCKER_HOST) return fn();
  const dir = join(bench.dir, 'docker');
  const script = join(REPO, 'scripts/docker-daemon.sh');
  const started = spawnSync(script, ['start', dir], { encoding: 'utf8' });
  if (started.status !== 0) throw new Error(`no DOCKER_HOST and the private engine did not start: ${started.stderr}`);
  process.env.DOCKER_HOST = started.stdout.trim().split('=')[1];
  try {
    return await fn();
  } finally {
    spawnSync(script, ['stop', dir], { stdio: 'inherit' });
  }
}

async function redisForBench(): Promise<{ url: string; stop: () => Promise<void> }> {
  const cleanups: (() => unknown)[] = [];
  const server = await startRedis({ teardown: (fn) => cleanups.push(fn) }, { needsControl: true });
  return { url: server.url, stop: async () => { for (const fn of cleanups) await fn(); } };
}

interface RuntimeResult {
  runtime: string;
  claim: number[];
  create: number[];
}

async function measureRuntime(docker: Docker, image: string, redisUrl: string, runtime: 'runc' | 'runsc'): Promise<RuntimeResult> {
  const owner = `bench-${runtime}-${process.pid}`;
  const backend = new DockerBackend({
    docker, image, stateDir: join(bench.dir, `state-${runtime}`), owner, runtime,
    defaultResources: { cpu: '1', memory: '256Mi' }, maxResources: { cpu: '1', memory: '256Mi' }, readyTimeoutMs: 60_000,
    proxyEnv: { LOG_LEVEL: 'warn' },
  });
  const redis = new Redis(redisUrl);
  const pool = new WarmPool({ backend, redis, owner, min: POOL_BATCH, max: POOL_BATCH });
  const claim: number[] = [];
  const create: number[] = [];
  try {
    for (let i = 0; i < CREATES; i++) {
      const t0 = performance.now();
      const ws = await backend.create(`create-${i}`);
      create.push(performance.now() - t0);
      await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
    }
    let n = 0;
    while (n < CLAIMS) {
      await pool.replenish();
      const claimed: string[] = [];
      for (let i = 0; i < POOL_BATCH && n < CLAIMS; i++, n++) {
        const t0 = performance.now();
        const { workspace, source } = await pool.acquire(`claim-${n}`, { rules: [{ id: 'conversation', hosts: [`conv-${n}.example.com`] }] });
        const elapsed = performance.now() - t0;
        if (source !== 'pool') throw new Error(`claim ${n} was a ${source}, not a warm hit`);
        claim.push(elapsed);
        claimed.push(workspace.id);
      }
      for (const id of claimed) await backend.destroy(id, { gracePeriodSeconds: 0 });
    }
  } finally {
    for (const ws of await backend.list()) await backend.destroy(ws.id, { gracePeriodSeconds: 0 }).catch(() => {});
    await backend.close();
    redis.disconnect();
  }
  return { runtime, claim, create };
}

async function measureExec(docker: Docker, image: string): Promise<{ sdk: number[]; raw: number[] }> {
  const backend = new DockerBackend({
    docker, image, stateDir: join(bench.dir, 'state-exec'), owner: `bench-exec-${process.pid}`, runtime: 'runc',
    defaultResources: { cpu: '1', memory: '256Mi' }, maxResources: { cpu: '1', memory: '256Mi' }, readyTimeoutMs: 60_000,
    proxyEnv: { LOG_LEVEL: 'warn' },
  });
  const ws = await backend.create('exec');
  const token = (await import('node:fs')).readFileSync(join(bench.dir, 'state-exec', ws.id, 'agent-token'), 'utf8');
  const raw = new AgentClient({ socketPath: (ws.agent as { socketPath: string }).socketPath, token });
  const sdk: number[] = [];
  const direct: number[] = [];
  try {
    for (let i = 0; i < WARMUP; i++) {
      await backend.exec(ws.id, ['true']);
      await raw.execute({ cmd: ['true'] });
    }
    // One request per path per round, the order alternating: load falls on both alike.
    for (let i = 0; i < EXECS; i++) {
      const paths = [
        async () => { const t0 = performance.now(); await backend.exec(ws.id, ['true']); sdk.push(performance.now() - t0); },
        async () => { const t0 = performance.now(); await raw.execute({ cmd: ['true'] }); direct.push(performance.now() - t0); },
      ];
      if (i % 2) paths.reverse();
      for (const p of paths) await p();
    }
  } finally {
    raw.close();
    await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
    await backend.close();
  }
  return { sdk, raw: direct };
}

bench.run(() => withEngine(async () => {
  const docker = new Docker();
  const image = await ensureTestImage(docker);
  const runtimes = await dockerRuntimes(docker);
  const redis = await redisForBench();
  try {
    const results: RuntimeResult[] = [];
    for (const runtime of runtimes) {
      process.stdout.write(`measuring ${runtime}: ${CREATES} creates, ${CLAIMS} warm claims\n`);
      results.push(await measureRuntime(docker, image, redis.url, runtime));
    }
    process.stdout.write(`measuring exec: ${EXECS} × 2\n`);
    const exec = await measureExec(docker, image);

    const rows = results.flatMap((r) => [
      [`warm claim, ${r.runtime}`, ms(median(r.claim)), ms(percentile(r.claim, 99)), r.claim.length],
      [`create, ${r.runtime}`, ms(median(r.create)), ms(percentile(r.create, 99)), r.create.length],
    ]);
    const execSdk = median(exec.sdk);
    const execRaw = median(exec.raw);
    const overhead = (execSdk / execRaw - 1) * 100;
    const claimTargets = results.map((r) => `${r.runtime} ${ms(median(r.claim))} ms (${(median(r.create) / median(r.claim)).toFixed(0)}× faster than a create)`);
    const claimMet = results.every((r) => median(r.claim) <= 50);
    writeSection('sdk', [
      '## Workspace SDK (Docker backend)',
      '',
      `\`node test/bench/sdk.ts\` · ${machineLine()} · Docker ${(await docker.version()).Version} on a private engine; the test image (agent single executable + busybox); Redis on loopback. A warm claim is \`pool.acquire\` from a full pool: the Redis claim, the conversation's rules pushed to the workspace's proxy, the assignment recorded and the agent's /health, all before it returns. A create is \`backend.create\` until the agent answers (container start, the workspace's proxy started, /health). Pools are refilled between batches of ${POOL_BATCH} claims, outside the measured time.`,
      '',
      'Time to a usable workspace (ms):',
      '',
      table(['path', 'p50', 'p99', 'n'], rows),
      '',
      `\`exec(["true"])\` round trip over the agent's Unix socket (ms, runc, ${exec.sdk.length} rounds of one request per path, order alternating):`,
      '',
      table(['path', 'p50', 'p90', 'p99'], [
        ['agent client directly (floor)', ms(execRaw), ms(percentile(exec.raw, 90)), ms(percentile(exec.raw, 99))],
        ['through the SDK (`backend.exec`)', ms(execSdk), ms(percentile(exec.sdk, 90)), ms(percentile(exec.sdk, 99))],
      ]),
      '',
      `Targets: warm claim p50 ≤ 50 ms: ${claimTargets.join(', ')} → ${claimMet ? 'met' : 'NOT met'}; SDK exec overhead ≤ 10%: ${overhead.toFixed(1)}% → ${overhead <= 10 ? 'met' : 'NOT met'}.`,
    ].join('\n'));
    process.stdout.write('wrote the sdk section of test/bench/README.md\n');
  } finally {
    await redis.stop();
  }
}));
