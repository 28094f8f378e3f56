// Workspace agent benchmark, every path in the same run:
//   node test/bench/agent.ts        (BENCH_N=1000 BENCH_STREAM_MIB=1024 BENCH_BATCHES=20 to change sizes)
// - `/execute ["true"]` round trip, sequential over one keep-alive connection: the agent over TCP
//   and over its Unix socket, vs a bare child_process.spawn("true") in this process (the floor:
//   the agent cannot be faster than the spawn it does), vs the old path (socat TCP → Unix socket
//   in front of a minimal exec server, what the agent replaces);
// - stdout streaming throughput of `head -c 1G /dev/zero` as NDJSON (base64 frames), vs reading
//   the same pipe in this process (the pipe floor);
// - 50 concurrent commands (wall time per batch of 50);
// - agent start to the first /health 200 (the single executable; node + bundle and node + the
//   TypeScript sources through the bin for comparison).
// The agent runs as a child process: the single executable built here by
// scripts/build-agent-sea.ts (the deployed artifact), or node + an esbuild bundle when that fails.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Agent, request, type RequestOptions } from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { BenchRun, machineLine, median, percentile, table, writeSection } from './results.ts';
import { freePort } from '../helpers/listen.ts';

const N = Number(process.env.BENCH_N ?? 1000);
const WARMUP = Math.min(100, Math.ceil(N / 10));
const STREAM_MIB = Number(process.env.BENCH_STREAM_MIB ?? 1024);
const BATCHES = Number(process.env.BENCH_BATCHES ?? 20);
const CONCURRENCY = 50;
const STARTS = 10;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(REPO, 'bin/workspace-sandbox.ts');
const bench = new BenchRun('agent');
const dir = bench.dir;


function start(cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  return bench.start(cmd, args, { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env });
}

type Target = { port: number } | { socketPath: string };

function post(target: Target, agent: Agent, body: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
  const base: RequestOptions = 'port' in target ? { host: '127.0.0.1', port: target.port } : { socketPath: target.socketPath };
  return new Promise((resolve, reject) => {
    const req = request({ ...base, agent, method: 'POST', path: '/execute', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function health(target: Target): Promise<boolean> {
  const base: RequestOptions = 'port' in target ? { host: '127.0.0.1', port: target.port } : { socketPath: target.socketPath };
  return new Promise((resolve) => {
    const req = request({ ...base, path: '/health', agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode === 200)); });
    req.on('error', () => resolve(false));
    req.end();
  });
}

async function waitHealthy(target: Target, timeoutMs = 20_000, stepMs = 20): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await health(target)) return;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error('agent never became healthy');
}

const TRUE = JSON.stringify({ cmd: ['true'] });

interface Latency { name: string; p50: number; p90: number; p99: number }

/**
 * Round trips of every path, interleaved (one of each per round) so that load from other work on
 * the machine falls on all paths alike instead of on whichever ran during a busy minute.
 */
async function latencies(paths: [string, () => Promise<void>][]): Promise<Latency[]> {
  for (let i = 0; i < WARMUP; i++) for (const [, once] of paths) await once();
  const times: number[][] = paths.map(() => []);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < paths.length; j++) {
      const t0 = performance.now();
      await paths[j]![1]();
      times[j]!.push(performance.now() - t0);
    }
  }
  return paths.map(([name], j) => {
    const r = { name, p50: median(times[j]!), p90: percentile(times[j]!, 90), p99: percentile(times[j]!, 99) };
    process.stdout.write(`${name}: p50 ${r.p50.toFixed(3)} ms, p90 ${r.p90.toFixed(3)}, p99 ${r.p99.toFixed(3)}\n`);
    return r;
  });
}

/** user + system CPU time of a process so far, in ms (clock ticks are 1/100 s on Linux). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function rssAnonMiB(pid: number): number {
  return Number(/RssAnon:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
}

function spawnTrue(): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn('true');
    c.on('error', reject);
    c.on('close', () => resolve());
  });
}

/** The old path's server: the smallest Unix-socket exec server (JSON in, spawn, JSON out). */
const OLD_SERVER = `
const http = require('node:http'); const { spawn } = require('node:child_process');
http.createServer((req, res) => {
  const chunks = []; req.on('data', (c) => chunks.push(c)); req.on('end', () => {
    const { cmd } = JSON.parse(Buffer.concat(chunks).toString());
    const c = spawn(cmd[0], cmd.slice(1)); const out = []; const err = [];
    c.stdout.on('data', (d) => out.push(d)); c.stderr.on('data', (d) => err.push(d));
    c.on('close', (code) => { const body = JSON.stringify({ exitCode: code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }); res.end(body); });
  });
}).listen(process.argv[1]);
`;

async function streamThroughput(target: Target, mib: number): Promise<{ mbps: number; exit: Record<string, unknown> }> {
  const agent = new Agent({ keepAlive: false });
  const body = JSON.stringify({ cmd: ['head', '-c', `${mib}M`, '/dev/zero'], encoding: 'base64', timeoutMs: 600_000 });
  const base: RequestOptions = 'port' in target ? { host: '127.0.0.1', port: target.port } : { socketPath: target.socketPath };
  const t0 = performance.now();
  const last = await new Promise<string>((resolve, reject) => {
    const req = request({ ...base, agent, method: 'POST', path: '/execute', headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let tail = '';
      // Only the end matters (the exit frame): decode no more than that, the client shares the CPUs.
      res.on('data', (c: Buffer) => { tail = (tail + c.subarray(-2048).toString('latin1')).slice(-2048); });
      res.on('end', () => resolve(tail));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
  const seconds = (performance.now() - t0) / 1000;
  const lines = last.trim().split('\n');
  const exit = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
  if (exit.type !== 'exit' || exit.stdoutBytes !== mib * 2 ** 20) throw new Error(`unexpected end of stream: ${lines.at(-1)}`);
  return { mbps: (mib * 2 ** 20) / 1e6 / seconds, exit };
}

function pipeFloor(mib: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const c = spawn('head', ['-c', `${mib}M`, '/dev/zero'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let n = 0;
    c.stdout!.on('data', (d: Buffer) => { n += d.length; });
    c.on('error', reject);
    c.on('close', () => resolve(n / 1e6 / ((performance.now() - t0) / 1000)));
  });
}

async function concurrent(name: string, batch: () => Promise<void>): Promise<{ name: string; p50: number; p90: number }> {
  for (let i = 0; i < 3; i++) await batch();
  const times: number[] = [];
  for (let i = 0; i < BATCHES; i++) {
    const t0 = performance.now();
    await batch();
    times.push(performance.now() - t0);
  }
  const r = { name, p50: median(times), p90: percentile(times, 90) };
  process.stdout.write(`${name}: ${CONCURRENCY} concurrent, batch p50 ${r.p50.toFixed(1)} ms, p90 ${r.p90.toFixed(1)}\n`);
  return r;
}

async function startToHealthy(cmd: string[], env: Record<string, string>, port: number): Promise<number> {
  const t0 = performance.now();
  const child = start(cmd[0]!, cmd.slice(1), env);
  await waitHealthy({ port }, 20_000, 2);
  const ms = performance.now() - t0;
  child.kill('SIGTERM');
  await once(child, 'exit');
  return ms;
}

async function main(): Promise<void> {
  const bundle = join(dir, 'agent.cjs');
  await build({
    stdin: { contents: "import { main } from './agent/main.ts';\nmain(process.argv.slice(2)).then((c) => { if (c) process.exitCode = c; });", resolveDir: REPO, loader: 'ts' },
    bundle: true, platform: 'node', format: 'cjs', target: 'node24', outfile: bundle, logLevel: 'error',
    define: { 'import.meta.url': '__agentUrl' },
    banner: { js: 'const __agentUrl = require("node:url").pathToFileURL(process.execPath).href;' },
  });
  // The deployed artifact: the single executable (scripts/build-agent-sea.ts). Falls back to the
  // bundle run by node when it cannot be built here.
  let agentCmd = [process.execPath, bundle];
  let artifact = 'an esbuild CommonJS bundle of agent/main.ts run by node';
  try {
    const sea = await import(pathToFileURL(join(REPO, 'scripts/build-agent-sea.ts')).href) as { buildAgentSea(out: string): Promise<{ output: string }> };
    agentCmd = [(await sea.buildAgentSea(join(dir, 'workspace-agent'))).output];
    artifact = 'the single executable built by scripts/build-agent-sea.ts';
  } catch (err) {
    process.stderr.write(`single executable not built (${(err as Error).message.split('\n')[0]}); measuring the bundle\n`);
  }
  const root = join(dir, 'workspace');
  spawnSync('mkdir', ['-p', root]);
  const port = await freePort();
  const socketPath = join(dir, 'agent.sock');
  const common = { AGENT_WORKSPACE_ROOT: root, AGENT_MAX_CONCURRENT: String(CONCURRENCY + 14), LOG_LEVEL: 'info' };
  const tcpProc = start(agentCmd[0]!, agentCmd.slice(1), { ...common, AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port) });
  const udsProc = start(agentCmd[0]!, agentCmd.slice(1), { ...common, AGENT_LISTEN_MODE: 'uds', AGENT_SOCKET: socketPath });
  const oldSock = join(dir, 'old.sock');
  const socatPort = await freePort();
  const oldProc = start(process.execPath, ['-e', OLD_SERVER, oldSock]);
  await waitHealthy({ port });
  await waitHealthy({ socketPath });
  await new Promise((r) => setTimeout(r, 300));
  const socatVersion = spawnSync('socat', ['-V'], { encoding: 'utf8' }).stdout?.match(/socat version ([\d.]+)/)?.[1];
  if (socatVersion) start('socat', [`TCP-LISTEN:${socatPort},bind=127.0.0.1,reuseaddr,fork,backlog=128`, `UNIX-CONNECT:${oldSock}`]);
  await new Promise((r) => setTimeout(r, 300));

  const keep = () => new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const tcpAgent = keep();
  const udsAgent = keep();
  const socatAgent = keep();
  const check = (r: { status: number; body: Buffer }) => {
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.toString()}`);
  };

  process.stdout.write(`${machineLine()}; N=${N} (+${WARMUP} warm-up)\n`);
  const paths: [string, () => Promise<void>][] = [
    ['spawn("true") in-process (floor)', spawnTrue],
    ['agent over TCP', async () => check(await post({ port }, tcpAgent, TRUE))],
    ['agent over Unix socket', async () => check(await post({ socketPath }, udsAgent, TRUE))],
  ];
  if (socatVersion) paths.push([`old path: socat ${socatVersion} TCP → UDS exec server`, async () => check(await post({ port: socatPort }, socatAgent, TRUE))]);
  const cpuBefore = [tcpProc, udsProc, oldProc].map((c) => cpuMs(c.pid!));
  const [floor, tcp, uds, old] = (await latencies(paths)) as [Latency, Latency, Latency, Latency | undefined];
  const floorP50 = floor.p50;
  const requests = N + WARMUP;
  const [cpuTcp, cpuUds, cpuOld] = [tcpProc, udsProc, oldProc].map((c, i) => (cpuMs(c.pid!) - cpuBefore[i]!) / requests) as [number, number, number];
  process.stdout.write(`server CPU per request (user+system, ms): agent TCP ${cpuTcp.toFixed(3)}, agent UDS ${cpuUds.toFixed(3)}, old exec server ${cpuOld.toFixed(3)}\n`);
  const [anonAgent, anonOld] = [tcpProc, oldProc].map((c) => rssAnonMiB(c.pid!)) as [number, number];
  process.stdout.write(`anonymous memory after the runs: agent ${anonAgent.toFixed(1)} MiB, old exec server ${anonOld.toFixed(1)} MiB\n`);

  const pipe = await pipeFloor(STREAM_MIB);
  process.stdout.write(`pipe floor (head -c ${STREAM_MIB}M /dev/zero read in-process): ${pipe.toFixed(0)} MB/s\n`);
  const streamTcp = await streamThroughput({ port }, STREAM_MIB);
  process.stdout.write(`streaming over TCP (NDJSON, base64): ${streamTcp.mbps.toFixed(0)} MB/s\n`);
  const streamUds = await streamThroughput({ socketPath }, STREAM_MIB);
  process.stdout.write(`streaming over UDS (NDJSON, base64): ${streamUds.mbps.toFixed(0)} MB/s\n`);

  const conc = [
    await concurrent('spawn("true") in-process (floor)', async () => { await Promise.all(Array.from({ length: CONCURRENCY }, spawnTrue)); }),
    await concurrent('agent over TCP', async () => { await Promise.all(Array.from({ length: CONCURRENCY }, async () => check(await post({ port }, tcpAgent, TRUE)))); }),
    await concurrent('agent over Unix socket', async () => { await Promise.all(Array.from({ length: CONCURRENCY }, async () => check(await post({ socketPath }, udsAgent, TRUE)))); }),
  ];
  if (socatVersion) {
    try {
      conc.push(await concurrent('old path (socat)', async () => { await Promise.all(Array.from({ length: CONCURRENCY }, async () => check(await post({ port: socatPort }, socatAgent, TRUE)))); }));
    } catch (err) {
      process.stdout.write(`old path (socat), ${CONCURRENCY} concurrent: failed (${(err as Error).message})\n`);
    }
  }

  const starts: Record<'artifact' | 'bundle' | 'source', number[]> = { artifact: [], bundle: [], source: [] };
  for (let i = 0; i < STARTS; i++) {
    const p = await freePort();
    const env = { ...common, AGENT_HOST: '127.0.0.1', AGENT_PORT: String(p) };
    starts.artifact.push(await startToHealthy(agentCmd, env, p));
    starts.bundle.push(await startToHealthy([process.execPath, bundle], env, p));
    starts.source.push(await startToHealthy([process.execPath, BIN, 'agent'], env, p));
  }
  const startArtifact = median(starts.artifact);
  const startBundle = median(starts.bundle);
  const startSource = median(starts.source);
  process.stdout.write(`start → /health 200 p50: measured artifact ${startArtifact.toFixed(0)} ms, node + bundle ${startBundle.toFixed(0)} ms, node + TypeScript sources ${startSource.toFixed(0)} ms\n`);

  const f = (n: number) => n.toFixed(3);
  const rows: (string | number)[][] = [
    ['bare `spawn("true")` in-process (floor)', f(floorP50), f(floor.p90), f(floor.p99), '1.00×', '—'],
    ['agent, TCP', f(tcp.p50), f(tcp.p90), f(tcp.p99), `${(tcp.p50 / floorP50).toFixed(2)}×`, f(cpuTcp)],
    ['agent, Unix socket', f(uds.p50), f(uds.p90), f(uds.p99), `${(uds.p50 / floorP50).toFixed(2)}×`, f(cpuUds)],
  ];
  if (old) rows.push([`old path: socat ${socatVersion} TCP → UDS + minimal exec server`, f(old.p50), f(old.p90), f(old.p99), `${(old.p50 / floorP50).toFixed(2)}×`, `${f(cpuOld)} (+ socat)`]);
  const worst = Math.max(tcp.p50, uds.p50);
  const targets = [
    `p50 ≤ 1.4× the spawn floor: TCP ${(tcp.p50 / floorP50).toFixed(2)}×, UDS ${(uds.p50 / floorP50).toFixed(2)}× → ${worst <= 1.4 * floorP50 ? 'met' : 'NOT met'}`,
    `p50 below the socat path: ${old ? `${f(worst)} vs ${f(old.p50)} ms → ${worst < old.p50 ? 'met' : 'NOT met'}` : 'socat not installed'}`,
    `streaming ≥ 200 MB/s: TCP ${streamTcp.mbps.toFixed(0)}, UDS ${streamUds.mbps.toFixed(0)} MB/s → ${Math.min(streamTcp.mbps, streamUds.mbps) >= 200 ? 'met' : 'NOT met'}`,
    `executable start ≤ 150 ms: ${startArtifact.toFixed(0)} ms → ${startArtifact <= 150 ? 'met' : 'NOT met'}`,
  ];
  writeSection('agent', [
    '## Workspace agent (/execute)',
    '',
    `\`node test/bench/agent.ts\` · ${machineLine()} · the agent is a child process running ${artifact}; client in the bench process, one keep-alive connection per path; ${N} rounds after ${WARMUP} warm-up, each round one request per path (interleaved, so machine load falls on every path alike).`,
    '',
    '`/execute {"cmd":["true"]}` round trip (ms):',
    '',
    table(['path', 'p50', 'p90', 'p99', 'p50 vs floor', 'server CPU ms/request'], rows),
    '',
    `Server anonymous memory (RssAnon) after these runs: agent ${anonAgent.toFixed(1)} MiB, old exec server ${anonOld.toFixed(1)} MiB. Most of a \`["true"]\` round trip is the spawn itself, and Node spawns with fork(), which copies the spawning process's page tables: the cost grows with its anonymous memory (on this machine, loaded, a spawn() call took 2.4 ms from a process with 9 MB, 6.2 ms with 45 MB, 10 ms with 137 MB). The floor is spawned from the bench process; against the minimal exec server the agent pays for its larger heap.`,
    '',
    `Streaming \`head -c ${STREAM_MIB}M /dev/zero\` as NDJSON with base64 frames (MB/s = 10^6 bytes of command output per second): TCP ${streamTcp.mbps.toFixed(0)}, Unix socket ${streamUds.mbps.toFixed(0)}; reading the same pipe in-process (floor): ${pipe.toFixed(0)}.`,
    '',
    `${CONCURRENCY} concurrent \`["true"]\` commands, wall time per batch (ms, ${BATCHES} batches):`,
    '',
    table(['path', 'batch p50', 'batch p90'], conc.map((c) => [c.name, c.p50.toFixed(1), c.p90.toFixed(1)])),
    '',
    `Process start → first \`/health\` 200, median of ${STARTS}: the measured artifact ${startArtifact.toFixed(0)} ms (min ${Math.min(...starts.artifact).toFixed(0)}); node + bundle ${startBundle.toFixed(0)} ms; node + TypeScript sources through the bin ${startSource.toFixed(0)} ms.`,
    '',
    'Targets: ' + targets.join('; ') + '.',
  ].join('\n'));
  tcpAgent.destroy();
  udsAgent.destroy();
  socatAgent.destroy();
}

bench.run(main);
