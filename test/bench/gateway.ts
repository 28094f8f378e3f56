// Egress gateway benchmark, same run, same local TLS upstream:
//   sidecar → upstream (direct, today's path) vs sidecar → gateway → upstream vs squid → upstream.
//   node test/bench/gateway.ts      (root: it runs in a network namespace of its own;
//                                    BENCH_GIB=1 BENCH_TUNNELS=300 BENCH_OPEN=9500 BENCH_REVIEWS=200)
// Measures new-tunnel latency (CONNECT + TLS handshake + 1 KiB GET, p50/p99), one tunnel downloading
// BENCH_GIB GiB, the gateway's CPU per GiB and per 1,000 new tunnels (user+system from /proc), token
// validation (cached and uncached, against the stand-in Kubernetes API of
// test/helpers/kube-api-stand-in.ts: no API server runs here, so "uncached" is a TokenReview and a
// pod read over local HTTPS, a floor for a real API server), and the gateway's RSS with BENCH_OPEN
// open tunnels. The gateway refuses loopback upstreams, so the bench re-executes itself in a fresh
// network namespace joined by a veth to another holding the upstream on 198.51.100.10 (TEST-NET,
// opened with GATEWAY_LAB_CIDRS), and removes both at the end.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { createDevPair } from '../../lib/certs.ts';
import { createKubernetesApi } from '../../gateway/kubernetes.ts';
import { TokenValidator } from '../../gateway/token-review.ts';
import { startKubeApiStandIn } from '../helpers/kube-api-stand-in.ts';
import { freePort } from '../helpers/listen.ts';
import { BenchRun, machineLine, median, percentile, table, writeSection } from './results.ts';

const SELF = fileURLToPath(import.meta.url);
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
      return spawnSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh', process.execPath, SELF],
        { stdio: 'inherit', env: { ...process.env, WS_BENCH_NETNS: ns, WS_BENCH_UPSTREAM_NETNS: up } }).status;
    } finally {
      cleanup();
    }
  })();
  process.exit(status ?? 1);
}

const GIB = 2 ** 30;
const SIZE_GIB = Number(process.env.BENCH_GIB ?? 1);
const TUNNELS = Number(process.env.BENCH_TUNNELS ?? 300);
// Each open tunnel holds two descriptors in the gateway; the machines' hard limit is 20,000.
const OPEN = Number(process.env.BENCH_OPEN ?? 9_500);
const REVIEWS = Number(process.env.BENCH_REVIEWS ?? 200);
const HOST = 'api.lab.test';
const UP = '198.51.100.10';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const bench = new BenchRun('gateway');
const dir = bench.dir;
chmodSync(dir, 0o777); // squid drops privileges and writes its log and pid here

function buildDist(): string {
  spawnSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', join(ROOT, 'tsconfig.build.json')], { encoding: 'utf8' });
  const entry = join(ROOT, 'dist/bin/workspace-sandbox.js');
  if (!existsSync(entry)) throw new Error('npm run build produced no dist/bin/workspace-sandbox.js');
  return entry;
}

async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = netConnect(port, host, () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on ${host}:${port}`);
}

const cpuSeconds = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

const pair = createDevPair([HOST, UP]);
writeFileSync(join(dir, 'up.crt'), pair.certPem);
writeFileSync(join(dir, 'up.key'), pair.keyPem);
writeFileSync(join(dir, 'upstream.cjs'), `
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
srv.listen(Number(process.argv[4]), process.argv[5]);
`);

interface Path { name: string; port: number; authority: string; headers?: string; pid?: number }

function fetchOnce(path: Path, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const raw = netConnect(path.port, '127.0.0.1');
    raw.setNoDelay(true);
    raw.on('error', reject);
    raw.once('connect', () => raw.write(`CONNECT ${path.authority} HTTP/1.1\r\nHost: ${path.authority}\r\n${path.headers ?? ''}\r\n`));
    let head = '';
    raw.on('data', function onData(d: Buffer) {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      raw.off('data', onData);
      if (!/^HTTP\/1\.[01] 200/.test(head)) return reject(new Error(`${path.name}: CONNECT refused: ${head.split('\r\n').slice(0, 2).join(' ')}`));
      const tls = tlsConnect({ socket: raw, servername: HOST, ca: pair.caPem });
      let got = -1;
      let pending = '';
      tls.on('secureConnect', () => tls.write(`GET /${bytes} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
      tls.on('data', (c: Buffer) => {
        if (got < 0) {
          pending += c.toString('latin1');
          const i = pending.indexOf('\r\n\r\n');
          if (i < 0) return;
          got = pending.length - i - 4;
        } else got += c.length;
        if (got >= bytes) {
          resolve(performance.now() - t0);
          tls.destroy();
        }
      });
      tls.on('error', reject);
    });
  });
}

async function main(): Promise<void> {
  const bin = buildDist();
  const upPort = await freePort();
  bench.start('ip', ['netns', 'exec', process.env.WS_BENCH_UPSTREAM_NETNS!, 'sh', '-c', 'ulimit -n "$(ulimit -Hn)" && exec "$@"', 'sh',
    process.execPath, join(dir, 'upstream.cjs'), join(dir, 'up.crt'), join(dir, 'up.key'), String(upPort), UP], process.env);
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
    MAX_TUNNELS: String(OPEN + 1000), MAX_TUNNELS_PER_POD: String(OPEN + 1000), LOG_LEVEL: 'warn',
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
  const paths: Path[] = [
    { name: 'sidecar → upstream (today)', port: direct.port, authority, pid: direct.pid },
    { name: 'sidecar → gateway → upstream', port: chained.port, authority, pid: chained.pid },
  ];
  if (spawnSync('squid', ['-v']).status === 0) {
    const port = await freePort();
    writeFileSync(join(dir, 'squid.conf'), [
      `http_port 127.0.0.1:${port}`, 'http_access allow all', 'cache deny all', 'cache_mem 8 MB', 'access_log none',
      `cache_log ${join(dir, 'squid-cache.log')}`, `pid_filename ${join(dir, 'squid.pid')}`, `coredump_dir ${dir}`,
      'shutdown_lifetime 0 seconds', 'max_filedescriptors 8192',
    ].join('\n'));
    const squid = bench.start('squid', ['-N', '-f', join(dir, 'squid.conf')], process.env);
    await waitForPort(port);
    const v = /Version (\S+)/.exec(spawnSync('squid', ['-v'], { encoding: 'utf8' }).stdout)?.[1] ?? '';
    paths.push({ name: `squid ${v} → upstream`, port, authority: `${UP}:${upPort}`, pid: squid.pid! });
  }

  const rows: (string | number)[][] = [];
  const res: Record<string, { p50: number; p99: number; mbps: number; cpuPerGiB: number }> = {};
  let gwPer1000 = NaN;
  let gwPerGiB = NaN;
  for (const path of paths) {
    for (let i = 0; i < 20; i++) await fetchOnce(path, 1024);
    const g0 = cpuSeconds(gateway.pid!);
    const lat: number[] = [];
    for (let i = 0; i < TUNNELS; i++) lat.push(await fetchOnce(path, 1024));
    const gTunnels = cpuSeconds(gateway.pid!) - g0;
    const bytes = Math.round(SIZE_GIB * GIB);
    const c0 = cpuSeconds(path.pid!);
    const g1 = cpuSeconds(gateway.pid!);
    const ms = await fetchOnce(path, bytes);
    const cpu = cpuSeconds(path.pid!) - c0;
    if (path.name.includes('gateway')) {
      gwPer1000 = (gTunnels / TUNNELS) * 1000;
      gwPerGiB = (cpuSeconds(gateway.pid!) - g1) / SIZE_GIB;
    }
    const r = { p50: median(lat), p99: percentile(lat, 99), mbps: bytes / 1e6 / (ms / 1000), cpuPerGiB: cpu / SIZE_GIB };
    res[path.name] = r;
    process.stdout.write(`${path.name}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.mbps.toFixed(0)} MB/s, ${r.cpuPerGiB.toFixed(2)} CPU-s/GiB (first hop)\n`);
  }
  const today = res[paths[0]!.name]!;
  for (const path of paths) {
    const r = res[path.name]!;
    rows.push([path.name, r.p50.toFixed(2), r.p99.toFixed(2), path === paths[0] ? '—' : `${r.p50 - today.p50 >= 0 ? '+' : ''}${(r.p50 - today.p50).toFixed(2)}`, r.mbps.toFixed(0), r.cpuPerGiB.toFixed(2)]);
  }

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
  const open: Socket[] = [];
  const auth = `Proxy-Authorization: Bearer ${readFileSync(join(dir, 'token'), 'utf8')}\r\n`;
  let opened = 0;
  try {
    for (let i = 0; i < OPEN; i += 100) {
      await Promise.all(Array.from({ length: Math.min(100, OPEN - i) }, () => new Promise<void>((resolve, reject) => {
        const s = netConnect(gwPort, '127.0.0.1', () => s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`));
        s.once('data', (d: Buffer) => (/^HTTP\/1\.1 200/.test(d.toString()) ? resolve() : reject(new Error(d.toString().split('\r\n')[0]))));
        s.on('error', reject);
        open.push(s);
      })));
      opened = open.length;
    }
  } catch (err) {
    process.stdout.write(`open tunnels stopped at ${opened}: ${(err as Error).message}\n`);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const loaded = rssMiB(gateway.pid!);
  for (const s of open) s.destroy();
  await api.close();

  const gw = res['sidecar → gateway → upstream']!;
  const squid = Object.entries(res).find(([k]) => k.startsWith('squid'))?.[1];
  const added = gw.p50 - today.p50;
  const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const targets = [
    `added p50 for a new tunnel ≤ 1 ms over today's sidecar path: ${added >= 0 ? '+' : ''}${added.toFixed(2)} ms → ${met(added <= 1)}`,
    squid ? `throughput through the gateway ≥ squid's: ${gw.mbps.toFixed(0)} vs ${squid.mbps.toFixed(0)} MB/s → ${met(gw.mbps >= squid.mbps)}` : 'squid not installed',
    squid ? `gateway CPU/GiB ≤ squid's: ${gwPerGiB.toFixed(2)} vs ${squid.cpuPerGiB.toFixed(2)} CPU-s → ${met(gwPerGiB <= squid.cpuPerGiB)}` : '—',
    `gateway memory bounded with ${OPEN} open tunnels: ${opened} opened, ${loaded.toFixed(1)} MiB RSS (${((loaded - afterRuns) * 1024 / Math.max(1, opened)).toFixed(1)} KiB per tunnel)`,
  ];
  process.stdout.write(`\nTargets:\n${targets.map((l) => `  ${l}`).join('\n')}\n`);
  writeSection('gateway', [
    '## Egress gateway (sidecar → gateway → upstream)',
    '',
    `\`node test/bench/gateway.ts\` · ${machineLine()} · **provisional: the machine was shared with other work during the run; read medians and ratios.**`,
    `Local TLS upstream on 198.51.100.10 in a second network namespace behind a veth; every proxy a child process (\`dist/\`, as the image runs it); ${TUNNELS} new tunnels of CONNECT + TLS handshake + 1 KiB; one tunnel downloading ${SIZE_GIB} GiB; CPU-s/GiB is the first hop's (the sidecar, or squid).`,
    '',
    table(['path', 'new tunnel p50 (ms)', 'p99 (ms)', 'p50 vs today (ms)', 'download (MB/s)', 'first hop CPU-s/GiB'], rows),
    '',
    `Gateway CPU: ${gwPerGiB.toFixed(2)} CPU-s per GiB relayed; ${gwPer1000.toFixed(2)} CPU-s per 1,000 new tunnels (token cached).`,
    `Token validation (stand-in API over local HTTPS, ${REVIEWS} tokens): uncached (TokenReview + pod read) p50 ${median(uncached).toFixed(2)} ms, p99 ${percentile(uncached, 99).toFixed(2)} ms; cached p50 ${(median(cached) * 1000).toFixed(1)} µs.`,
    `Gateway RSS: idle ${gwIdle.toFixed(1)} MiB; after the runs ${afterRuns.toFixed(1)} MiB; with ${opened} open tunnels ${loaded.toFixed(1)} MiB.`,
    '',
    'Targets: ' + targets.join('; ') + '.',
  ].join('\n'));
}

bench.run(main);
