// Start-up and idle memory of each server program, as its image runs it (the bundle of
// scripts/bundle.ts) against tsc's dist/ (the package's bin), and against a floor in the same run:
// an empty Node 24 process and a Node HTTP server that answers at once.
//   node test/bench/programs.ts          (BENCH_RUNS=5)
// Per program and build, BENCH_RUNS starts, interleaved: spawn → first 200 from /readyz (median),
// then VmRSS after 1 s idle (median); SIGTERM and wait for the exit. Then the RSS each npm package
// adds, bundled by esbuild as the programs are, to a Node process that already serves HTTP and has
// made an ECDSA key (what the proxy does before it is ready anyway; median of 3), and the image
// sizes when the images are in the engine DOCKER_HOST names.
import { build } from 'esbuild';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { BUNDLE_FILE, bundleProgram, DEFAULT_BUNDLE_DIR, PROGRAMS, promClientCore, type Command, type Program } from '../../scripts/bundle.ts';
import { IMAGES } from '../../scripts/build-images.ts';
import { BenchRun, machineLine, median, table, writeSection } from './results.ts';
import { freePort } from '../helpers/listen.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const NODE = process.execPath;
const bench = new BenchRun('programs');
const dir = bench.dir;

const TARGETS: Partial<Record<Command, { rssMiB: number; startMs?: number }>> = {
  proxy: { rssMiB: 50, startMs: 250 },
  webhook: { rssMiB: 60 },
};
/** Each package the server programs bundle, and when the proxy loads it. */
const PACKAGES: Record<string, string> = {
  'zod': 'at start (config, rule and credential schemas); the webhook too',
  'prom-client': 'at start (counters count from the start; the registry serves /metrics)',
  'pino': 'at start (logs)',
  'jose': 'at start (per-pod token and rule-set signature verifiers; the bundle keeps only the parts used)',
  'tldts': 'on the first wildcard rule checked (Public Suffix List)',
  'yaml': 'on the first YAML (not JSON) config file; the webhook with its injection config',
  'ioredis': 'only with REDIS_URL',
  'http-proxy-3': 'on the first plain-HTTP request',
  '@aws-sdk/credential-provider-node': 'on the first SigV4 signature',
  '@smithy/signature-v4': 'on the first SigV4 signature',
};
/** What the proxy does before it is ready whatever its packages: an HTTP server and an ECDSA key (its CA). */
const BUILTINS_FLOOR = "require('node:crypto').generateKeyPairSync('ec', { namedCurve: 'prime256v1' });";

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

/** Status of GET url (HTTPS without verification: the webhook's dev pair), 0 when nothing answers. */
function status(url: string): Promise<number> {
  if (url.startsWith('http:')) return fetch(url).then((r) => r.status, () => 0);
  return new Promise((resolve) => {
    const req = httpsRequest(url, { rejectUnauthorized: false }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('error', () => resolve(0));
    req.end();
  });
}

interface Launch { args: string[]; env: Record<string, string>; readyUrl: string }

/** The command line and environment of each program, configured as in its image's test. */
type Floor = 'floor' | 'floor+key' | 'floor+tls';

async function launch(program: Command | Floor, entry: string, runDir: string): Promise<Launch> {
  const base = { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn' };
  const [a, b] = [await freePort(), await freePort()];
  switch (program) {
    case 'floor':
      return { args: ['-e', `require('node:http').createServer((q, s) => s.end('ok')).listen(${a}, '127.0.0.1')`], env: base, readyUrl: `http://127.0.0.1:${a}/` };
    case 'floor+key':
      return { args: ['-e', `${BUILTINS_FLOOR} require('node:http').createServer((q, s) => s.end('ok')).listen(${a}, '127.0.0.1')`], env: base, readyUrl: `http://127.0.0.1:${a}/` };
    case 'floor+tls':
      return { args: ['-e', `${BUILTINS_FLOOR} require('node:tls'); require('node:http').createServer((q, s) => s.end('ok')).listen(${a}, '127.0.0.1')`], env: base, readyUrl: `http://127.0.0.1:${a}/` };
    case 'proxy':
      writeFileSync(join(runDir, 'rules.json'), JSON.stringify([{ id: 'bench', hosts: ['example.com'], ports: [443] }]));
      return {
        args: [entry, 'proxy'],
        env: { ...base, PROXY_PORT: String(a), ADMIN_PORT: String(b), ADMIN_HOST: '127.0.0.1', RULES_FILE: join(runDir, 'rules.json'), CA_DIR: join(runDir, 'ca') },
        readyUrl: `http://127.0.0.1:${b}/readyz`,
      };
    case 'webhook':
      return {
        args: [entry, 'webhook'],
        env: { ...base, LOG_LEVEL: 'error', WEBHOOK_HOST: '127.0.0.1', WEBHOOK_PORT: String(a), METRICS_HOST: '127.0.0.1', METRICS_PORT: String(b) },
        readyUrl: `https://127.0.0.1:${a}/readyz`,
      };
    case 'gateway':
      writeFileSync(join(runDir, 'kubeconfig'), [
        'apiVersion: v1', 'kind: Config', 'current-context: c',
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]', 'users: [{name: u, user: {token: unused}}]',
        'contexts: [{name: c, context: {cluster: c, user: u}}]', '',
      ].join('\n'));
      return {
        args: [entry, 'gateway'],
        env: { ...base, KUBECONFIG: join(runDir, 'kubeconfig'), GATEWAY_HOST: '127.0.0.1', GATEWAY_PORT: String(a), GATEWAY_METRICS_HOST: '127.0.0.1', GATEWAY_METRICS_PORT: String(b) },
        readyUrl: `http://127.0.0.1:${b}/readyz`,
      };
  }
}

/** One start: spawn → /readyz 200, RSS after 1 s idle, then SIGTERM. */
async function startOnce(program: Command | Floor, entry: string): Promise<{ ms: number; rss: number }> {
  const runDir = join(dir, `${program}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(runDir);
  const { args, env, readyUrl } = await launch(program, entry, runDir);
  const t0 = performance.now();
  const child: ChildProcess = bench.start(NODE, args, env);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${program} (${entry}) exited with ${child.exitCode}`);
    if (await status(readyUrl) === 200) break;
    await new Promise((r) => setTimeout(r, 2));
  }
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 1000));
  const rss = rssMiB(child.pid!);
  child.kill('SIGTERM');
  if (child.exitCode === null) await once(child, 'exit');
  rmSync(runDir, { recursive: true, force: true });
  return { ms, rss };
}

/**
 * RSS of a Node process serving HTTP with the built-ins floor loaded, after importing `pkg` whole
 * from an esbuild bundle made as scripts/bundle.ts makes the programs' (prom-client without its
 * Pushgateway; none: the floor alone); median of 3.
 */
async function importRss(pkg: string | undefined): Promise<number> {
  const file = join(dir, `import-${(pkg ?? 'none').replace(/[^a-z0-9]/gi, '_')}.mjs`);
  const contents = [
    pkg ? `import * as m from ${JSON.stringify(pkg)}; globalThis.keep = m;` : '',
    BUILTINS_FLOOR,
    "const http = process.getBuiltinModule('node:http');",
    "const s = http.createServer((q, r) => r.end('ok')).listen(0, '127.0.0.1', () => http.get(`http://127.0.0.1:${s.address().port}/`, (r) => r.resume()));",
    'setTimeout(() => { console.log(process.memoryUsage().rss); process.exit(0); }, 1000);',
  ].join('\n');
  await build({
    stdin: { contents, resolveDir: ROOT, loader: 'js' }, outfile: file, bundle: true, platform: 'node', format: 'esm', target: 'node24',
    minifySyntax: true, minifyWhitespace: true, logLevel: 'error', plugins: [promClientCore],
    banner: { js: "import { createRequire as __wsCreateRequire } from 'node:module'; const require = __wsCreateRequire(import.meta.url);" },
  });
  const runs = [0, 1, 2].map(() => Number(spawnSync(NODE, [file], { encoding: 'utf8' }).stdout) / 2 ** 20);
  return median(runs);
}

function imageSize(image: string): number | undefined {
  const r = spawnSync('docker', ['image', 'inspect', '--format', '{{.Size}}', image], { encoding: 'utf8' });
  return r.status === 0 ? Number(r.stdout) / 1e6 : undefined;
}

const f0 = (n: number) => n.toFixed(0);
const f1 = (n: number) => n.toFixed(1);
const met = (ok: boolean) => (ok ? 'met' : 'NOT met');

bench.run(async () => {
  spawnSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', join(ROOT, 'tsconfig.build.json')], { encoding: 'utf8' });
  const dist = join(ROOT, 'dist/bin/workspace-sandbox.js');
  const bundleNames = Object.keys(PROGRAMS) as Program[];
  const bundleOf = {} as Record<Command, string>;
  for (const b of bundleNames) {
    const entry = await bundleProgram(b, join(DEFAULT_BUNDLE_DIR, b));
    for (const c of PROGRAMS[b]) bundleOf[c] = entry;
  }
  const programs = Object.keys(bundleOf) as Command[];

  const samples = new Map<string, { ms: number[]; rss: number[] }>();
  const record = (key: string, r: { ms: number; rss: number }) => {
    const s = samples.get(key) ?? { ms: [], rss: [] };
    s.ms.push(r.ms); s.rss.push(r.rss);
    samples.set(key, s);
  };
  for (let i = 0; i < RUNS; i++) {
    record('floor', await startOnce('floor', ''));
    record('floor+key', await startOnce('floor+key', ''));
    record('floor+tls', await startOnce('floor+tls', ''));
    for (const p of programs) {
      record(`${p} dist`, await startOnce(p, dist));
      record(`${p} bundle`, await startOnce(p, bundleOf[p]));
    }
    process.stdout.write(`run ${i + 1}/${RUNS}\n`);
  }
  const m = (key: string) => ({ ms: median(samples.get(key)!.ms), rss: median(samples.get(key)!.rss) });
  const floor = m('floor');
  const floorKey = m('floor+key');
  const floorTls = m('floor+tls');

  const rows = programs.map((p) => {
    const [d, b] = [m(`${p} dist`), m(`${p} bundle`)];
    return [p, f0(d.ms), f0(b.ms), `${(b.ms / floor.ms).toFixed(1)}×`, f1(d.rss), f1(b.rss), f1(b.rss - floor.rss)];
  });
  const targetRows = programs.flatMap((p) => {
    const t = TARGETS[p];
    if (!t) return [];
    const b = m(`${p} bundle`);
    return [
      [`${p} idle RSS`, `${f1(b.rss)} MiB`, `≤ ${t.rssMiB} MiB`, met(b.rss <= t.rssMiB)],
      ...(t.startMs ? [[`${p} start → /readyz`, `${f0(b.ms)} ms (floor ${f0(floor.ms)} ms)`, `≤ ${t.startMs} ms`, met(b.ms <= t.startMs)]] : []),
    ];
  });

  const base = await importRss(undefined);
  const modules: string[][] = [];
  for (const [pkg, when] of Object.entries(PACKAGES)) {
    let cost: string;
    try {
      cost = f1((await importRss(pkg)) - base);
    } catch {
      cost = 'not installed';
    }
    modules.push([`\`${pkg}\``, cost, when]);
  }
  const images = Object.values(IMAGES).map((img) => [`\`${img.name}\``, imageSize(img.name) === undefined ? 'not built' : `${f0(imageSize(img.name)!)} MB`]);
  const bundleSizes = bundleNames.map((p) => {
    const out = spawnSync('du', ['-sb', join(DEFAULT_BUNDLE_DIR, p)], { encoding: 'utf8' }).stdout.split('\t')[0];
    return `${p} ${(Number(out) / 1e6).toFixed(1)} MB`;
  });

  writeSection('programs', [
    '## Server programs: start-up, idle memory, images',
    '',
    `\`node test/bench/programs.ts\` · ${machineLine()} · ${RUNS} starts per program and build, interleaved; medians.`,
    `"dist" is \`node dist/bin/workspace-sandbox.js <command>\` (tsc, node_modules beside it); "bundle" is \`node dist/bundle/<program>/${BUNDLE_FILE} <command>\``,
    '(`npm run build:bundles`: esbuild, ESM with code splitting; what the images run; the gateway runs from the proxy\'s bundle and image). Start = spawn → first 200 from /readyz',
    '(the proxy: CA created and written); RSS after 1 s idle. Floor: a Node 24 HTTP server answering at once',
    `(start ${f0(floor.ms)} ms, idle RSS ${f1(floor.rss)} MiB); the same having made an ECDSA key, as the proxy does for its CA before it`,
    `is ready (${f1(floorKey.rss)} MiB); that and node:tls loaded, as by a first intercepted connection (${f1(floorTls.rss)} MiB).`,
    '',
    table(['program', 'start dist (ms)', 'start bundle (ms)', 'bundle vs floor', 'RSS dist (MiB)', 'RSS bundle (MiB)', 'bundle over floor (MiB)'], rows),
    '',
    table(['target (bundle, as the image runs it)', 'measured', 'target', ''], targetRows),
    '',
    'What the proxy keeps off its start path: node-forge (gone: the CA is ECDSA P-256, built with node:crypto and lib/der.ts like the',
    'leaves, ready as the listeners are), node:tls and node:https (first intercepted connection or gateway TLS; prom-client is bundled',
    'without its Pushgateway, which loaded node:https), tldts (first wildcard rule), yaml (JSON rules and credentials are read with',
    'JSON.parse), ioredis, http-proxy-3 and the AWS SDK (each on first use). What it still loads at start: zod (the one validated config',
    'and the rule schemas), prom-client, pino and the parts of jose it uses. The floor with an ECDSA key is already at about 50 MiB:',
    '≤ 50 MiB is under what Node 24 needs to serve HTTP and hold the CA; zod is the one large package left on the start path.',
    '',
    `RSS each package adds, bundled and imported whole, to the floor with an ECDSA key (${f1(base)} MiB in this measurement), and when the proxy loads it:`,
    '',
    table(['package', 'MiB', 'loaded by the proxy'], modules),
    '',
    `Bundle sizes (entry + chunks + SBOM): ${bundleSizes.join(', ')}. Image sizes (\`npm run build:images\`, as \`docker image inspect\` reports):`,
    '',
    table(['image', 'size'], images),
  ].join('\n'));
});
