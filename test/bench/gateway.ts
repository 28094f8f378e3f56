// Egress gateway benchmark, same run, same local TLS upstream:
//   sidecar → upstream (direct, today's path) vs sidecar → gateway → upstream vs squid → upstream.
//   node test/bench/gateway.ts      (root: it runs in a network namespace of its own; BENCH_GIB=1
//                                    BENCH_DOWNLOADS=3 BENCH_TUNNELS=300 BENCH_OPEN=10000 BENCH_STALLED=500 BENCH_REVIEWS=200)
// Measures, every path in the same rounds: new-tunnel latency (CONNECT + TLS handshake + 1 KiB GET,
// p50/p99), BENCH_DOWNLOADS tunnels each downloading BENCH_GIB GiB (medians), the gateway's CPU per GiB and per 1,000 new tunnels (user+system from /proc), token
// validation (cached and uncached, against the stand-in Kubernetes API of
// test/helpers/kube-api-stand-in.ts: no API server runs here, so "uncached" is a TokenReview and a
// pod read over local HTTPS, a floor for a real API server), and the gateway's RSS with BENCH_OPEN
// open idle tunnels and with BENCH_STALLED tunnels whose clients stop reading a large download. The gateway refuses loopback upstreams, so the bench re-executes itself in a fresh
// network namespace joined by a veth to another holding the upstream on 198.51.100.10 (TEST-NET,
// opened with GATEWAY_LAB_CIDRS), and removes both at the end.
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createKubernetesApi } from '../../gateway/kubernetes.ts';
import { GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES, GATEWAY_RESERVE_BYTES, gatewayMaxTunnelsFor } from '../../gateway/config.ts';
import { TUNNEL_WORST_CASE_BYTES } from '../../credential-proxy/memory.ts';
import { TokenValidator } from '../../gateway/token-review.ts';
import { bundleProgram, DEFAULT_BUNDLE_DIR } from '../../scripts/bundle.ts';
import { startKubeApiStandIn } from '../helpers/kube-api-stand-in.ts';
import { freePort } from '../helpers/listen.ts';
import { BenchRun, LoadSampler, machineLine, median, percentile, table, writeSection } from './results.ts';
import { connectRequest, GIB, measureAll, openTunnels, rssMiB, stallTunnels, startSquid, waitForPort, writeUpstream, type Measured, type TunnelPath } from './tunnels.ts';

const SELF = fileURLToPath(import.meta.url);
// Each open tunnel holds two descriptors in the gateway: raise the limit for the bench and
// everything it starts (root with CAP_SYS_RESOURCE may pass the hard limit; otherwise the hard limit).
const RAISE_NOFILE = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"';
if (!process.env.WS_BENCH_NETNS) {
  if (process.getuid?.() !== 0) throw new Error('the gateway bench needs root (it runs in network namespaces of its own)');
  // Two namespaces joined by a veth: the bench's (client, proxies, gateway, squid) and the
  // upstream's (198.51.100.10), so the gateway sees the upstream as a remote lab address.
  const ns = `wsb-gw-${process.pid}`;
  const up = `${ns}-up`;
  const ip = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' });
  const cleanup = () => { ip('netns', 'del', ns); ip('netns', 'del', up); };
  process.once('exit', cleanup);
  if (ip('netns', 'add', ns).status !== 0 || ip('netns', 'add', up).status !== 0) throw new Error('cannot create network namespaces');
  const status = (() => {
    try {
      ip('link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', up);
      for (const [n, addr] of [[ns, '198.51.100.1/24'], [up, '198.51.100.10/24']] as const) {
        ip('-n', n, 'link', 'set', 'lo', 'up');
        ip('-n', n, 'addr', 'add', addr, 'dev', 'eth0');
        ip('-n', n, 'link', 'set', 'eth0', 'up');
      }
      return spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', `${RAISE_NOFILE} && exec "$@"`, 'sh', process.execPath, SELF],
        { stdio: 'inherit', env: { ...process.env, WS_BENCH_NETNS: ns, WS_BENCH_UPSTREAM_NETNS: up } }).status;
    } finally {
      cleanup();
    }
  })();
  process.exit(status ?? 1);
}

const SIZE_GIB = Number(process.env.BENCH_GIB ?? 1);
const TUNNELS = Number(process.env.BENCH_TUNNELS ?? 300);
const DOWNLOADS = Number(process.env.BENCH_DOWNLOADS ?? 3);
// Two descriptors per open tunnel in the gateway: 10,000 unless this process's descriptor limit
// (inherited by the gateway) is lower, as where the hard limit is 20,000 and cannot be raised.
const NOFILE = Number(/Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? 20_000);
const STALLED = Number(process.env.BENCH_STALLED ?? 500);
const OPEN = Number(process.env.BENCH_OPEN ?? Math.min(10_000, Math.floor((NOFILE - 200) / 200) * 100));
const REVIEWS = Number(process.env.BENCH_REVIEWS ?? 200);
const HOST = 'api.lab.test';
/** The gateway container's memory limit in the base manifests, and the tunnel cap it gives. */
const LIMIT_MIB = GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES / 1048576;
const CAP = gatewayMaxTunnelsFor(GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES);
const UP = '198.51.100.10';

const bench = new BenchRun('gateway');
const dir = bench.dir;
chmodSync(dir, 0o777); // squid drops privileges and writes its log and pid here
const upstream = writeUpstream(dir, [HOST, UP]);
const tls = { servername: HOST, ca: upstream.caPem };

async function main(): Promise<void> {
  const load = new LoadSampler();
  // Run what the image runs: the proxy image's bundle (`npm run build:bundles`), which holds both
  // the sidecar and the gateway.
  const bin = await bundleProgram('proxy', join(DEFAULT_BUNDLE_DIR, 'proxy'));
  const upPort = await freePort();
  bench.start('ip', ['netns', 'exec', process.env.WS_BENCH_UPSTREAM_NETNS!, 'sh', '-c', `${RAISE_NOFILE} && exec "$@"`, 'sh',
    process.execPath, ...upstream.args(upPort, UP)], process.env);
  await waitForPort(upPort, UP);

  // The Kubernetes API stand-in, in this process; the sidecar connects from 127.0.0.1, its pod's IP.
  const api = await startKubeApiStandIn();
  const kubeconfig = api.writeKubeconfig(dir);
  const pod = api.addPod({ namespace: 'sandboxes', name: 'ws-bench', podIPs: ['127.0.0.1'] });
  writeFileSync(join(dir, 'token'), api.mint(pod));

  const gwPort = await freePort();
  const gwMetrics = await freePort();
  const gateway = bench.start(process.execPath, [bin, 'gateway'], {
    PATH: process.env.PATH, GATEWAY_HOST: '127.0.0.1', GATEWAY_PORT: String(gwPort), GATEWAY_METRICS_HOST: '127.0.0.1', GATEWAY_METRICS_PORT: String(gwMetrics),
    KUBECONFIG: kubeconfig, GATEWAY_LAB_CIDRS: '198.51.100.0/24', GATEWAY_STATIC_HOSTS: `${HOST}=${UP}`, GATEWAY_PORTS: String(upPort),
    MEMORY_LIMIT_BYTES: String(GATEWAY_RESERVE_BYTES + (OPEN + 1000) * TUNNEL_WORST_CASE_BYTES), MAX_TUNNELS_PER_POD: String(OPEN + 1000), LOG_LEVEL: 'warn',
  });
  await waitForPort(gwMetrics);
  await new Promise((r) => setTimeout(r, 500));
  const gwIdle = rssMiB(gateway.pid!);

  writeFileSync(join(dir, 'rules.json'), JSON.stringify([{ id: 'bench', hosts: [HOST], ports: [upPort], allowPrivate: true }]));
  const sidecar = async (extra: Record<string, string>) => {
    const port = await freePort();
    const admin = await freePort();
    const p = bench.start(process.execPath, [bin, 'proxy'], {
      PATH: process.env.PATH, PROXY_PORT: String(port), ADMIN_PORT: String(admin), ADMIN_HOST: '127.0.0.1', RULES_FILE: join(dir, 'rules.json'),
      CA_DIR: join(dir, `ca-${port}`), LOG_LEVEL: 'warn', MEMORY_LIMIT_BYTES: String(4 * GIB), ...extra,
    });
    await waitForPort(admin);
    return { port, pid: p.pid! };
  };
  const direct = await sidecar({ STATIC_HOSTS: `${HOST}=${UP}` });
  const chained = await sidecar({ GATEWAY_URL: `http://127.0.0.1:${gwPort}`, GATEWAY_TOKEN_FILE: join(dir, 'token') });
  const authority = `${HOST}:${upPort}`;
  const auth = `Proxy-Authorization: Bearer ${readFileSync(join(dir, 'token'), 'utf8')}\r\n`;
  const GATEWAY_PATH = 'sidecar → gateway → upstream';
  // The gateway alone (the client presents the pod's token itself), to compare with squid alone.
  const GATEWAY_ALONE = 'gateway → upstream (no sidecar)';
  const paths: TunnelPath[] = [
    { name: 'sidecar → upstream (today)', port: direct.port, authority, pid: direct.pid },
    { name: GATEWAY_PATH, port: chained.port, authority, pid: chained.pid },
    { name: GATEWAY_ALONE, port: gwPort, authority, headers: auth, pid: gateway.pid! },
  ];
  const squidProcess = await startSquid((cmd, args) => bench.start(cmd, args, process.env), dir);
  if (squidProcess) paths.push({ name: `squid ${squidProcess.version} → upstream`, port: squidProcess.port, authority: `${UP}:${upPort}`, pid: squidProcess.pid });

  const bytes = Math.round(SIZE_GIB * GIB);
  const measured = await measureAll(paths, tls, { tunnels: TUNNELS, bytes, downloads: DOWNLOADS, pids: [...new Set(paths.map((p) => p.pid!))] });
  const res: Record<string, Measured> = {};
  for (const path of paths) {
    const r = measured.get(path)!;
    res[path.name] = r;
    process.stdout.write(`${path.name}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.mbps.toFixed(0)} MB/s, ${r.cpuPerGiB.get(path.pid!)!.toFixed(2)} CPU-s/GiB (first hop)\n`);
  }
  const gw = res[GATEWAY_PATH]!;
  const gwPer1000 = (gw.tunnelCpu.get(gateway.pid!)! / TUNNELS) * 1000;
  const gwPerGiB = gw.cpuPerGiB.get(gateway.pid!)!;
  const today = res[paths[0]!.name]!;
  const rows = paths.map((path) => {
    const r = res[path.name]!;
    const vsToday = path === paths[0] ? '—' : `${r.p50 - today.p50 >= 0 ? '+' : ''}${(r.p50 - today.p50).toFixed(2)}`;
    return [path.name, r.p50.toFixed(2), r.p99.toFixed(2), vsToday, r.mbps.toFixed(0), r.cpuPerGiB.get(path.pid!)!.toFixed(2)];
  });

  // Token validation: uncached = TokenReview + pod read (fresh tokens); cached = the same token again.
  const validator = new TokenValidator(await createKubernetesApi(kubeconfig), {
    audience: 'workspace-sandbox-gateway', namespaces: ['sandboxes'], bindSourceAddress: true,
    cacheTtlMs: 60_000, negativeTtlMs: 5_000, cacheMax: 100_000, maxPending: 1000, timeoutMs: 5_000,
  });
  const tokens = Array.from({ length: REVIEWS }, () => api.mint(pod));
  const uncached: number[] = [];
  for (const tk of tokens) {
    const t0 = performance.now();
    const r = await validator.validate(`Bearer ${tk}`, '127.0.0.1');
    uncached.push(performance.now() - t0);
    if (!r.ok) throw new Error(`validation failed: ${r.message}`);
  }
  const cached: number[] = [];
  for (let i = 0; i < REVIEWS * 10; i++) {
    const t0 = performance.now();
    await validator.validate(`Bearer ${tokens[i % tokens.length]!}`, '127.0.0.1');
    cached.push(performance.now() - t0);
  }

  // Gateway memory with OPEN open tunnels straight to it (idle bytes).
  const afterRuns = rssMiB(gateway.pid!);
  const { sockets: open, opened, stopped } = await openTunnels(gwPort, connectRequest(authority, auth), OPEN, 100);
  if (stopped) process.stdout.write(`open tunnels stopped at ${opened}: ${stopped}\n`);
  await new Promise((r) => setTimeout(r, 1000));
  const loaded = rssMiB(gateway.pid!);
  for (const s of open) s.destroy();
  await new Promise((r) => setTimeout(r, 1000));

  // Gateway memory with STALLED tunnels whose clients ask for a large download and never read:
  // what one tunnel holds at worst on the download side (relay buffers, socket queues).
  const beforeStalled = rssMiB(gateway.pid!);
  const stalled = await stallTunnels({ name: 'stalled', port: gwPort, authority, headers: auth }, tls, STALLED, GIB);
  await new Promise((r) => setTimeout(r, 2000));
  const stalledRss = rssMiB(gateway.pid!);
  const perStalledKiB = ((stalledRss - beforeStalled) * 1024) / STALLED;
  for (const s of stalled) s.destroy();
  await api.close();

  const squidRow = squidProcess ? res[paths[3]!.name] : undefined;
  const alone = res[GATEWAY_ALONE]!;
  const aloneCpu = alone.cpuPerGiB.get(gateway.pid!)!;
  const squid = squidRow && { mbps: squidRow.mbps, cpuPerGiB: squidRow.cpuPerGiB.get(squidProcess!.pid)! };
  const added = gw.p50 - today.p50;
  const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const perTunnelKiB = ((loaded - afterRuns) * 1024) / Math.max(1, opened);
  const at10k = opened >= 10_000 ? loaded : afterRuns + (perTunnelKiB * 10_000) / 1024;
  const stalled10k = beforeStalled + (perStalledKiB * 10_000) / 1024;
  const targets = [
    `added p50 for a new tunnel ≤ 1 ms over today's sidecar path: ${added >= 0 ? '+' : ''}${added.toFixed(2)} ms → ${met(added <= 1)}`,
    squid ? `gateway throughput ≥ squid's (each alone): ${alone.mbps.toFixed(0)} vs ${squid.mbps.toFixed(0)} MB/s → ${met(alone.mbps >= squid.mbps)} (sidecar → gateway, two hops: ${gw.mbps.toFixed(0)} MB/s)` : 'squid not installed',
    squid ? `gateway CPU/GiB ≤ squid's (each alone): ${aloneCpu.toFixed(2)} vs ${squid.cpuPerGiB.toFixed(2)} CPU-s → ${met(aloneCpu <= squid.cpuPerGiB)} (behind a sidecar: ${gwPerGiB.toFixed(2)})` : '—',
    `gateway memory bounded with 10,000 open tunnels (its container limit, manifests/base/gateway/deployment.yaml, is ${LIMIT_MIB} MiB, which caps a replica at ${CAP} tunnels of ${TUNNEL_WORST_CASE_BYTES / 1024} KiB at worst; this run raises the limit to open them all): ${opened} opened, ${loaded.toFixed(1)} MiB RSS (${perTunnelKiB.toFixed(1)} KiB per tunnel)${opened < 10_000 ? `, ≈${at10k.toFixed(0)} MiB at 10,000 by that figure` : ''}; 10,000 whose clients stop reading ≈${stalled10k.toFixed(0)} MiB by the stalled figure (${perStalledKiB.toFixed(0)} KiB each) → ${met(Math.max(at10k, stalled10k) <= LIMIT_MIB)}`,
  ];
  const { line: loadLine } = load.stop();
  process.stdout.write(`${loadLine}\nTargets:\n${targets.map((l) => `  ${l}`).join('\n')}\n`);
  writeSection('gateway', [
    '## Egress gateway (sidecar → gateway → upstream)',
    '',
    `\`node test/bench/gateway.ts\` · ${machineLine()} · ${loadLine}`,
    `Local TLS upstream on 198.51.100.10 in a second network namespace behind a veth; every proxy a child process (the sidecar and the gateway from the proxy image's bundle, \`dist/bundle/proxy/workspace-sandbox.mjs\`, as the image runs them); ${TUNNELS} new tunnels of CONNECT + TLS handshake + 1 KiB; ${DOWNLOADS} tunnels each downloading ${SIZE_GIB} GiB (medians); CPU-s/GiB is the first hop's (the sidecar, the gateway, or squid).`,
    '',
    table(['path', 'new tunnel p50 (ms)', 'p99 (ms)', 'p50 vs today (ms)', 'download (MB/s)', 'first hop CPU-s/GiB'], rows),
    '',
    `Gateway CPU behind a sidecar: ${gwPerGiB.toFixed(2)} CPU-s per GiB relayed; ${gwPer1000.toFixed(2)} CPU-s per 1,000 new tunnels (token cached).`,
    `Token validation (stand-in API over local HTTPS, ${REVIEWS} tokens): uncached (TokenReview + pod read) p50 ${median(uncached).toFixed(2)} ms, p99 ${percentile(uncached, 99).toFixed(2)} ms; cached p50 ${(median(cached) * 1000).toFixed(1)} µs.`,
    `Gateway RSS: idle ${gwIdle.toFixed(1)} MiB; after the runs ${afterRuns.toFixed(1)} MiB; with ${opened} open idle tunnels ${loaded.toFixed(1)} MiB; with ${STALLED} tunnels whose clients stop reading a 1 GiB download ${stalledRss.toFixed(1)} MiB (${perStalledKiB.toFixed(0)} KiB per tunnel over ${beforeStalled.toFixed(1)} MiB).`,
    '',
    'Targets: ' + targets.join('; ') + '.',
  ].join('\n'));
}

bench.run(main);
