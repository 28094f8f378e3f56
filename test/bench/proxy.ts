// Egress proxy benchmark: direct TLS vs this proxy vs squid vs tinyproxy, same run, same upstream.
//   node test/bench/proxy.ts            (BENCH_GIB=1 BENCH_TUNNELS=300 BENCH_OPEN=1000 to change sizes)
// Measures, per path: new-tunnel latency (CONNECT + TLS handshake + GET of 1 KiB, p50/p99),
// throughput of one tunnel downloading BENCH_GIB GiB over TLS (MB/s = 10^6 bytes/s), and the
// proxy's CPU seconds per GiB (user+system from /proc); then this proxy's RSS idle and with
// BENCH_OPEN open tunnels. Every process is a child on loopback ports picked at run time.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect } from 'node:tls';
import { createDevPair } from '../../lib/certs.ts';
import { bundleProgram, DEFAULT_BUNDLE_DIR } from '../../scripts/bundle.ts';
import { BenchRun, machineLine, median, percentile, table, writeSection } from './results.ts';
import { freePort } from '../helpers/listen.ts';
import { RESERVE_BYTES, TUNNEL_SHARE, TUNNEL_WORST_CASE_BYTES } from '../../credential-proxy/memory.ts';

const GIB = 2 ** 30;
const SIZE_GIB = Number(process.env.BENCH_GIB ?? 1);
const TUNNELS = Number(process.env.BENCH_TUNNELS ?? 300);
const OPEN = Number(process.env.BENCH_OPEN ?? 1000);
const HOST = 'localhost';

const bench = new BenchRun('proxy');
const dir = bench.dir;
chmodSync(dir, 0o777); // squid drops privileges and writes its log and pid here


async function waitForPort(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = netConnect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on ${port}`);
}

function start(cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  return bench.start(cmd, args, { ...process.env, ...env });
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks (USER_HZ = 100)
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

// ---- the TLS upstream (a child process, so its CPU is not the client's) ----
const pair = createDevPair([HOST, '127.0.0.1']);
writeFileSync(join(dir, 'up.crt'), pair.certPem);
writeFileSync(join(dir, 'up.key'), pair.keyPem);
const UPSTREAM_SRC = `
const tls = require('node:tls'); const fs = require('node:fs');
const chunk = Buffer.alloc(256 * 1024, 97);
const srv = tls.createServer({ cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3]) }, (s) => {
  s.on('error', () => {});
  let buf = '';
  s.on('data', function onData(d) {
    buf += d.toString('latin1');
    if (!buf.includes('\\r\\n\\r\\n')) return;
    s.off('data', onData);
    let left = Number(/GET \\/(\\d+)/.exec(buf)?.[1] ?? 0);
    s.write('HTTP/1.1 200 OK\\r\\ncontent-length: ' + left + '\\r\\nconnection: close\\r\\n\\r\\n');
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length); left -= n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
});
srv.listen(Number(process.argv[4]), '127.0.0.1');
`;
writeFileSync(join(dir, 'upstream.cjs'), UPSTREAM_SRC);

interface Path { name: string; proxyPort?: number; pid?: number }

/** One request on a new connection: CONNECT (when proxied) + TLS handshake + GET /<bytes>. */
function fetchOnce(path: Path, upstreamPort: number, bytes: number): Promise<{ ms: number; got: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const onSocket = (raw: Socket) => {
      const tls = tlsConnect({ socket: raw, servername: HOST, ca: pair.caPem });
      let got = -1;
      let headerDone = false;
      let pending = '';
      tls.on('secureConnect', () => tls.write(`GET /${bytes} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
      tls.on('data', (d: Buffer) => {
        if (!headerDone) {
          pending += d.toString('latin1');
          const i = pending.indexOf('\r\n\r\n');
          if (i < 0) return;
          headerDone = true;
          got = pending.length - i - 4;
        } else got += d.length;
        if (got >= bytes) {
          resolve({ ms: performance.now() - t0, got });
          tls.destroy();
        }
      });
      tls.on('error', reject);
    };
    const raw = netConnect(path.proxyPort ?? upstreamPort, '127.0.0.1');
    raw.setNoDelay(true);
    raw.on('error', reject);
    if (!path.proxyPort) return raw.once('connect', () => onSocket(raw));
    raw.once('connect', () => raw.write(`CONNECT ${HOST}:${upstreamPort} HTTP/1.1\r\nHost: ${HOST}:${upstreamPort}\r\n\r\n`));
    let head = '';
    raw.on('data', function onData(d: Buffer) {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      raw.off('data', onData);
      if (!/^HTTP\/1\.[01] 200/.test(head)) return reject(new Error(`${path.name}: CONNECT refused: ${head.split('\r\n')[0]}`));
      onSocket(raw);
    });
  });
}

async function measure(path: Path, upstreamPort: number) {
  for (let i = 0; i < 20; i++) await fetchOnce(path, upstreamPort, 1024); // warm-up
  const lat: number[] = [];
  for (let i = 0; i < TUNNELS; i++) lat.push((await fetchOnce(path, upstreamPort, 1024)).ms);
  const bytes = Math.round(SIZE_GIB * GIB);
  const cpu0 = path.pid ? cpuSeconds(path.pid) : 0;
  const r = await fetchOnce(path, upstreamPort, bytes);
  const cpu = path.pid ? cpuSeconds(path.pid) - cpu0 : NaN;
  return { p50: median(lat), p99: percentile(lat, 99), mbps: bytes / 1e6 / (r.ms / 1000), cpuPerGiB: cpu / (bytes / GIB) };
}

function version(cmd: string, args: string[], re: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return re.exec(`${r.stdout}${r.stderr}`)?.[1] ?? 'unknown';
}

async function main(): Promise<void> {
  const upstreamPort = await freePort();
  start(process.execPath, [join(dir, 'upstream.cjs'), join(dir, 'up.crt'), join(dir, 'up.key'), String(upstreamPort)]);
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

  const paths: Path[] = [{ name: 'direct' }, { name: 'workspace-sandbox proxy', proxyPort: ours, pid: proxy.pid! }];
  const squidBin = spawnSync('squid', ['-v']).status === 0;
  if (squidBin) {
    const port = await freePort();
    writeFileSync(join(dir, 'squid.conf'), [
      `http_port 127.0.0.1:${port}`, 'http_access allow all', 'cache deny all', 'cache_mem 8 MB', 'access_log none',
      `cache_log ${join(dir, 'squid-cache.log')}`, `pid_filename ${join(dir, 'squid.pid')}`, `coredump_dir ${dir}`,
      'shutdown_lifetime 0 seconds', 'max_filedescriptors 8192',
    ].join('\n'));
    const squid = start('squid', ['-N', '-f', join(dir, 'squid.conf')]);
    await waitForPort(port);
    paths.push({ name: `squid ${version('squid', ['-v'], /Version (\S+)/)}`, proxyPort: port, pid: squid.pid! });
  }
  const tinyBin = spawnSync('tinyproxy', ['-v']).status === 0;
  if (tinyBin) {
    const port = await freePort();
    writeFileSync(join(dir, 'tinyproxy.conf'), [
      `Port ${port}`, 'Listen 127.0.0.1', 'Timeout 600', 'MaxClients 2000', `ConnectPort ${upstreamPort}`, 'LogLevel Critical',
      `PidFile "${join(dir, 'tinyproxy.pid')}"`,
    ].join('\n'));
    const tiny = start('tinyproxy', ['-d', '-c', join(dir, 'tinyproxy.conf')]);
    await waitForPort(port);
    paths.push({ name: `tinyproxy ${version('tinyproxy', ['-v'], /tinyproxy (\S+)/)}`, proxyPort: port, pid: tiny.pid! });
  }

  const rows: (string | number)[][] = [];
  let directP50 = NaN;
  const results: Record<string, Awaited<ReturnType<typeof measure>>> = {};
  for (const path of paths) {
    const r = await measure(path, upstreamPort);
    results[path.name] = r;
    if (path.name === 'direct') directP50 = r.p50;
    const overhead = path.name === 'direct' ? '—' : `+${(r.p50 - directP50).toFixed(2)}`;
    rows.push([path.name, r.p50.toFixed(2), r.p99.toFixed(2), overhead, r.mbps.toFixed(0), path.pid ? r.cpuPerGiB.toFixed(2) : '—']);
    process.stdout.write(`${path.name}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.mbps.toFixed(0)} MB/s, ${path.pid ? `${r.cpuPerGiB.toFixed(2)} CPU-s/GiB` : ''}\n`);
  }

  // Memory of this proxy: idle, then with OPEN open tunnels (TCP only; bytes idle).
  const afterRuns = rssMiB(proxy.pid!);
  const open: Socket[] = [];
  for (let i = 0; i < OPEN; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, OPEN - i) }, () => new Promise<void>((resolve, reject) => {
      const s = netConnect(ours, '127.0.0.1', () => s.write(`CONNECT ${HOST}:${upstreamPort} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
      s.once('data', (d: Buffer) => (/^HTTP\/1\.1 200/.test(d.toString()) ? resolve() : reject(new Error(d.toString()))));
      s.on('error', reject);
      open.push(s);
    })));
  }
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
    `CPU/GiB ≤ squid's: ${squidRow ? `${ourRow.cpuPerGiB.toFixed(2)} vs ${squidRow.cpuPerGiB.toFixed(2)} CPU-s → ${met(ourRow.cpuPerGiB <= squidRow.cpuPerGiB)}` : '—'}`,
    `new-tunnel overhead ≤ 0.4 ms p50 over direct: +${overhead.toFixed(2)} ms → ${met(overhead <= 0.4)}`
      + (squidRow ? ` (squid +${(squidRow.p50 - directP50).toFixed(2)} ms in the same run)` : ''),
    `idle RSS ≤ 60 MB: ${(idle * 1.048576).toFixed(1)} MB (${idle.toFixed(1)} MiB) → ${met(idle * 1.048576 <= 60)}`,
  ];
  process.stdout.write(`\nTargets:\n${targets.map((l) => `  ${l}`).join('\n')}\n`);
  writeSection('proxy', [
    '## Egress proxy (credential-proxy, tunnels)',
    '',
    `\`node test/bench/proxy.ts\` · ${machineLine()} · local TLS upstream (Node), client in the bench process, each proxy a child process;`,
    `${TUNNELS} new tunnels of CONNECT + TLS handshake + 1 KiB response; one tunnel downloading ${SIZE_GIB} GiB; CPU = proxy user+system time.`,
    '',
    table(['path', 'new tunnel p50 (ms)', 'p99 (ms)', 'p50 overhead (ms)', 'download (MB/s)', 'proxy CPU-s/GiB'], rows),
    '',
    `Memory (this proxy, RSS, \`node dist/bundle/proxy/workspace-sandbox.mjs proxy\` as the image runs it): idle ${idle.toFixed(1)} MiB before any traffic; ${afterRuns.toFixed(1)} MiB after the runs; with ${OPEN} open tunnels ${loaded.toFixed(1)} MiB.`,
    '',
    'Targets: ' + targets.join('; ') + '.',
  ].join('\n'));
}

bench.run(main);
