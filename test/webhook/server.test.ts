// The webhook over real HTTPS: AdmissionReview in and out, every bad-input rule, metrics and the
// canonical log line.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import jsonpatch from 'fast-json-patch';
import { DEFAULT_INJECTION_CONFIG, parseInjectionConfig, configHash } from '../../webhook/config.ts';
import { LOG_REVIEW, MAX_REQUEST_BYTES } from '../../webhook/server.ts';
import { inject } from '../../webhook/inject.ts';
import { patchOf, podReview, startWebhook } from './helpers.ts';

const config = parseInjectionConfig({ namespaces: ['sandboxes'] });
const pod = () => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'ws-1', namespace: 'sandboxes', annotations: { 'example.com/a~b/c': 'x' } },
  spec: { containers: [{ name: 'workspace', image: 'example/ws:1', env: [{ name: 'AWS_ROLE_ARN', value: 'arn:aws:iam::1:role/r' }] }] },
});

async function metricsText(metricsUrl: string): Promise<string> {
  const res = await request(`${metricsUrl}/metrics`);
  return res.body.text();
}

t.test('a Pod CREATE is answered with a JSON Patch that reproduces inject(), uid echoed, logged once, counted', async (t) => {
  const webhook = await startWebhook(t, { injection: config });
  const review = podReview(pod());
  const res = await webhook.post(review);
  t.equal(res.status, 200);
  t.match(String(res.headers['content-type']), /^application\/json/);
  const body = res.json();
  t.equal(body.apiVersion, 'admission.k8s.io/v1');
  t.equal(body.kind, 'AdmissionReview');
  t.equal(body.response?.uid, review.request.uid);
  t.equal(body.response?.allowed, true);
  t.equal(body.response?.patchType, 'JSONPatch');
  const expected = inject(pod(), config);
  t.notOk(expected.denied);
  const patch = patchOf(body) as jsonpatch.Operation[];
  t.ok(patch.some((op) => op.path === '/metadata/annotations/example.com~1a~0b~1c') === false, 'untouched annotation keys are not in the patch');
  t.same(jsonpatch.applyPatch(pod(), patch, true, false).newDocument, expected.denied ? undefined : expected.pod);

  const lines = webhook.logs.find(LOG_REVIEW);
  t.equal(lines.length, 1, 'one canonical line per review');
  t.match(lines[0], { uid: review.request.uid, namespace: 'sandboxes', pod: 'ws-1', operation: 'CREATE', result: 'injected', status: 200, patchOps: patch.length, dryRun: false });
  t.type(lines[0]!.durationMs, 'number');
  // JSON.parse keeps the last of two equal keys, so a duplicate (the logger's own `name` and a Pod
  // name) is only visible in the raw line: every key of the review line appears once.
  const raw = webhook.logs.text().split('\n').find((l) => l.includes(`"msg":"${LOG_REVIEW}"`))!;
  const keys = [...raw.matchAll(/[{,]"([^"]+)":/g)].map((m) => m[1]);
  t.same(keys.filter((k, i) => keys.indexOf(k) !== i), [], 'no key twice in the raw log line');
  const metrics = await metricsText(webhook.metricsUrl);
  t.match(metrics, /admission_requests_total\{operation="CREATE",result="injected",program="webhook"\} 1/);
  t.match(metrics, /admission_duration_seconds_bucket\{le="0.0005",program="webhook",result="injected"\}/);
  t.match(metrics, new RegExp(`config_info\\{hash="${configHash(config)}",program="webhook"\\} 1`));
  const expiry = Number(/tls_certificate_expiry_timestamp_seconds\{program="webhook"\} (\S+)/.exec(metrics)?.[1]);
  t.ok(expiry > Date.now() / 1000, 'certificate expiry exported');
});

t.test('denials and unusable Pods are HTTP 200 with allowed:false and a reason', async (t) => {
  const webhook = await startWebhook(t, { injection: config });
  const privileged = pod();
  (privileged.spec.containers[0] as Record<string, unknown>).securityContext = { privileged: true };
  const denied = (await webhook.post(podReview(privileged))).json();
  t.equal(denied.response?.allowed, false);
  t.match(denied.response?.status, { code: 403, reason: 'Forbidden', message: /privileged/ });
  t.notOk(denied.response?.patch);

  const broken = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: 'nope' } };
  const res = await webhook.post(podReview(broken));
  t.equal(res.status, 200);
  t.match(res.json().response?.status, { code: 400, message: /not a valid Pod: spec.containers/ });
  const noObject = await webhook.post(podReview(null));
  t.match(noObject.json().response?.status, { code: 400, message: /not a valid Pod/ });
  const metrics = await metricsText(webhook.metricsUrl);
  t.match(metrics, /admission_requests_total\{operation="CREATE",result="denied",program="webhook"\} 1/);
  t.match(metrics, /admission_requests_total\{operation="CREATE",result="error",program="webhook"\} 2/);
  t.match(webhook.logs.find(LOG_REVIEW)[0], { result: 'denied', reason: 'privileged' });
});

t.test('other kinds, operations, subresources and namespaces are allowed untouched; dryRun gets the same answer', async (t) => {
  const webhook = await startWebhook(t, { injection: config });
  const cases = [
    podReview({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' } }, { kind: { group: '', version: 'v1', kind: 'ConfigMap' }, resource: { group: '', version: 'v1', resource: 'configmaps' } }),
    podReview(pod(), { operation: 'UPDATE', oldObject: pod() }),
    podReview(null, { operation: 'DELETE', oldObject: pod() }),
    podReview(pod(), { subResource: 'ephemeralcontainers', operation: 'UPDATE' }),
    podReview({ ...pod(), metadata: { name: 'elsewhere', namespace: 'default' } }, { namespace: 'default' }),
  ];
  for (const review of cases) {
    const body = (await webhook.post(review)).json();
    t.same(body.response, { uid: review.request.uid, allowed: true }, `${String(review.request.operation)} ${JSON.stringify(review.request.kind)} ${String(review.request.namespace)}`);
  }
  const wet = patchOf((await webhook.post(podReview(pod()))).json());
  const dry = patchOf((await webhook.post(podReview(pod(), { dryRun: true }))).json());
  t.same(dry, wet, 'dryRun: same patch');
  t.match(webhook.logs.find(LOG_REVIEW).at(-1), { dryRun: true });
  const metrics = await metricsText(webhook.metricsUrl);
  t.match(metrics, /admission_requests_total\{operation="UPDATE",result="skipped",program="webhook"\} 2/);
});

t.test('bad input never crashes and is answered with an AdmissionReview that says why', async (t) => {
  const webhook = await startWebhook(t, { injection: config });
  const status = async (r: Awaited<ReturnType<typeof webhook.post>>) => ({ http: r.status, body: r.json() });

  const wrongType = await status(await webhook.post(podReview(pod()), { 'content-type': 'text/plain' }));
  t.equal(wrongType.http, 415);
  t.match(wrongType.body, { kind: 'AdmissionReview', response: { allowed: false, status: { code: 415, message: /text\/plain.*not application\/json/ } } });
  const noType = await webhook.post(JSON.stringify(podReview(pod())), {});
  t.equal(noType.status, 415);
  const withCharset = await webhook.post(podReview(pod()), { 'content-type': 'application/json; charset=utf-8' });
  t.equal(withCharset.status, 200, 'a charset parameter is fine');

  const malformed = await status(await webhook.post('{"apiVersion": "admission.k8s.io/v1", "kind": '));
  t.equal(malformed.http, 400);
  t.match(malformed.body.response, { uid: '', allowed: false, status: { code: 400, message: /not valid JSON/ } });
  const noUid = await status(await webhook.post({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { kind: { group: '', version: 'v1', kind: 'Pod' } } }));
  t.equal(noUid.http, 400);
  t.match(noUid.body.response?.status?.message, /no uid/);
  const v1beta1 = await status(await webhook.post({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'abc' } }));
  t.equal(v1beta1.http, 400);
  t.equal(v1beta1.body.response?.uid, 'abc', 'uid echoed even on a bad request');
  const notObject = await status(await webhook.post('[1,2,3]'));
  t.equal(notObject.http, 400);
  const noRequest = await status(await webhook.post({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }));
  t.match(noRequest.body.response?.status?.message, /no request/);

  // Over the cap, declared up front: refused before the body is read.
  const big = Buffer.alloc(MAX_REQUEST_BYTES + 1, 0x20);
  const declared = await webhook.post(big);
  t.equal(declared.status, 413);
  t.match(declared.json().response?.status, { code: 413 });
  // Over the cap, chunked (no Content-Length): refused once the cap is crossed.
  const chunks = function* () {
    for (let sent = 0; sent <= MAX_REQUEST_BYTES; sent += 1 << 20) yield Buffer.alloc(1 << 20, 0x20);
  };
  const res = await request(`${webhook.url}/mutate`, { method: 'POST', body: Readable.from(chunks()), headers: { 'content-type': 'application/json' }, dispatcher: webhook.agent }).catch((err: Error) => err);
  if (res instanceof Error) t.fail(`chunked 413 not received: ${res.message}`);
  else {
    t.equal(res.statusCode, 413);
    t.match(JSON.parse(await res.body.text()), { response: { status: { code: 413 } } });
  }
  // Just under the cap is read (and rejected only for not being JSON).
  const under = await webhook.post(Buffer.alloc(MAX_REQUEST_BYTES - 10, 0x20));
  t.equal(under.status, 400);

  // Method and path.
  const get = await request(`${webhook.url}/mutate`, { dispatcher: webhook.agent });
  t.equal(get.statusCode, 405);
  t.equal(get.headers.allow, 'POST');
  t.match(JSON.parse(await get.body.text()), { response: { status: { code: 405 } } });
  const missing = await request(`${webhook.url}/nope`, { dispatcher: webhook.agent });
  t.equal(missing.statusCode, 404);
  await missing.body.dump();
  for (const path of ['/healthz', '/readyz']) {
    const r = await request(`${webhook.url}${path}`, { dispatcher: webhook.agent });
    t.equal(r.statusCode, 200, path);
    await r.body.dump();
  }

  // Still serving, and nothing answered 500.
  t.equal((await webhook.post(podReview(pod()))).status, 200);
  t.notMatch(await metricsText(webhook.metricsUrl), /result="error"[^\n]*\n[^\n]*500/);
  for (const line of webhook.logs.find(LOG_REVIEW)) t.not(line.status, 500);
});

t.test('curl, a real client outside Node, gets the same answers', { skip: spawnSync('curl', ['--version']).status === 0 ? false : 'curl not installed' }, async (t) => {
  const webhook = await startWebhook(t, { injection: DEFAULT_INJECTION_CONFIG });
  const dir = mkdtempSync(join(tmpdir(), 'ws-webhook-'));
  const ca = join(dir, 'ca.crt');
  writeFileSync(ca, webhook.server.devCaPem!);
  const body = join(dir, 'review.json');
  writeFileSync(body, JSON.stringify(podReview(pod())));
  const port = new URL(webhook.url).port;
  const curl = (...args: string[]) => new Promise<{ code: string; out: string }>((resolve) => {
    // Asynchronous: the server runs in this process.
    import('node:child_process').then(({ execFile }) => execFile('curl', ['-sS', '--cacert', ca, '--resolve', `localhost:${port}:127.0.0.1`, '-w', '\n%{http_code}', ...args], (_err, stdout) => {
      const lines = stdout.trimEnd().split('\n');
      resolve({ code: lines.pop() ?? '', out: lines.join('\n') });
    }));
  });
  const ok = await curl('-H', 'Content-Type: application/json', '--data-binary', `@${body}`, `https://localhost:${port}/mutate`);
  t.equal(ok.code, '200');
  t.match(JSON.parse(ok.out), { response: { allowed: true, patchType: 'JSONPatch' } });
  const wrong = await curl('-H', 'Content-Type: text/plain', '--data-binary', `@${body}`, `https://localhost:${port}/mutate`);
  t.equal(wrong.code, '415');
  t.match(JSON.parse(wrong.out), { response: { status: { code: 415 } } });
});

t.test('kubectl debug (pods/ephemeralcontainers) on an injected Pod: hardened, or refused with the field', async (t) => {
  const webhook = await startWebhook(t, { injection: config });
  const injected = inject(pod(), config);
  if (injected.denied) throw new Error(injected.message);
  const before = injected.pod as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const debug = (container: Record<string, unknown>) => ({ ...structuredClone(before), spec: { ...structuredClone(before.spec), ephemeralContainers: [container] } });

  const plain = await webhook.post(podReview(debug({ name: 'dbg', image: 'busybox' }), { operation: 'UPDATE', subResource: 'ephemeralcontainers', oldObject: before }));
  t.equal(plain.json().response?.allowed, true);
  const patched = jsonpatch.applyPatch(debug({ name: 'dbg', image: 'busybox' }), patchOf(plain.json()) as jsonpatch.Operation[], false, false).newDocument;
  t.match(patched.spec.ephemeralContainers[0].securityContext, {
    runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
  });

  const keys = await webhook.post(podReview(debug({ name: 'dbg', image: 'busybox', env: [{ name: 'AWS_SECRET_ACCESS_KEY', value: 'x' }] }),
    { operation: 'UPDATE', subResource: 'ephemeralcontainers', oldObject: before }));
  t.match(keys.json().response, { allowed: false, status: { code: 403, message: /spec\.ephemeralContainers\[0\]\.env\[0\]/ } });

  const swapped = structuredClone(before);
  swapped.spec.initContainers[0].image = 'evil.example/proxy:1';
  const swap = await webhook.post(podReview(swapped, { operation: 'UPDATE', oldObject: before }));
  t.match(swap.json().response, { allowed: false, status: { message: /spec\.initContainers\[0\]\.image/ } });
});

t.test('a Pod under a fallback RuntimeClass is counted and says so', async (t) => {
  const withRunc = parseInjectionConfig({ runtime: { runtimeClassName: 'gvisor', allowedFallbacks: ['runc'] } });
  const webhook = await startWebhook(t, { injection: withRunc });
  const p = pod();
  (p.metadata.annotations as Record<string, string>)['workspace-sandbox.io/runtime'] = 'runc';
  const res = (await webhook.post(podReview(p))).json();
  t.equal(res.response?.allowed, true);
  t.match(res.response?.warnings, [/fallback RuntimeClass runc/]);
  await webhook.post(podReview(pod()));
  const metrics = await metricsText(webhook.metricsUrl);
  t.match(metrics, /admission_runtime_fallbacks_total\{runtime_class="runc",program="webhook"\} 1/);
});
