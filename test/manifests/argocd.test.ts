// GitOps: the Argo CD AppProject and an Application per environment (manifests/argocd/), and the
// sync waves the staging and prod overlays carry (manifests/components/argocd-sync-waves/).
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { LABEL_INJECTION, NAMESPACES, WEBHOOK_SERVICE } from '../../lib/constants.ts';
import { VERSION } from '../../lib/version.ts';
import { MANIFESTS, REPO_ROOT, find, findAll, idOf, kubectlSkipReason, renderOverlay, type K8sObject } from './render.ts';
import { objectProblems } from './validate.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED (rendered-overlay checks): ${skip}`);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const GITOPS = ['staging', 'prod'] as const;
const WAVE = 'argocd.argoproj.io/sync-wave';
const load = (file: string) => parseYaml(readFileSync(join(MANIFESTS, 'argocd', file), 'utf8')) as K8sObject & Json;
const project = load('project.yaml');
const apps = Object.fromEntries(GITOPS.map((env) => [env, load(`${env}.yaml`)]));
const groupOf = (o: K8sObject) => (o.apiVersion.includes('/') ? o.apiVersion.split('/')[0]! : '');
const WORKLOADS = ['Deployment', 'DaemonSet', 'StatefulSet', 'Job', 'CronJob', 'Pod', 'ReplicaSet'];

/** The webhook's namespace selector against a namespace's labels (matchExpressions In/NotIn/Exists). */
function selected(selector: Json, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  return (selector.matchExpressions ?? []).every((e: Json) => (e.operator === 'In' ? e.values.includes(labels[e.key])
    : e.operator === 'NotIn' ? !e.values.includes(labels[e.key]) : e.operator === 'Exists' ? e.key in labels : !(e.key in labels)));
}

/** Every way the overlay's sync order could block or misorder a sync; empty when sound. */
export function waveProblems(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  const wave = new Map<K8sObject, number>();
  for (const o of objects) {
    const w = o.metadata.annotations?.[WAVE];
    if (w === undefined || !/^-?\d+$/.test(w)) problems.push(`${idOf(o)}: no sync wave`);
    else wave.set(o, Number(w));
  }
  const w = (o: K8sObject) => wave.get(o) ?? 0;
  const max = (os: K8sObject[]) => Math.max(...os.map(w));
  const before = (a: K8sObject[], b: K8sObject, why: string) => {
    for (const x of a) if (w(x) >= w(b)) problems.push(`${idOf(x)} (wave ${w(x)}) must sync before ${idOf(b)} (wave ${w(b)}): ${why}`);
  };
  const webhook = find(objects, 'Deployment', WEBHOOK_SERVICE, NAMESPACES.system);
  const mwc = findAll(objects, 'MutatingWebhookConfiguration');
  const namespaces = findAll(objects, 'Namespace');
  for (const o of objects) {
    const ns = namespaces.find((n) => n.metadata.name === o.metadata.namespace);
    if (ns !== undefined) before([ns], o, 'its namespace');
  }
  for (const m of mwc) {
    before([webhook], m, 'the webhook serves before admission points at it');
    before(objects.filter((o) => groupOf(o) === 'cert-manager.io'), webhook, 'the serving certificate exists before the webhook mounts it');
    before(objects.filter((o) => o.kind === 'ValidatingAdmissionPolicy' || o.kind === 'ValidatingAdmissionPolicyBinding'), m, 'the guard is on before any workload');
    for (const o of objects.filter((x) => WORKLOADS.includes(x.kind) && x !== webhook)) before([m], o, 'workloads are admitted by the webhook');
    // failurePolicy: Fail never blocks the webhook's own rollout, nor any object Argo CD syncs.
    const ns = namespaces.find((n) => n.metadata.name === webhook.metadata.namespace)!;
    for (const hook of (m as Json).webhooks as Json[]) {
      if (selected(hook.namespaceSelector ?? {}, { ...ns.metadata.labels, 'kubernetes.io/metadata.name': ns.metadata.name })) {
        problems.push(`${idOf(m)} selects the webhook's own namespace: a webhook outage would block its own rollout`);
      }
      for (const o of objects.filter((x) => WORKLOADS.includes(x.kind))) {
        const ons = namespaces.find((n) => n.metadata.name === o.metadata.namespace)!;
        if (selected(hook.namespaceSelector ?? {}, { ...ons.metadata.labels, 'kubernetes.io/metadata.name': ons.metadata.name })) {
          problems.push(`${idOf(o)} is in a namespace ${idOf(m)} intercepts: a webhook outage would block the sync`);
        }
      }
    }
  }
  // Nodes first: the webhook and the capacity pods wait for Karpenter's pools.
  const pools = objects.filter((o) => groupOf(o).startsWith('karpenter.'));
  for (const o of objects.filter((x) => WORKLOADS.includes(x.kind))) before(pools, o, 'pods need nodes from the NodePools');
  if (objects.some((o) => o.kind === 'Namespace') && max(namespaces) !== Math.min(...objects.map(w))) problems.push('namespaces are not in the first wave');
  return problems;
}

t.test('the AppProject and Applications validate against the Argo CD schema', async (t) => {
  for (const o of [project, ...Object.values(apps)]) t.same(objectProblems(o), [], idOf(o));
  // The check can fail: a misspelt field is caught.
  const bad = structuredClone(apps.prod!);
  bad.spec.syncPolicy.automated.selfHeel = true;
  t.match(objectProblems(bad), [/selfHeel: unknown field/]);
});

for (const env of GITOPS) {
  t.test(`${env}: the Application syncs manifests/overlays/${env} safely`, async (t) => {
    const app = apps[env]!;
    t.equal(app.metadata.name, `workspace-sandbox-${env}`);
    t.equal(app.metadata.namespace, 'argocd');
    t.equal(app.spec.project, project.metadata.name);
    t.equal(app.spec.source.path, `manifests/overlays/${env}`);
    t.ok(existsSync(join(REPO_ROOT, app.spec.source.path, 'kustomization.yaml')));
    t.ok(project.spec.sourceRepos.includes(app.spec.source.repoURL), 'the project allows the source');
    t.equal(app.spec.targetRevision ?? app.spec.source.targetRevision, env === 'prod' ? `v${VERSION}` : 'main', 'prod follows the release tag');
    t.same(app.spec.destination, { server: 'https://kubernetes.default.svc' });
    t.same(app.spec.syncPolicy.automated, { prune: true, selfHeal: true });
    t.ok(app.spec.syncPolicy.syncOptions.includes('ServerSideApply=true'));
    t.ok(app.spec.syncPolicy.syncOptions.includes('RespectIgnoreDifferences=true'));
    t.equal((app.metadata as Json).finalizers, undefined, 'deleting the Application never cascades to live workspaces');
    t.same(app.spec.ignoreDifferences, [{ group: 'admissionregistration.k8s.io', kind: 'MutatingWebhookConfiguration', jqPathExpressions: ['.webhooks[]?.clientConfig.caBundle'] }],
      'cert-manager\'s injected caBundle is not drift');
  });

  t.test(`${env}: the project allows exactly what the overlay holds`, { skip }, async (t) => {
    const objects = renderOverlay(env);
    const clusterScoped = [...new Set(objects.filter((o) => o.metadata.namespace === undefined).map((o) => `${groupOf(o)}/${o.kind}`))].sort();
    const whitelist = (project.spec.clusterResourceWhitelist as Json[]).map((r) => `${r.group}/${r.kind}`).sort();
    t.same(clusterScoped.filter((k) => !whitelist.includes(k)), [], 'every cluster-scoped kind is allowed (Argo CD refuses the sync otherwise)');
    const namespaces = [...new Set(objects.map((o) => o.metadata.namespace).filter((n): n is string => n !== undefined))].sort();
    // Argo CD destination namespaces are globs.
    const allowed = (project.spec.destinations as Json[]).map((d) => new RegExp(`^${String(d.namespace).split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`));
    t.same(namespaces.filter((n) => !allowed.some((re) => re.test(n))), [], 'every namespace is a destination');
    t.ok(allowed.every((re) => Object.values(NAMESPACES).some((n) => re.test(n))), 'and each destination is one of the product\'s namespaces');
    t.notOk(allowed.some((re) => re.test('kube-system') || re.test('argocd') || re.test('default')), 'never kube-system, argocd or default');
  });

  t.test(`${env}: sync waves: CRDs and namespaces, fences, issuers, the webhook, admission, then workloads`, { skip }, async (t) => {
    const objects = renderOverlay(env);
    t.same(waveProblems(objects), []);
    const waveOf = (kind: string, name: string, ns?: string) => Number(find(objects, kind, name, ns).metadata.annotations![WAVE]);
    t.ok(waveOf('Namespace', NAMESPACES.sandboxes) < waveOf('NetworkPolicy', 'default-deny', NAMESPACES.sandboxes));
    t.ok(waveOf('Certificate', 'workspace-sandbox-webhook-serving', NAMESPACES.system) < waveOf('Deployment', WEBHOOK_SERVICE, NAMESPACES.system));
    t.ok(waveOf('Deployment', WEBHOOK_SERVICE, NAMESPACES.system) < waveOf('MutatingWebhookConfiguration', 'workspace-sandbox'));
    t.ok(waveOf('MutatingWebhookConfiguration', 'workspace-sandbox') < waveOf('Deployment', 'overprovisioning', NAMESPACES.capacity));
    t.equal(find(objects, 'Namespace', NAMESPACES.sandboxes).metadata.annotations!['argocd.argoproj.io/sync-options'], 'Prune=false',
      'a namespace with live workspaces is never pruned');
    t.equal(find(objects, 'Namespace', NAMESPACES.sandboxes).metadata.labels![LABEL_INJECTION], 'enabled');
  });
}

t.test('the wave checks catch a broken order (they can fail)', { skip }, async (t) => {
  const objects = renderOverlay('prod');
  const set = (kind: string, name: string, wave: string) => { find(objects, kind, name).metadata.annotations![WAVE] = wave; };
  set('MutatingWebhookConfiguration', 'workspace-sandbox', '-3');
  set('Certificate', 'workspace-sandbox-webhook-serving', '-1');
  delete find(objects, 'NetworkPolicy', 'default-deny').metadata.annotations![WAVE];
  const problems = waveProblems(objects);
  t.match(problems, [/NetworkPolicy sandboxes\/default-deny: no sync wave/]);
  t.ok(problems.some((p) => /Deployment workspace-sandbox-system\/workspace-sandbox-webhook .* must sync before MutatingWebhookConfiguration/.test(p)));
  t.ok(problems.some((p) => /Certificate .*webhook-serving .* must sync before Deployment/.test(p)));
  const selfSelecting = renderOverlay('prod');
  ((find(selfSelecting, 'MutatingWebhookConfiguration', 'workspace-sandbox') as Json).webhooks[0]).namespaceSelector = {};
  t.match(waveProblems(selfSelecting), [/selects the webhook's own namespace/]);
});
