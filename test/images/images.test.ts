// The program images, built for real (`npm run build:images`: scripts/build-images.ts, `docker
// build` against the engine DOCKER_HOST names; .ci/run builds them first, so here the engine's
// cache answers) and run as Kubernetes runs them: read-only root filesystem, the image's numeric
// non-root user, no network (`--network none`: /healthz is asked from inside the container's
// network namespace with the image's own node), writable paths as tmpfs the way the Pods mount
// emptyDirs. Each must answer /healthz 200 and exit 0 on SIGTERM (exit 0 means its drain finished:
// lib/server.ts exitOnSignals exits 1 when it had to force). The images hold the program's bundle,
// its SBOM and the Node runtime: no shell, no npm.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PORTS, SHARED_DIR } from '../../lib/constants.ts';
import { VERSION } from '../../lib/version.ts';
import { buildImages, IMAGES, lockedNodeVersion } from '../../scripts/build-images.ts';
import type { Program } from '../../scripts/bundle.ts';
import { dockerSkipReason } from '../helpers/docker.ts';

t.setTimeout(10 * 60_000);

const skip = await dockerSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  await main();
}

function docker(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('docker', args, { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** GET on loopback inside the container (its network namespace), by the image's own node. */
function healthz(container: string, port: number, tls: boolean): { status: number | null; stdout: string } {
  const script = tls
    ? `require('node:https').get({host:'127.0.0.1',port:${port},path:'/healthz',rejectUnauthorized:false},(r)=>{r.resume();console.log(r.statusCode)}).on('error',(e)=>{console.log(e.code);process.exitCode=1})`
    : `fetch('http://127.0.0.1:${port}/healthz').then((r)=>console.log(r.status),(e)=>{console.log(e.cause?.code??e.message);process.exitCode=1})`;
  return docker(['exec', container, 'node', '-e', script]);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-images-'));
  const suffix = randomBytes(4).toString('hex');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const built = await buildImages();
  t.same(built, Object.values(IMAGES).map((i) => i.name), 'one image per program, under the names the manifests use');
  t.same(Object.values(IMAGES).map((i) => i.name), [`workspace-sandbox/credential-proxy:${VERSION}`, `workspace-sandbox/webhook:${VERSION}`]);

  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: c',
    'clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]', 'users: [{name: u, user: {token: unused}}]',
    'contexts: [{name: c, context: {cluster: c, user: u}}]', '',
  ].join('\n'), { mode: 0o644 });

  // Each command an image serves, with what its Pod gives it beyond the image: emptyDirs (tmpfs),
  // files, the command (the gateway's Deployment runs the proxy's image with `gateway`).
  const runs: { command: string; image: Program; args: string[]; port: number; tls: boolean }[] = [
    { command: 'proxy', image: 'proxy', args: ['--tmpfs', SHARED_DIR], port: PORTS.proxyAdmin, tls: false },
    { command: 'gateway', image: 'proxy', args: ['-v', `${kubeconfig}:/etc/workspace-sandbox/kubeconfig:ro`, '-e', 'KUBECONFIG=/etc/workspace-sandbox/kubeconfig'], port: PORTS.gatewayMetrics, tls: false },
    { command: 'webhook', image: 'webhook', args: [], port: PORTS.webhook, tls: true },
  ];

  for (const [program, image] of Object.entries(IMAGES) as [Program, typeof IMAGES[Program]][]) {
    t.test(`${image.name}: what the image holds`, async (t) => {
      const config = JSON.parse(docker(['image', 'inspect', '--format', '{{json .Config}}', image.name]).stdout) as { User: string; Entrypoint: string[]; Cmd: string[] };
      t.equal(config.User, `${image.uid}:${image.uid}`, 'numeric non-root user');
      t.same(config.Entrypoint, ['/usr/local/bin/node', '/app/workspace-sandbox.mjs']);
      t.same(config.Cmd, [program]);

      // Every file of the image, from an exported container (never started).
      const name = `ws-image-files-${program}-${suffix}`;
      t.equal(docker(['create', '--name', name, image.name]).status, 0);
      const listed = spawnSync('sh', ['-c', `docker export ${name} | tar -t`], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
      docker(['rm', '-f', name]);
      const files = listed.stdout.split('\n').filter((f) => f && !f.endsWith('/'));
      const unexpected = files.filter((f) => !/^(usr\/local\/bin\/node|(usr\/)?lib(64)?\/[^ ]+\.so[.0-9]*|etc\/(passwd|group|hostname|hosts|resolv\.conf|mtab)|dev\/console|\.dockerenv|app\/(workspace-sandbox\.mjs|sbom\.json|chunks\/[^/]+\.mjs))$/.test(f));
      t.same(unexpected, [], 'only node, its libraries, passwd/group (plus the engine\'s own mount points) and the bundle');
      t.ok(files.includes('app/workspace-sandbox.mjs') && files.includes('app/sbom.json'));
      t.notOk(files.some((f) => /(^|\/)(sh|bash|busybox|npm|npx|apt|dpkg)$/.test(f)), 'no shell, no package manager');
      t.notOk(docker(['run', '--rm', '--network', 'none', '--entrypoint', '/bin/sh', image.name, '-c', 'true']).status === 0, 'no /bin/sh to run');

      const printSbom = 'process.stdout.write(require("node:fs").readFileSync("/app/sbom.json"))';
      const sbom = JSON.parse(docker(['run', '--rm', '--network', 'none', '--entrypoint', '/usr/local/bin/node', image.name, '-e', printSbom]).stdout || '{}') as
        { bomFormat?: string; components?: { name: string; version: string; licenses: { expression: string }[] }[] };
      t.equal(sbom.bomFormat, 'CycloneDX');
      t.ok(sbom.components?.some((c) => c.name === 'zod' && c.version && c.licenses[0]?.expression === 'MIT'), 'the SBOM lists the bundled packages with versions and licenses');
      t.equal(docker(['run', '--rm', '--network', 'none', '--entrypoint', '/usr/local/bin/node', image.name, '--version']).stdout.trim(), `v${lockedNodeVersion()}`, 'the Node the tests run on');
    });
  }

  for (const run of runs) {
    const image = IMAGES[run.image];
    t.test(`${image.name} ${run.command}: runs read-only, as its user, without a network; /healthz; clean exit on SIGTERM`, async (t) => {
      const name = `ws-image-run-${run.command}-${suffix}`;
      t.teardown(() => { docker(['rm', '-f', name]); });
      const started = docker(['run', '-d', '--name', name, '--read-only', '--user', `${image.uid}:${image.uid}`, '--network', 'none',
        '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', '--tmpfs', '/tmp', ...run.args, image.name, run.command]);
      t.equal(started.status, 0, started.stderr);

      let answer = { status: null as number | null, stdout: '' };
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        answer = healthz(name, run.port, run.tls);
        if (answer.stdout.trim() === '200') break;
        if (docker(['inspect', '--format', '{{.State.Running}}', name]).stdout.trim() !== 'true') break;
        await new Promise((r) => setTimeout(r, 200));
      }
      t.equal(answer.stdout.trim(), '200', `/healthz on ${run.port} answers 200 (logs: ${docker(['logs', name]).stderr.slice(-1500)})`);

      const stopped = docker(['stop', '--time', '20', name]);
      t.equal(stopped.status, 0);
      const state = JSON.parse(docker(['inspect', '--format', '{{json .State}}', name]).stdout) as { ExitCode: number; OOMKilled: boolean };
      t.equal(state.ExitCode, 0, 'SIGTERM: drained and exited 0 (not killed after the grace period)');
      const logs = docker(['logs', name]);
      t.notMatch(logs.stdout + logs.stderr, /EROFS|EACCES|WS_ERR_INTERNAL/, 'nothing tried to write outside its volumes');
    });
  }
}
