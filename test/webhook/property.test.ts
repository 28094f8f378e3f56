// Property tests (fast-check): 10,000 generated Pods through `inject` and the webhook's patch path
// in-process, a sample through the real HTTPS server, and arbitrary JSON that must never throw.
import t from 'tap';
import fc from 'fast-check';
import jsonpatch from 'fast-json-patch';
import { ANNOTATION_STATUS, CONTAINER_PROXY, PROXY_URL } from '../../lib/constants.ts';
import { readConfigFile } from '../../lib/config.ts';
import { parseInjectionConfig, configHash } from '../../webhook/config.ts';
import { reviewRequest, type AdmissionRequest } from '../../webhook/admission.ts';
import { inject, type Json } from '../../webhook/inject.ts';
import { validatePod } from './pod-schema.ts';
import { podArb } from './arbitraries.ts';
import { patchOf, podReview, startWebhook } from './helpers.ts';

// With two allowed capabilities, so the generator's spellings (CAP_CHOWN, chown) reach the admitted branch too.
const example = readConfigFile(new URL('../../webhook/injection-config.example.yaml', import.meta.url).pathname) as Record<string, Record<string, unknown>>;
const config = parseInjectionConfig({ ...example, workspace: { ...example.workspace, capabilities: ['CHOWN', 'SETUID'] } });
const RUNS = Number(process.env.PROPERTY_RUNS ?? 10_000);
const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : undefined;

type J = Record<string, unknown>;
const list = (v: unknown): J[] => (Array.isArray(v) ? v as J[] : []);

t.test(`${RUNS} generated Pods: never throws, idempotent, the patch applies, the result validates`, async (t) => {
  const counts = { injected: 0, denied: 0, skipped: 0 };
  fc.assert(fc.property(fc.noBias(podArb), (pod) => {
    const input = JSON.parse(JSON.stringify(pod)) as Json;
    const result = inject(pod, config);
    if (JSON.stringify(pod) !== JSON.stringify(input)) throw new Error('inject modified its input');
    if (result.denied) {
      counts.denied++;
      if (result.violations.length === 0 || result.message === '') throw new Error('denial without a reason');
      return;
    }
    if (result.skipped) {
      counts.skipped++;
      return;
    }
    counts.injected++;
    const out = result.pod;
    // Idempotent, byte for byte.
    const again = inject(out, config);
    if (again.denied) throw new Error(`re-injection denied: ${again.message}`);
    if (JSON.stringify(again.pod) !== JSON.stringify(out)) throw new Error('not a fixpoint');
    // The webhook's patch (diff of raw JSON) applied to the input gives the result.
    const review = reviewRequest({ uid: 'u', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'sandboxes', object: input } as AdmissionRequest, config);
    const patch = review.response.patch ? JSON.parse(Buffer.from(review.response.patch, 'base64').toString()) as jsonpatch.Operation[] : [];
    const patched = jsonpatch.applyPatch(JSON.parse(JSON.stringify(input)), patch, true, false).newDocument;
    if (JSON.stringify(sortKeys(patched)) !== JSON.stringify(sortKeys(out))) throw new Error('patch does not reproduce the result');
    // The result is a Pod the API server accepts, and the invariants hold.
    const problems = validatePod(out);
    if (problems.length > 0) throw new Error(`invalid result: ${problems.join('; ')}`);
    const spec = out.spec as J;
    const inits = list(spec.initContainers);
    if (inits[0]?.name !== CONTAINER_PROXY || inits[0]?.restartPolicy !== 'Always') throw new Error('sidecar not first');
    for (const c of [...inits.slice(1), ...list(spec.containers)]) {
      const env = list(c.env);
      if (!env.some((e) => e.name === 'HTTPS_PROXY' && e.value === PROXY_URL)) throw new Error(`${String(c.name)} has no proxy`);
      if (env.some((e) => (e.valueFrom as J | undefined)?.secretKeyRef)) throw new Error(`${String(c.name)} holds a secret`);
      if (env.some((e) => config.credentials.moveEnv.includes(e.name as string))) throw new Error(`${String(c.name)} holds a credential`);
      if (list(c.volumeMounts).some((m) => String(m.name).startsWith('kube-api-access-'))) throw new Error('token still mounted');
      const sc = c.securityContext as J;
      if (sc.privileged === true || sc.allowPrivilegeEscalation !== false || sc.readOnlyRootFilesystem !== true) throw new Error('weak securityContext');
    }
    if (spec.automountServiceAccountToken !== false || spec.hostNetwork === true) throw new Error('pod-level hardening missing');
    if (spec.priority !== undefined && (pod.spec as J).priorityClassName !== spec.priorityClassName) throw new Error('stale priority kept');
    if (spec.overhead !== undefined && (pod.spec as J).runtimeClassName !== spec.runtimeClassName) throw new Error('stale overhead kept');
    const status = JSON.parse((out.metadata as { annotations: Record<string, string> }).annotations[ANNOTATION_STATUS]!) as J;
    if (status.configHash !== configHash(config)) throw new Error('status without the config hash');
    // The workspace has all three probes: the creator's own, untouched, or the webhook's, none of which waits before its first run.
    const original = list((pod.spec as J).containers).find((c) => c.name === status.workspaceContainer) ?? {};
    const ws = list(spec.containers).find((c) => c.name === status.workspaceContainer)!;
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const p = ws[probe] as J | undefined;
      if (!p) throw new Error(`workspace without a ${probe}`);
      const kept = original[probe] === undefined || JSON.stringify(p) === JSON.stringify(original[probe]);
      if (!kept || (original[probe] === undefined && p.initialDelaySeconds !== undefined)) throw new Error(`${probe} is neither the creator's nor the webhook's`);
    }
  }), { numRuns: RUNS, ...(seed === undefined ? {} : { seed }) });
  t.pass(`ran ${RUNS} Pods: ${JSON.stringify(counts)}`);
  // The generator must reach every branch, or the properties above prove little.
  t.ok(counts.injected > RUNS * 0.15, `enough injected (${counts.injected})`);
  t.ok(counts.denied > RUNS * 0.15, `enough denied (${counts.denied})`);
  t.ok(counts.skipped > 0, `some skipped (${counts.skipped})`);
});

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as J)[k])]));
  return v;
}

t.test('arbitrary JSON never throws and is answered with a reason', async (t) => {
  let denied = 0;
  fc.assert(fc.property(fc.oneof(fc.anything(), fc.record({ spec: fc.anything(), metadata: fc.anything() }), fc.record({ spec: fc.record({ containers: fc.array(fc.anything(), { maxLength: 3 }) }) })), (value) => {
    const r = inject(value, config);
    if (r.denied) {
      denied++;
      if (!r.message) throw new Error('no message');
    }
    const review = reviewRequest({ uid: 'u', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', object: value } as AdmissionRequest, config);
    if (review.response.uid !== 'u') throw new Error('uid not echoed');
  }), { numRuns: 2000, ...(seed === undefined ? {} : { seed }) });
  t.ok(denied > 1000, `malformed objects are denied (${denied})`);
});

t.test('a sample of AdmissionReviews over real HTTPS: never 500, uid echoed, patch applies', async (t) => {
  const webhook = await startWebhook(t, { injection: config });
  const pods = fc.sample(podArb, { numRuns: 150, ...(seed === undefined ? {} : { seed }) });
  let statuses = new Map<number, number>();
  for (let i = 0; i < pods.length; i += 10) {
    const batch = pods.slice(i, i + 10);
    const results = await Promise.all(batch.map(async (pod) => {
      const review = podReview(pod, { dryRun: i % 20 === 0 });
      const res = await webhook.post(review);
      return { pod, review, res };
    }));
    for (const { pod, review, res } of results) {
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const body = res.json();
      t.equal(body.response?.uid, review.request.uid);
      const expected = inject(pod, config, { namespace: review.request.namespace as string });
      if (expected.denied) {
        t.equal(body.response?.allowed, false);
        t.equal(body.response?.status?.code, expected.code);
      } else {
        const patched = jsonpatch.applyPatch(structuredClone(pod), patchOf(body) as jsonpatch.Operation[], true, false).newDocument;
        t.same(patched, expected.pod);
      }
    }
  }
  statuses = new Map([...statuses].sort());
  t.same([...statuses.keys()], [200], `only HTTP 200 (${JSON.stringify([...statuses])})`);
});
