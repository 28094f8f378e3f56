// Credential-injection (TLS interception) benchmark: direct TLS vs this proxy intercepting vs
// mitmproxy intercepting, same run, same local TLS upstream.
//   node test/bench/intercept.ts        (BENCH_SECONDS=3 BENCH_NEWCONN=300 to change sizes)
// Measures, per path: keep-alive requests/s and latency (p50/p99) on 1 and on 8 tunnels (each a
// closed loop of sequential GETs of 1 KiB with a credential header added by the proxy); the cost of
// a new connection (TCP + CONNECT + TLS handshake + one GET, p50/p99); for this proxy also the time
// to mint a leaf for a new host and from process start to /readyz 200 (CA creation included).
// The proxy under test and mitmdump each run in their own process; the client and the upstream
// share this one.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { Agent, createServer, request } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEcKeyPair } from '../../lib/certs.ts';
import { createPodCA } from '../../credential-proxy/ca.ts';
import { LeafCache } from '../../credential-proxy/leaf-cache.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { bundleProgram, DEFAULT_BUNDLE_DIR } from '../../scripts/bundle.ts';
import { machineLine, median, percentile, table, writeSection } from './results.ts';
import { freePort } from '../helpers/listen.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const NEWCONN = Number(process.env.BENCH_NEWCONN ?? 300);
const HOST = 'localhost'; // resolves to loopback for every proxy; the rules allow private addresses
const NODE = process.execPath;
const ROOT = new URL('../../', import.meta.url).pathname;
const SECRET = 'bench-secret-token-0123456789';
const BODY = Buffer.alloc(1024, 'x');


async function waitForPort(port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createNetServer();
      s.once('error', () => resolve(true)); // in use: someone listens
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on ${port}`);
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = once(child, 'exit').then(() => undefined);
  child.kill('SIGTERM');
  return Promise.race([exited, new Promise<void>((r) => setTimeout(() => { child.kill('SIGKILL'); r(); }, 3000))]);
}

interface Path {
  name: string;
  /** The proxy process, whose CPU time per request is measured (noise on a shared machine inflates latency, not CPU). */
  pid?: number;
  /** An agent that reaches the upstream (through the path's proxy, if any). */
  agent(keepAlive: boolean, sockets: number): Agent;
}

/** user + system CPU seconds of a process, from /proc (Linux). */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

function rssMiB(pid: number | undefined): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
  } catch {
    return NaN;
  }
}

function get(agent: Agent, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: HOST, port, path: '/bench', agent, servername: HOST, headers: { authorization: 'Bearer dummy' } }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => { n += c.length; });
      res.on('end', () => (res.statusCode === 200 && n === BODY.length ? resolve(performance.now() - t0) : reject(new Error(`status ${res.statusCode}, ${n} bytes`))));
    });
    req.on('error', reject);
    req.end();
  });
}

async function keepAlive(path: Path, port: number, tunnels: number) {
  const agent = path.agent(true, tunnels);
  // Warm up: open the tunnels and the upstream connections, mint the leaf.
  await Promise.all(Array.from({ length: tunnels }, () => get(agent, port)));
  const lat: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  const started = performance.now();
  const cpu0 = cpuSeconds(path.pid);
  await Promise.all(Array.from({ length: tunnels }, async () => {
    while (performance.now() < end) lat.push(await get(agent, port));
  }));
  const elapsed = (performance.now() - started) / 1000;
  const cpuUs = ((cpuSeconds(path.pid) - cpu0) / lat.length) * 1e6;
  agent.destroy();
  return { rps: lat.length / elapsed, p50: median(lat), p99: percentile(lat, 99), cpuUs };
}

async function newConnections(path: Path, port: number) {
  const lat: number[] = [];
  for (let i = 0; i < NEWCONN + 10; i++) {
    const agent = path.agent(false, 1);
    const ms = await get(agent, port);
    agent.destroy();
    if (i >= 10) lat.push(ms); // first few: warm-up (JIT, leaf mint, session caches)
  }
  return { p50: median(lat), p99: percentile(lat, 99) };
}

interface Started {
  child: ChildProcess;
  proxyPort: number;
  adminPort: number;
  /** spawn → /healthz 200 (module graph loaded, listeners bound). */
  msToListening: number;
  /** spawn → /readyz 200 (CA created and its files written). */
  msToReady: number;
}

/** What the image runs: the proxy's bundle (`npm run build:bundles`), so start-up is not charged for type stripping. */
function productionEntry(): Promise<string> {
  return bundleProgram('proxy', join(DEFAULT_BUNDLE_DIR, 'proxy'));
}

/** Starts `workspace-sandbox proxy` and times spawn → first /readyz 200. */
async function startOurs(dir: string, upstreamPort: number, upstreamCaFile: string, entry = join(ROOT, 'bin/workspace-sandbox.ts')): Promise<Started> {
  const credentials = { bench: { hosts: [HOST], type: 'header', header: 'authorization', value: { env: 'BENCH_SECRET' }, format: 'Bearer {value}' } };
  const rules = [{ id: 'bench', hosts: [HOST], ports: [upstreamPort], allowPrivate: true, credential: 'bench' }];
  writeFileSync(join(dir, 'credentials.json'), JSON.stringify({ credentials }));
  writeFileSync(join(dir, 'rules.json'), JSON.stringify(rules));
  const [proxyPort, adminPort] = [await freePort(), await freePort()];
  const t0 = performance.now();
  const child = spawn(NODE, [entry, 'proxy'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      PATH: process.env.PATH, PROXY_PORT: String(proxyPort), ADMIN_PORT: String(adminPort), ADMIN_HOST: '127.0.0.1',
      RULES_FILE: join(dir, 'rules.json'), CREDENTIALS_FILE: join(dir, 'credentials.json'), BENCH_SECRET: SECRET,
      CA_DIR: join(dir, 'shared'), UPSTREAM_CA_FILE: upstreamCaFile, LOG_LEVEL: 'warn', POD_NAME: 'bench',
    },
  });
  let msToListening = NaN;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`proxy exited with ${child.exitCode}`);
    const status = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then((r) => r.status, () => 0);
    if (status !== 0 && Number.isNaN(msToListening)) msToListening = performance.now() - t0;
    if (status === 200) break;
    await new Promise((r) => setTimeout(r, 2));
  }
  return { child, proxyPort, adminPort, msToListening, msToReady: performance.now() - t0 };
}

function version(cmd: string, args: string[], re: RegExp): string | undefined {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? re.exec(r.stdout + r.stderr)?.[1] : undefined;
}

const f3 = (n: number) => (Number.isNaN(n) ? '–' : n.toFixed(0));

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-bench-intercept-'));
  const pki = makeTestPki([HOST, '127.0.0.1']);
  const upstreamCaFile = join(dir, 'upstream-ca.pem');
  writeFileSync(upstreamCaFile, pki.caPem);
  const upstream = createServer({ cert: pki.certPem, key: pki.keyPem, keepAlive: true, keepAliveTimeout: 60_000 }, (req, res) => {
    if (req.headers.authorization === `Bearer ${SECRET}`) injected++;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
    res.end(BODY);
  });
  let injected = 0;
  // Dual stack: `localhost` may resolve to ::1 first for some proxies.
  upstream.listen(0, '::');
  await once(upstream, 'listening');
  const port = (upstream.address() as { port: number }).port;

  // Leaf mint and CA creation, in process.
  const caTimes: number[] = [];
  let ca = createPodCA({ podName: 'bench' });
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    ca = createPodCA({ podName: 'bench' });
    caTimes.push(performance.now() - t0);
  }
  const cache = new LeafCache({ ca, keyPair: createEcKeyPair(), max: 10_000 });
  for (let i = 0; i < 50; i++) cache.get(`warm${i}.example.com`);
  const mint: number[] = [];
  for (let i = 0; i < 500; i++) {
    const t0 = performance.now();
    cache.get(`host${i}.example.com`);
    mint.push(performance.now() - t0);
  }

  // Proxy start → /readyz 200 (Node start, module load, CA key + certificate + files).
  const entry = await productionEntry();
  const starts: number[] = [];
  const listening: number[] = [];
  const startCpu: number[] = [];
  const idleRss: number[] = [];
  for (let i = 0; i < 5; i++) {
    const s = await startOurs(mkdtempSync(join(dir, 'start-')), port, upstreamCaFile, entry);
    starts.push(s.msToReady);
    listening.push(s.msToListening);
    startCpu.push(cpuSeconds(s.child.pid) * 1000);
    await new Promise((r) => setTimeout(r, 1000));
    idleRss.push(rssMiB(s.child.pid));
    await stop(s.child);
  }

  const ours = await startOurs(dir, port, upstreamCaFile, entry);
  const oursCa = readFileSync(join(dir, 'shared', 'ca.crt'), 'utf8');

  const paths: Path[] = [
    { name: 'direct TLS', agent: (ka, n) => new Agent({ keepAlive: ka, maxSockets: n, ca: pki.caPem }) },
    { name: 'this proxy (intercepting)', pid: ours.child.pid, agent: (ka, n) => new Agent({ keepAlive: ka, maxSockets: n, ca: oursCa, proxyEnv: { HTTPS_PROXY: `http://127.0.0.1:${ours.proxyPort}` } }) },
  ];

  const mitmVersion = version('mitmdump', ['--version'], /Mitmproxy:\s*(\S+)/);
  let mitm: ChildProcess | undefined;
  if (mitmVersion) {
    const mitmPort = await freePort();
    const confdir = join(dir, 'mitm');
    mitm = spawn('mitmdump', ['--listen-host', '127.0.0.1', '--listen-port', String(mitmPort), '-q',
      '--set', `confdir=${confdir}`, '--set', `ssl_verify_upstream_trusted_ca=${upstreamCaFile}`,
      // The same work as ours: replace the client's Authorization with the real one.
      '--set', `modify_headers=/~q/Authorization/Bearer ${SECRET}`], { stdio: ['ignore', 'ignore', 'inherit'] });
    await waitForPort(mitmPort);
    for (let i = 0; i < 100 && !existsSync(join(confdir, 'mitmproxy-ca-cert.pem')); i++) await new Promise((r) => setTimeout(r, 100));
    const mitmCa = readFileSync(join(confdir, 'mitmproxy-ca-cert.pem'), 'utf8');
    paths.push({ name: `mitmproxy ${mitmVersion}`, pid: mitm.pid, agent: (ka, n) => new Agent({ keepAlive: ka, maxSockets: n, ca: mitmCa, proxyEnv: { HTTPS_PROXY: `http://127.0.0.1:${mitmPort}` } }) });
  } else {
    process.stderr.write('mitmdump not found (apt-get install mitmproxy): the peer column is skipped\n');
  }

  const results: Record<string, { one: Awaited<ReturnType<typeof keepAlive>>; eight: Awaited<ReturnType<typeof keepAlive>>; fresh: Awaited<ReturnType<typeof newConnections>> }> = {};
  try {
    for (const p of paths) {
      const one = await keepAlive(p, port, 1);
      const eight = await keepAlive(p, port, 8);
      const fresh = await newConnections(p, port);
      results[p.name] = { one, eight, fresh };
      if (p.name !== 'direct TLS' && injected === 0) throw new Error(`${p.name} did not inject the credential`);
      injected = 0;
      process.stdout.write(`${p.name}: 1 tunnel ${one.rps.toFixed(0)} req/s p50 ${one.p50.toFixed(3)} p99 ${one.p99.toFixed(3)} ms; `
        + `8 tunnels ${eight.rps.toFixed(0)} req/s; new connection p50 ${fresh.p50.toFixed(2)} p99 ${fresh.p99.toFixed(2)} ms; proxy CPU ${f3(one.cpuUs)} µs per request\n`);
    }
  } finally {
    await stop(ours.child);
    await stop(mitm);
    upstream.close();
    upstream.closeAllConnections();
  }

  const f = (n: number, d = 2) => n.toFixed(d);
  const direct = results['direct TLS']!;
  const us = results['this proxy (intercepting)']!;
  const peer = mitmVersion ? results[`mitmproxy ${mitmVersion}`] : undefined;
  const rows = Object.entries(results).map(([name, r]) => [
    name, f(r.one.rps, 0), f(r.one.p50, 3), f(r.one.p99, 3), f(r.one.p50 - direct.one.p50, 3), Number.isNaN(r.one.cpuUs) ? '–' : f(r.one.cpuUs, 0),
    f(r.eight.rps, 0), f(r.fresh.p50), f(r.fresh.p99), f(r.fresh.p50 - direct.fresh.p50),
  ]);
  const ratio1 = peer ? us.one.rps / peer.one.rps : NaN;
  const ratio8 = peer ? us.eight.rps / peer.eight.rps : NaN;
  const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const addedP50 = us.one.p50 - direct.one.p50;
  const startMs = median(starts);
  const targets: string[][] = [
    ['req/s vs mitmproxy (1 / 8 tunnels)', peer ? `${f(ratio1, 1)}× / ${f(ratio8, 1)}×` : 'n/a', '≥ 3×', peer ? met(ratio1 >= 3 && ratio8 >= 3) : '–'],
    ['proxy CPU per keep-alive request vs mitmproxy', peer ? `${f(us.one.cpuUs, 0)} µs vs ${f(peer.one.cpuUs, 0)} µs (${f(peer.one.cpuUs / us.one.cpuUs, 1)}× less)` : `${f(us.one.cpuUs, 0)} µs`, '', ''],
    ['added p50 over direct keep-alive', `${f(addedP50, 3)} ms`, '≤ 0.5 ms', met(addedP50 <= 0.5)],
    ['new intercepted connection (CONNECT + TLS + GET), p50', `${f(us.fresh.p50)} ms (${f(us.fresh.p50 - direct.fresh.p50)} ms over a direct new TLS connection)`, '≤ 2 ms', met(us.fresh.p50 <= 2)],
    ['leaf mint for a new host, p50 / p99', `${f(median(mint), 3)} / ${f(percentile(mint, 99), 3)} ms`, '≤ 2 ms', met(median(mint) <= 2)],
    ['process start → /readyz 200 (CA created and written), median of 5', `${f(startMs, 0)} ms (min ${f(Math.min(...starts), 0)}, max ${f(Math.max(...starts), 0)}); proxy CPU to ready ${f(median(startCpu), 0)} ms`, '≤ 400 ms', met(startMs <= 400)],
    ['of which: start → listening (Node + module graph), median', `${f(median(listening), 0)} ms`, '', ''],
    ['of which: CA key + certificate (in process), median of 5', `${f(median(caTimes), 1)} ms`, '', ''],
    ['idle RSS after start', `${f(median(idleRss), 1)} MiB`, '≤ 60 MB', met(median(idleRss) * 1.048576 <= 60)],
  ];
  process.stdout.write(`\nTargets:\n${targets.map((r) => `  ${r[0]}: ${r[1]}${r[2] ? ` (target ${r[2]}) → ${r[3]}` : ''}`).join('\n')}\n`);
  const md = [
    '## Credential injection (TLS interception)',
    '',
    `\`node test/bench/intercept.ts\` — ${machineLine()}; ${SECONDS} s per keep-alive run, ${NEWCONN} new connections; `
      + 'GET of 1 KiB from a local TLS upstream with the proxy replacing `Authorization`; client and upstream in one process, each proxy in its own.',
    '',
    table(['path', 'req/s (1 tunnel)', 'p50 ms', 'p99 ms', '+p50 vs direct', 'proxy CPU µs/req', 'req/s (8 tunnels)', 'new conn p50 ms', 'new conn p99 ms', '+new conn vs direct'], rows),
    '',
    table(['this proxy', 'figure', 'target', ''], targets),
    '',
    'Start-up runs `node dist/bundle/proxy/workspace-sandbox.mjs proxy` (the `npm run build:bundles` output), as the image does. '
      + 'Leaves use one ECDSA P-256 key per process, signed by the ECDSA P-256 pod CA: the handshake signature is far cheaper than RSA\'s. '
      + 'Upstream connections are kept alive and reused; mitmproxy opens one per client connection.',
  ].join('\n');
  process.stdout.write(`\n${md}\n`);
  writeSection('intercept', md);
}

await main();
