// Hot reload of the injection config (ConfigMap-style atomic swap), serving-certificate rotation
// during a request loop, and the real `workspace-sandbox webhook` process.
import t from 'tap';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { X509Certificate } from 'node:crypto';
import { request } from 'undici';
import { configHash, loadInjectionConfigFile } from '../../webhook/config.ts';
import { LOG_REVIEW } from '../../webhook/server.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { writeSecretVolume } from '../helpers/secret-volume.ts';
import { patchOf, podReview, startWebhook } from './helpers.ts';

const BIN = fileURLToPath(new URL('../../bin/workspace-sandbox.ts', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../webhook/injection-config.example.yaml', import.meta.url));
const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'ws', namespace: 'sandboxes' }, spec: { containers: [{ name: 'workspace', image: 'example/ws:1' }] } };

/** ALLOWED_DOMAINS the webhook puts into the sidecar right now. */
async function allowedDomains(webhook: Awaited<ReturnType<typeof startWebhook>>): Promise<string> {
  const ops = patchOf((await webhook.post(podReview(pod))).json()) as { path: string; value: unknown }[];
  const inits = ops.find((o) => o.path === '/spec/initContainers')?.value as { env: { name: string; value: string }[] }[];
  return inits[0]!.env.find((e) => e.name === 'ALLOWED_DOMAINS')!.value;
}

t.test('the config file is hot-reloaded; a bad file keeps the old config, is logged and counted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-config-'));
  const example = readFileSync(EXAMPLE, 'utf8');
  writeSecretVolume(dir, { 'config.yaml': example });
  const file = join(dir, 'config.yaml');
  const initial = loadInjectionConfigFile(file);
  const webhook = await startWebhook(t, { injection: initial, env: { WEBHOOK_CONFIG_FILE: file, RELOAD_POLL_INTERVAL_MS: '200' } });
  const watcher = webhook.server.configWatcher!;
  t.match(await allowedDomains(webhook), /^bedrock-runtime/);

  // A good new file, swapped in the way the kubelet updates a ConfigMap volume.
  const reloaded = once(watcher, 'reload');
  writeSecretVolume(dir, { 'config.yaml': 'namespaces: [sandboxes]\nallowedDomains:\n  domains: [only.example.com]\n' });
  await reloaded;
  t.equal(await allowedDomains(webhook), 'only.example.com', 'new config in use without a restart');
  const goodHash = configHash(webhook.server.config());
  t.not(goodHash, configHash(initial));
  t.ok(webhook.logs.find('injection config reloaded').length === 1);

  // A bad file: unknown field and a bad value. The previous config keeps serving.
  const failed = once(watcher, 'reloadFailed');
  writeSecretVolume(dir, { 'config.yaml': 'namespaces: [sandboxes]\nallowedDomain: {}\nactiveDeadlineSeconds: {max: -1}\n' });
  const [err] = await failed as [Error];
  t.match(err.message, /allowedDomain: unknown field/);
  t.match(err.message, /activeDeadlineSeconds.max/);
  t.equal(await allowedDomains(webhook), 'only.example.com', 'old config still serving');
  t.equal(configHash(webhook.server.config()), goodHash);
  const errorLine = webhook.logs.find('injection config reload failed; keeping the previous config')[0];
  t.match(errorLine, { level: 'error', kept: goodHash, err: /allowedDomain: unknown field/ });
  // Not YAML at all.
  const failedAgain = once(watcher, 'reloadFailed');
  writeSecretVolume(dir, { 'config.yaml': 'namespaces: [sandboxes\n' });
  t.match((await failedAgain as [Error])[0].message, /not valid YAML/);

  const metrics = await (await request(`${webhook.metricsUrl}/metrics`)).body.text();
  t.match(metrics, /config_reloads_total\{result="success",program="webhook"\} 1/);
  t.match(metrics, /config_reloads_total\{result="error",program="webhook"\} 2/);
  t.match(metrics, new RegExp(`config_info\\{hash="${goodHash}",program="webhook"\\} 1`));
  t.notMatch(metrics, new RegExp(`config_info\\{hash="${configHash(initial)}"`), 'only the current hash is exported');
});

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** One review on a fresh TLS connection; resolves with the served certificate and the review's uid echo. */
function reviewOnNewConnection(port: number, ca: string): Promise<{ fp: string; ok: boolean }> {
  const review = podReview(pod);
  const body = JSON.stringify(review);
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, servername: 'localhost', path: '/mutate', method: 'POST', ca, agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const fp = (res.socket as TLSSocket).getPeerX509Certificate()?.fingerprint256 ?? '';
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          const answer = JSON.parse(Buffer.concat(chunks).toString()) as { response?: { uid?: string; allowed?: boolean } };
          resolve({ fp, ok: res.statusCode === 200 && answer.response?.uid === review.request.uid && answer.response?.allowed === true });
        } catch (err) {
          reject(err as Error);
        }
      });
    });
    req.once('error', reject);
    req.end(body);
  });
}

t.test('the serving certificate rotates during a request loop with zero failed reviews', async (t) => {
  const pki = makeTestPki();
  const dir = mkdtempSync(join(tmpdir(), 'ws-tls-'));
  writeSecretVolume(dir, { 'tls.crt': pki.certPem, 'tls.key': pki.keyPem, 'ca.crt': pki.caPem });
  const webhook = await startWebhook(t, {
    injection: loadInjectionConfigFile(EXAMPLE),
    caPem: pki.caPem,
    env: { TLS_CERT_FILE: join(dir, 'tls.crt'), TLS_KEY_FILE: join(dir, 'tls.key'), RELOAD_POLL_INTERVAL_MS: '200' },
  });
  const port = Number(new URL(webhook.url).port);
  const next = pki.issue(['localhost', '127.0.0.1'], 'rotated');
  const oldFp = fingerprint(pki.certPem);
  const newFp = fingerprint(next.certPem);
  const reloaded = once(webhook.server.keyPairWatcher!, 'reload');
  let failures = 0;
  let swapped = false;
  let afterSwap = 0;
  const seen = new Map<string, number>();
  const loop = async () => {
    for (let i = 0; i < 1500 && afterSwap < 40; i++) {
      try {
        const r = await reviewOnNewConnection(port, pki.caPem);
        if (!r.ok) failures++;
        seen.set(r.fp, (seen.get(r.fp) ?? 0) + 1);
        if (swapped && r.fp === newFp) afterSwap++;
      } catch {
        failures++;
      }
      if (i === 20 && !swapped) {
        swapped = true;
        writeSecretVolume(dir, { 'tls.crt': next.certPem, 'tls.key': next.keyPem, 'ca.crt': pki.caPem });
      }
    }
  };
  await Promise.all([loop(), loop(), loop()]);
  await reloaded;
  t.equal(failures, 0, 'zero failed reviews');
  t.ok((seen.get(oldFp) ?? 0) > 0, 'old certificate served first');
  t.ok(afterSwap >= 40, 'new certificate served after the rotation');
  t.same([...seen.keys()].sort(), [oldFp, newFp].sort());
  const metrics = await (await request(`${webhook.metricsUrl}/metrics`)).body.text();
  const expiry = Number(/tls_certificate_expiry_timestamp_seconds\{program="webhook"\} (\S+)/.exec(metrics)?.[1]);
  t.equal(expiry, new Date(new X509Certificate(next.certPem).validTo).getTime() / 1000, 'expiry metric follows the rotation');
  t.ok(webhook.logs.find(LOG_REVIEW).every((l) => l.status === 200));
});

function runBin(env: Record<string, string>, args: string[] = ['webhook']) {
  const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  return { child, exited, out: () => stdout, err: () => stderr };
}

t.test('`workspace-sandbox webhook` exits 1 listing every problem of a bad config', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-bad-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, 'namespace: [sandboxes]\nsidecar: {imagePullPolicy: Sometimes}\nworkspace: {maxResources: {cpu: lots}}\n');
  const run = runBin({ WEBHOOK_CONFIG_FILE: file, WEBHOOK_PORT: '0', METRICS_PORT: '0', TLS_CERT_FILE: '/x' });
  const [code] = await run.exited;
  t.equal(code, 1);
  t.match(run.err(), /TLS_KEY_FILE: TLS_CERT_FILE and TLS_KEY_FILE go together/);
  const bad = runBin({ WEBHOOK_CONFIG_FILE: file, WEBHOOK_PORT: '0', METRICS_PORT: '0' });
  t.equal((await bad.exited)[0], 1);
  t.match(bad.err(), /3 problems/);
  t.match(bad.err(), /namespace: unknown field/);
  t.match(bad.err(), /sidecar.imagePullPolicy/);
  t.match(bad.err(), /workspace.maxResources.cpu: must be a Kubernetes quantity/);
});

t.test('`workspace-sandbox webhook` serves a dev pair without TLS files and drains on SIGTERM', async (t) => {
  const run = runBin({ WEBHOOK_CONFIG_FILE: EXAMPLE, WEBHOOK_PORT: '0', METRICS_PORT: '0', WEBHOOK_HOST: '127.0.0.1', METRICS_HOST: '127.0.0.1' });
  t.teardown(() => { run.child.kill('SIGKILL'); });
  let listening: { webhook: string; metrics: string } | undefined;
  for (let i = 0; i < 200 && !listening; i++) {
    const line = run.out().split('\n').find((l) => l.includes('"webhook listening"'));
    if (line) listening = JSON.parse(line) as { webhook: string; metrics: string };
    else await new Promise((r) => setTimeout(r, 50));
  }
  if (!listening) {
    t.fail(`did not start: ${run.out()} ${run.err()}`);
    return;
  }
  t.match(run.out(), /dev self-signed certificate/);
  const port = Number(listening.webhook.split(':').pop());
  const body = JSON.stringify(podReview(pod));
  const answer = await new Promise<string>((resolve, reject) => {
    // The dev CA exists only inside that process: trust is not the point here, the answer is.
    const req = httpsRequest({ host: '127.0.0.1', port, path: '/mutate', method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve(text));
    });
    req.once('error', reject);
    req.end(body);
  });
  t.match(JSON.parse(answer), { response: { allowed: true, patchType: 'JSONPatch' } });
  run.child.kill('SIGTERM');
  const [code] = await run.exited;
  t.equal(code, 0, 'clean exit after the drain');
  t.match(run.out(), /shutdown complete/);
});
