// Egress proxy benchmark: direct TLS vs this proxy vs squid vs tinyproxy, same run, same upstream.
//   node test/bench/proxy.ts            (BENCH_GIB=1 BENCH_DOWNLOADS=3 BENCH_TUNNELS=300 BENCH_OPEN=1000 to change sizes)
// Measures, every path in the same rounds: new-tunnel latency (CONNECT + TLS handshake + GET of 1 KiB, p50/p99),
// throughput of BENCH_DOWNLOADS tunnels each downloading BENCH_GIB GiB over TLS (medians; MB/s =
// 10^6 bytes/s), and the proxy's CPU seconds per GiB (user+system from /proc); then this proxy's RSS idle and with
// BENCH_OPEN open tunnels. Every process is a child on loopback ports picked at run time.
import { spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleProgram, DEFAULT_BUNDLE_DIR } from '../../scripts/bundle.ts';
import { RESERVE_BYTES, TUNNEL_SHARE, TUNNEL_WORST_CASE_BYTES } from '../../credential-proxy/memory.ts';
import { freePort } from '../helpers/listen.ts';
import { BenchRun, LoadSampler, machineLine, table, writeSection } from './results.ts';
import { connectRequest, GIB, measureAll, openTunnels, rssMiB, startSquid, toolVersion, waitForPort, writeUpstream, type Measured, type TunnelPath } from './tunnels.ts';

const SIZE_GIB = Number(process.env.BENCH_GIB ?? 1);
const DOWNLOADS = Number(process.env.BENCH_DOWNLOADS ?? 3);
const TUNNELS = Number(process.env.BENCH_TUNNELS ?? 300);
const OPEN = Number(process.env.BENCH_OPEN ?? 1000);
const HOST = 'localhost';

const bench = new BenchRun('proxy');
const dir = bench.dir;
chmodSync(dir, 0o777); // squid drops privileges and writes its log and pid here
const upstream = writeUpstream(dir, [HOST, '127.0.0.1']);
const tls = { servername: HOST, ca: upstream.caPem };
const start = (cmd: string, args: string[], env: Record<string, string> = {}) => bench.start(cmd, args, { ...process.env, ...env });

async function main(): Promise<void> {
  const load = new LoadSampler();
  const upstreamPort = await freePort();
  start(process.execPath, upstream.args(upstreamPort, '127.0.0.1'));
  await waitForPort(upstreamPort);

  // This proxy, as production runs it: the bin, env config, a rules file, info logs.
  const ours = await freePort();
  const oursAdmin = await freePort();
  writeFileSync(join(dir, 'rules.json'), JSON.stringify([{ id: 'bench', hosts: [HOST], ports: [upstreamPort], allowPrivate: true }]));
  // Run what the image runs: the proxy's bundle (`npm run build:bundles`), not TypeScript stripped
  // at load (which costs ~35 MB of RSS).
  const bundle = await bundleProgram('proxy', join(DEFAULT_BUNDLE_DIR, 'proxy'));
  const proxy = start(process.execPath, [bundle, 'proxy'], {
    PROXY_PORT: String(ours), ADMIN_PORT: String(oursAdmin), ADMIN_HOST: '127.0.0.1', RULES_FILE: join(dir, 'rules.json'),
    // The open-tunnels run needs a memory limit whose derived cap holds OPEN tunnels (the bench
    // process is not in a cgroup; the limit only sets the caps).
    MEMORY_LIMIT_BYTES: String(RESERVE_BYTES + Math.ceil(((OPEN + 100) * TUNNEL_WORST_CASE_BYTES) / TUNNEL_SHARE)), LOG_LEVEL: 'info', CA_DIR: dir,
  });
  await waitForPort(oursAdmin);
  await new Promise((r) => setTimeout(r, 1000));
  const idle = rssMiB(proxy.pid!); // before any traffic

  const authority = `${HOST}:${upstreamPort}`;
  const paths: TunnelPath[] = [{ name: 'direct', port: upstreamPort }, { name: 'workspace-sandbox proxy', port: ours, authority, pid: proxy.pid! }];
  const squid = await startSquid((cmd, args) => start(cmd, args), dir);
  if (squid) paths.push({ name: `squid ${squid.version}`, port: squid.port, authority, pid: squid.pid });
  const tinyBin = spawnSync('tinyproxy', ['-v']).status === 0;
  if (tinyBin) {
    const port = await freePort();
    writeFileSync(join(dir, 'tinyproxy.conf'), [
      `Port ${port}`, 'Listen 127.0.0.1', 'Timeout 600', 'MaxClients 2000', `ConnectPort ${upstreamPort}`, 'LogLevel Critical',
      `PidFile "${join(dir, 'tinyproxy.pid')}"`,
    ].join('\n'));
    const tiny = start('tinyproxy', ['-d', '-c', join(dir, 'tinyproxy.conf')]);
    await waitForPort(port);
    paths.push({ name: `tinyproxy ${toolVersion('tinyproxy', ['-v'], /tinyproxy (\S+)/)}`, port, authority, pid: tiny.pid! });
  }

  const rows: (string | number)[][] = [];
  let directP50 = NaN;
  const results: Record<string, Measured & { cpu: number }> = {};
  const measured = await measureAll(paths, tls, { tunnels: TUNNELS, bytes: Math.round(SIZE_GIB * GIB), downloads: DOWNLOADS, pids: paths.flatMap((p) => (p.pid ? [p.pid] : [])) });
  for (const path of paths) {
    const m = measured.get(path)!;
    const r = { ...m, cpu: path.pid ? m.cpuPerGiB.get(path.pid)! : NaN };
    results[path.name] = r;
    if (path.name === 'direct') directP50 = r.p50;
    const overhead = path.name === 'direct' ? '—' : `+${(r.p50 - directP50).toFixed(2)}`;
    rows.push([path.name, r.p50.toFixed(2), r.p99.toFixed(2), overhead, r.mbps.toFixed(0), path.pid ? r.cpu.toFixed(2) : '—']);
    process.stdout.write(`${path.name}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.mbps.toFixed(0)} MB/s, ${path.pid ? `${r.cpu.toFixed(2)} CPU-s/GiB` : ''}\n`);
  }

  // Memory of this proxy: idle, then with OPEN open tunnels (TCP only; bytes idle).
  const afterRuns = rssMiB(proxy.pid!);
  const { sockets: open, opened, stopped } = await openTunnels(ours, connectRequest(authority), OPEN, 50);
  if (stopped) throw new Error(`open tunnels stopped at ${opened}: ${stopped}`);
  await new Promise((r) => setTimeout(r, 500));
  const loaded = rssMiB(proxy.pid!);
  for (const s of open) s.destroy();
  process.stdout.write(`workspace-sandbox proxy RSS: idle ${idle.toFixed(1)} MiB, after the runs ${afterRuns.toFixed(1)} MiB, ${OPEN} open tunnels ${loaded.toFixed(1)} MiB\n`);

  const ourRow = results['workspace-sandbox proxy']!;
  const squidRow = Object.entries(results).find(([k]) => k.startsWith('squid'))?.[1];
  const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const overhead = ourRow.p50 - directP50;
  const targets = [
    `throughput ≥ squid's: ${squidRow ? `${ourRow.mbps.toFixed(0)} vs ${squidRow.mbps.toFixed(0)} MB/s → ${met(ourRow.mbps >= squidRow.mbps)}` : 'squid not installed'}`,
    `CPU/GiB ≤ squid's: ${squidRow ? `${ourRow.cpu.toFixed(2)} vs ${squidRow.cpu.toFixed(2)} CPU-s → ${met(ourRow.cpu <= squidRow.cpu)}` : '—'}`,
    `new-tunnel overhead ≤ 0.4 ms p50 over direct: +${overhead.toFixed(2)} ms → ${met(overhead <= 0.4)}`
      + (squidRow ? ` (squid +${(squidRow.p50 - directP50).toFixed(2)} ms in the same run)` : ''),
    `idle RSS ≤ 60 MB: ${(idle * 1.048576).toFixed(1)} MB (${idle.toFixed(1)} MiB) → ${met(idle * 1.048576 <= 60)}`,
  ];
  const { line: loadLine } = load.stop();
  process.stdout.write(`${loadLine}\nTargets:\n${targets.map((l) => `  ${l}`).join('\n')}\n`);
  writeSection('proxy', [
    '## Egress proxy (credential-proxy, tunnels)',
    '',
    `\`node test/bench/proxy.ts\` · ${machineLine()} · ${loadLine}`,
    `Local TLS upstream (Node), client in the bench process, each proxy a child process; ${TUNNELS} new tunnels of CONNECT + TLS handshake + 1 KiB response; ${DOWNLOADS} tunnels each downloading ${SIZE_GIB} GiB (medians); CPU = proxy user+system time.`,
    '',
    table(['path', 'new tunnel p50 (ms)', 'p99 (ms)', 'p50 overhead (ms)', 'download (MB/s)', 'proxy CPU-s/GiB'], rows),
    '',
    `Memory (this proxy, RSS, \`node dist/bundle/proxy/workspace-sandbox.mjs proxy\` as the image runs it): idle ${idle.toFixed(1)} MiB before any traffic; ${afterRuns.toFixed(1)} MiB after the runs; with ${OPEN} open tunnels ${loaded.toFixed(1)} MiB.`,
    '',
    'Targets: ' + targets.join('; ') + '.',
  ].join('\n'));
}

bench.run(main);
