// What Dockerfile.webhook and Dockerfile.proxy build, done without Docker, then run:
//  build stage   the files the build stage COPYs (read from the Dockerfile, filtered by
//                .dockerignore) in an empty directory; `npm ci` stands in as this checkout's
//                node_modules (same package-lock.json); `npm pack`, whose prepack compiles;
//  deps stage    the tarball extracted into an empty app directory with the lockfile beside it,
//                `npm ci --omit=dev --ignore-scripts` (offline-first from the npm cache);
//  runtime       the ENTRYPOINT + CMD of each Dockerfile with `node` = the Node 24 the tests run
//                on (the Dockerfiles pin the same version), WORKDIR /app = the app directory.
// Each program must answer 200 on its health endpoint and exit 0 on SIGTERM (exit 0 means the
// drain finished within DRAIN_TIMEOUT_MS: exitOnSignals exits 1 when it had to force). Then the
// same inside gVisor as Kubernetes runs the images: read-only root, /app read-only, /tmp and the
// Pod's volumes as tmpfs, the image's numeric USER.
import t from 'tap';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import pkg from '../../package.json' with { type: 'json' };
import { HEADER_DENY_REASON, PROXY_ADMIN_PATHS, SHARED_DIR, WEBHOOK_PATHS } from '../../lib/constants.ts';
import { copyArgs, dockerignoreMatcher, execForm, parseDockerfile, type Stage } from './dockerfile.ts';
import { fetchText, freePort, waitForAnswer } from './net.ts';
import { runscSkipReason, startSandbox } from './runsc.ts';

// Packing compiles the whole project and installs production dependencies: minutes, not seconds.
t.setTimeout(15 * 60_000);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const NODE = process.execPath;
const DRAIN_TIMEOUT_MS = 5_000;

/**
 * The test runner's environment minus its instrumentation (tap's NODE_OPTIONS loaders, coverage
 * collection): npm runs on whatever Node is on PATH and must build as it would in the image.
 */
const CLEAN_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(NODE_OPTIONS|NODE_V8_COVERAGE|TAP|_TAPJS)/.test(k)));

function sh(command: string, args: string[], cwd: string, env: Record<string, string | undefined> = CLEAN_ENV): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, env, timeout: 10 * 60_000, maxBuffer: 64 * 2 ** 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')} (in ${cwd}) failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

const webhookDf = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile.webhook'), 'utf8'));
const proxyDf = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile.proxy'), 'utf8'));
const ignored = dockerignoreMatcher(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));

/** The build stage's COPY instructions applied to an empty directory (the image's WORKDIR). */
function copyBuildContext(stage: Stage, dest: string): void {
  for (const ins of stage.instructions.filter((i) => i.keyword === 'COPY')) {
    const { from, sources, dest: to } = copyArgs(ins.args);
    if (from) throw new Error(`the build stage copies from ${from}: mirror it here`);
    for (const src of sources) {
      const abs = join(ROOT, src);
      const isDir = statSync(abs).isDirectory();
      const target = isDir ? join(dest, to) : join(dest, to, to.endsWith('/') ? basename(src) : '');
      cpSync(abs, target, { recursive: true, filter: (p) => !ignored(relative(ROOT, p)) });
    }
  }
}

const work = mkdtempSync(join(tmpdir(), 'ws-image-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const app = join(work, 'app');

// ── build stage ──
const src = join(work, 'src');
mkdirSync(src);
copyBuildContext(webhookDf.stages[0]!, src);
symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules'));
const packDir = join(work, 'pack');
mkdirSync(packDir);
await sh('npm', ['pack', '--pack-destination', packDir, '--loglevel=error'], src);
const [tarball] = readdirSync(packDir).filter((f) => f.endsWith('.tgz'));

// ── deps stage ──
mkdirSync(app, { mode: 0o755 });
await sh('tar', ['-xzf', join(packDir, tarball!), '--strip-components=1', '-C', app], work);
copyFileSync(join(ROOT, 'package-lock.json'), join(app, 'package-lock.json'));
await sh('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], app);

t.test('the image holds the packed package and production dependencies only', async (t) => {
  t.equal(tarball, `${pkg.name}-${pkg.version}.tgz`);
  t.ok(existsSync(join(app, pkg.bin['workspace-sandbox'])), 'the bin is compiled');
  t.ok(existsSync(join(app, 'dist/package.json')), 'the version source is there');
  for (const dep of Object.keys(pkg.dependencies)) t.ok(existsSync(join(app, 'node_modules', dep, 'package.json')), `dependency ${dep}`);
  for (const dev of ['typescript', 'tap', 'esbuild', 'postject', 'node', 'eslint']) t.notOk(existsSync(join(app, 'node_modules', dev)), `no dev dependency ${dev}`);
  t.notOk(existsSync(join(app, 'test')), 'no tests');
  t.notOk(existsSync(join(app, 'lib')), 'no TypeScript sources');
  t.notOk(existsSync(join(app, 'dist/workspace-agent')), 'no single executable');
});

interface Program {
  name: 'webhook' | 'proxy';
  stage: Stage;
  /** Environment the Deployment or the webhook's injection gives the program. */
  env: (ports: Record<string, number>) => Record<string, string>;
  ports: string[];
  health: (ports: Record<string, number>) => { url: string; insecure?: boolean };
  extra: (t: Tap, ports: Record<string, number>) => Promise<void>;
}

/** The `t` of a subtest (the last overload of t.test takes only the callback). */
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const PROGRAMS: Program[] = [
  {
    name: 'webhook',
    stage: webhookDf.stages.at(-1)!,
    ports: ['WEBHOOK_PORT', 'METRICS_PORT'],
    env: (p) => ({
      WEBHOOK_HOST: '127.0.0.1', WEBHOOK_PORT: String(p.WEBHOOK_PORT), METRICS_HOST: '127.0.0.1', METRICS_PORT: String(p.METRICS_PORT),
      DRAIN_TIMEOUT_MS: String(DRAIN_TIMEOUT_MS),
    }),
    // No TLS files: the dev self-signed pair.
    health: (p) => ({ url: `https://127.0.0.1:${p.WEBHOOK_PORT}${WEBHOOK_PATHS.healthz}`, insecure: true }),
    extra: async (t, p) => {
      const metrics = await fetchText(`http://127.0.0.1:${p.METRICS_PORT}${WEBHOOK_PATHS.metrics}`);
      t.equal(metrics.status, 200, 'GET /metrics');
    },
  },
  {
    name: 'proxy',
    stage: proxyDf.stages.at(-1)!,
    ports: ['PROXY_PORT', 'ADMIN_PORT'],
    env: (p) => ({
      PROXY_HOST: '127.0.0.1', PROXY_PORT: String(p.PROXY_PORT), ADMIN_HOST: '127.0.0.1', ADMIN_PORT: String(p.ADMIN_PORT),
      DRAIN_TIMEOUT_MS: String(DRAIN_TIMEOUT_MS),
    }),
    health: (p) => ({ url: `http://127.0.0.1:${p.ADMIN_PORT}${PROXY_ADMIN_PATHS.healthz}` }),
    extra: async (t, p) => {
      // With no rules every destination is denied, with the reason header the workspace user reads.
      const viaProxy = await new Promise<{ status: number; reason: unknown }>((resolve, reject) => {
        httpRequest({ host: '127.0.0.1', port: p.PROXY_PORT, path: 'http://example.com/', headers: { host: 'example.com' } }, (res) => {
          res.resume();
          resolve({ status: res.statusCode!, reason: res.headers[HEADER_DENY_REASON.toLowerCase()] });
        }).on('error', reject).end();
      });
      t.equal(viaProxy.status, 403, 'a destination outside the rules is denied');
      t.ok(viaProxy.reason, 'with the deny-reason header');
    },
  },
];

function imageCommand(stage: Stage): string[] {
  const entry = execForm(stage.instructions.find((i) => i.keyword === 'ENTRYPOINT')!.args) ?? [];
  const cmd = execForm(stage.instructions.find((i) => i.keyword === 'CMD')!.args) ?? [];
  return [...entry, ...cmd];
}

function imageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    for (const m of ins.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=(\S+)/g)) env[m[1]!] = m[2]!;
  }
  return env;
}

function imageUser(stage: Stage): { uid: number; gid: number } {
  const [uid, gid] = stage.instructions.filter((i) => i.keyword === 'USER').at(-1)!.args.split(':').map(Number);
  return { uid: uid!, gid: gid ?? uid! };
}

async function ports(names: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of names) out[n] = await freePort();
  return out;
}

for (const program of PROGRAMS) {
  t.test(`${program.name}: started as the image's CMD, healthy, drains on SIGTERM`, async (t) => {
    const command = imageCommand(program.stage);
    t.equal(command[0], 'node');
    const workdir = program.stage.instructions.filter((i) => i.keyword === 'WORKDIR').at(-1)!.args;
    t.equal(workdir, '/app');
    const args = command.slice(1).map((a) => (a.startsWith('/app/') ? join(app, a.slice('/app/'.length)) : a));
    const p = await ports(program.ports);
    const caDir = mkdtempSync(join(work, 'shared-'));
    const child: ChildProcess = spawn(NODE, args, {
      cwd: app,
      env: { ...imageEnv(program.stage), ...program.env(p), CA_DIR: caDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    t.teardown(() => { child.kill('SIGKILL'); });
    const alive = () => child.exitCode === null && child.signalCode === null;

    const { url, insecure } = program.health(p);
    const health = await waitForAnswer(url, { insecure, alive, output: () => out });
    t.equal(health.status, 200, `GET ${new URL(url).pathname}`);
    await program.extra(t, p);

    child.kill('SIGTERM');
    const [code, signal] = await exited;
    if (code !== 0) t.comment(out);
    t.equal(signal, null);
    t.equal(code, 0, 'SIGTERM: drained and exited 0');
    t.match(out, /shutdown complete/, 'the program logged its drain');
  });
}

const runscSkip = runscSkipReason();

for (const program of PROGRAMS) {
  t.test(`${program.name}: inside gVisor with a read-only root as its USER`, { skip: runscSkip }, async (t) => {
    const command = imageCommand(program.stage);
    const p = await ports(program.ports);
    const user = imageUser(program.stage);
    const sandbox = startSandbox({
      args: [NODE, ...command.slice(1)],
      cwd: '/app',
      user,
      env: { ...imageEnv(program.stage), ...program.env(p) },
      mounts: [
        { destination: '/app', source: app, readonly: true },
        { destination: '/tmp' },
        // Node 24 again, after /tmp: a checkout under /tmp (where it lives) would be hidden by that tmpfs.
        { destination: dirname(NODE), source: dirname(NODE), readonly: true },
        // The Pod's shared emptyDir (the proxy writes its CA there). /var/run is a symlink to
        // /run on Debian (and in the node image); runsc wants the resolved mount point.
        { destination: join(realpathSync(dirname(SHARED_DIR)), basename(SHARED_DIR)) },
      ],
    });
    t.teardown(() => sandbox.destroy());
    const alive = () => sandbox.child.exitCode === null && sandbox.child.signalCode === null;
    const { url, insecure } = program.health(p);
    const health = await waitForAnswer(url, { insecure, alive, output: sandbox.output, timeoutMs: 120_000 });
    t.equal(health.status, 200, `GET ${new URL(url).pathname} as uid ${user.uid}`);
    await program.extra(t, p);

    sandbox.signal('TERM');
    const code = await sandbox.exited;
    if (code !== 0) t.comment(sandbox.output());
    t.equal(code, 0, 'SIGTERM to PID 1: drained and exited 0');
  });
}
