// The program bundles the images run (scripts/bundle.ts), built into a temporary directory outside
// the checkout, where no node_modules can be found: each bundle must run on its own. The bin's
// behaviour stays (--version, --help, the error shape); other commands are refused; the proxy
// starts from its bundle, is ready, and exits 0 on SIGTERM; the SBOM names what was bundled.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSION } from '../../lib/version.ts';
import { bundleProgram, PROGRAMS, SBOM_FILE, type Program } from '../../scripts/bundle.ts';
import { freePort } from '../helpers/listen.ts';

const dir = mkdtempSync(join(tmpdir(), 'ws-bundle-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const NODE = process.execPath;
const CLEAN_ENV = { PATH: process.env.PATH ?? '' };

const bundles = {} as Record<Program, string>;
for (const program of Object.keys(PROGRAMS) as Program[]) bundles[program] = await bundleProgram(program, join(dir, program));

for (const [program, entry] of Object.entries(bundles) as [Program, string][]) {
  t.test(`${program} bundle: the bin's behaviour, only this program`, async (t) => {
    const version = spawnSync(NODE, [entry, '--version'], { encoding: 'utf8', env: CLEAN_ENV, cwd: dir });
    t.equal(version.stdout.trim(), VERSION);
    for (const command of PROGRAMS[program]) {
      const help = spawnSync(NODE, [entry, command, '--help'], { encoding: 'utf8', env: CLEAN_ENV, cwd: dir });
      t.equal(help.status, 0, help.stderr);
      t.match(help.stdout, /[A-Z_]{4,}/, `${command}: its own help (its settings)`);
    }
    const other = program === 'proxy' ? 'webhook' : 'proxy';
    const refused = spawnSync(NODE, [entry, other], { encoding: 'utf8', env: CLEAN_ENV, cwd: dir });
    t.equal(refused.status, 1);
    t.equal(refused.stderr.trim(), `workspace-sandbox ${other}: WS_ERR_USAGE: this build holds ${PROGRAMS[program].join(' and ')} only`);

    const sbom = JSON.parse(readFileSync(join(dir, program, SBOM_FILE), 'utf8')) as { bomFormat: string; metadata: { component: { version: string } }; components: { name: string; version: string; purl: string; licenses: { expression: string }[] }[] };
    t.equal(sbom.bomFormat, 'CycloneDX');
    t.equal(sbom.metadata.component.version, VERSION);
    const zod = sbom.components.find((c) => c.name === 'zod');
    const lockZod = (JSON.parse(readFileSync(new URL('../../package-lock.json', import.meta.url), 'utf8')) as { packages: Record<string, { version: string }> }).packages['node_modules/zod']!.version;
    t.same(zod && { version: zod.version, purl: zod.purl, license: zod.licenses[0]!.expression }, { version: lockZod, purl: `pkg:npm/zod@${lockZod}`, license: 'MIT' }, 'versions as package-lock.json installs them');
    t.notOk(sbom.components.some((c) => ['typescript', 'tap', 'esbuild', 'eslint'].includes(c.name)), 'no build or test tools');
  });
}

t.test('SBOMs follow what each program imports', async (t) => {
  const names = (p: Program) => (JSON.parse(readFileSync(join(dir, p, SBOM_FILE), 'utf8')) as { components: { name: string }[] }).components.map((c) => c.name);
  t.ok(names('proxy').includes('ioredis') && names('proxy').includes('http-proxy-3'), 'the proxy bundles its lazily loaded packages');
  t.notOk(names('webhook').includes('ioredis'), 'the webhook does not carry the proxy\'s Redis client');
  t.ok(names('proxy').includes('@kubernetes/client-node'), 'the gateway (in the proxy\'s image) loads the Kubernetes client');
  t.notOk(names('webhook').includes('@kubernetes/client-node'));
});

t.test('the proxy runs from its bundle alone: ready, then a clean exit on SIGTERM', async (t) => {
  const [proxyPort, adminPort] = [await freePort(), await freePort()];
  writeFileSync(join(dir, 'rules.json'), JSON.stringify([{ id: 'a', hosts: ['example.com'], ports: [443] }]));
  const child = spawn(NODE, [bundles.proxy, 'proxy'], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...CLEAN_ENV, PROXY_PORT: String(proxyPort), ADMIN_PORT: String(adminPort), ADMIN_HOST: '127.0.0.1', RULES_FILE: join(dir, 'rules.json'), CA_DIR: join(dir, 'ca'), LOG_LEVEL: 'warn' },
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  t.teardown(() => { child.kill('SIGKILL'); });
  let status = 0;
  for (let i = 0; i < 600 && status !== 200 && child.exitCode === null; i++) {
    status = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then((r) => r.status, () => 0);
    if (status !== 200) await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(status, 200, `ready (stderr: ${stderr.slice(-1000)})`);
  t.ok(readFileSync(join(dir, 'ca', 'ca.crt'), 'utf8').includes('BEGIN CERTIFICATE'), 'the CA written');
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit') as [number | null];
  t.equal(code, 0, 'drained and exited 0');
});

t.test('the webhook runs from its bundle alone: its metrics (prom-client as bundled) are served, then a clean exit on SIGTERM', async (t) => {
  const [webhookPort, metricsPort] = [await freePort(), await freePort()];
  const child = spawn(NODE, [bundles.webhook, 'webhook'], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...CLEAN_ENV, WEBHOOK_HOST: '127.0.0.1', WEBHOOK_PORT: String(webhookPort), METRICS_HOST: '127.0.0.1', METRICS_PORT: String(metricsPort), LOG_LEVEL: 'warn' },
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  t.teardown(() => { child.kill('SIGKILL'); });
  let metrics = '';
  for (let i = 0; i < 600 && !metrics.includes('admission_') && child.exitCode === null; i++) {
    metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => (r.ok ? r.text() : ''), () => '');
    if (!metrics.includes('admission_')) await new Promise((r) => setTimeout(r, 50));
  }
  t.match(metrics, /# TYPE \w*admission\w* (counter|histogram)/, `metrics served (stderr: ${stderr.slice(-1000)})`);
  t.match(metrics, /process_resident_memory_bytes/, 'with the process metrics');
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit') as [number | null];
  t.equal(code, 0, 'drained and exited 0');
});
