// Every overlay renders offline with `kubectl kustomize`, with the objects its environment needs.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { MANIFESTS, OVERLAYS, REPO_ROOT, idOf, kubectlSkipReason, renderDir, renderOverlay } from './render.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED: ${skip}`);

const EKS_ONLY = [
  'NodePool backend-ondemand', 'NodePool workspace-spot', 'NodePool workspace-ondemand', 'EC2NodeClass al2023-gvisor', 'RuntimeClass gvisor',
  'Deployment sandbox-capacity/overprovisioning', 'DaemonSet sandbox-capacity/image-prepull',
  'NetworkPolicy sandboxes/allow-pod-identity-agent',
];
/** components/monitoring: not in the base; the staging and prod overlays include it. */
const MONITORING = [
  'ServiceMonitor workspace-sandbox-system/workspace-sandbox-webhook', 'ServiceMonitor workspace-sandbox-egress/workspace-sandbox-gateway',
  'PodMonitor sandboxes/workspace-sandbox-credential-proxy', 'PrometheusRule workspace-sandbox-system/workspace-sandbox',
  'NetworkPolicy workspace-sandbox-egress/allow-prometheus-scrape',
];
const EVERYWHERE = [
  'Namespace workspace-sandbox-system', 'Namespace backend', 'Namespace sandboxes', 'Namespace sandbox-capacity',
  'Issuer workspace-sandbox-system/workspace-sandbox-selfsigned', 'Certificate workspace-sandbox-system/workspace-sandbox-ca',
  'Issuer workspace-sandbox-system/workspace-sandbox-ca', 'Certificate workspace-sandbox-system/workspace-sandbox-webhook-serving',
  'MutatingWebhookConfiguration workspace-sandbox',
  'ValidatingAdmissionPolicy workspace-sandbox-guard', 'ValidatingAdmissionPolicyBinding workspace-sandbox-guard',
  'Deployment workspace-sandbox-system/workspace-sandbox-webhook', 'Service workspace-sandbox-system/workspace-sandbox-webhook',
  'Service workspace-sandbox-system/workspace-sandbox-webhook-metrics', 'PodDisruptionBudget workspace-sandbox-system/workspace-sandbox-webhook', 'NetworkPolicy workspace-sandbox-system/workspace-sandbox-webhook',
  'ServiceAccount workspace-sandbox-system/workspace-sandbox-webhook', 'ConfigMap workspace-sandbox-system/workspace-sandbox-injection',
  'ServiceAccount backend/workspace-sandbox-backend', 'Role sandboxes/workspace-sandbox-backend', 'RoleBinding sandboxes/workspace-sandbox-backend',
  'PriorityClass workspace', 'PriorityClass overprovisioning',
  'NetworkPolicy sandboxes/default-deny', 'NetworkPolicy sandboxes/allow-egress-gateway',
  'Namespace workspace-sandbox-egress', 'ServiceAccount workspace-sandbox-egress/workspace-sandbox-gateway',
  'ClusterRole workspace-sandbox-gateway', 'ClusterRoleBinding workspace-sandbox-gateway',
  'Role sandboxes/workspace-sandbox-gateway', 'RoleBinding sandboxes/workspace-sandbox-gateway',
  'Deployment workspace-sandbox-egress/workspace-sandbox-gateway', 'Service workspace-sandbox-egress/workspace-sandbox-gateway',
  'Service workspace-sandbox-egress/workspace-sandbox-gateway-metrics', 'PodDisruptionBudget workspace-sandbox-egress/workspace-sandbox-gateway',
  'HorizontalPodAutoscaler workspace-sandbox-egress/workspace-sandbox-gateway',
  'NetworkPolicy workspace-sandbox-egress/default-deny', 'NetworkPolicy workspace-sandbox-egress/allow-workspace-ingress',
  'NetworkPolicy workspace-sandbox-egress/allow-dns', 'NetworkPolicy workspace-sandbox-egress/allow-kube-apiserver',
  'NetworkPolicy workspace-sandbox-egress/allow-public-egress',
  'NetworkPolicy sandboxes/allow-backend-ingress', 'ServiceAccount sandboxes/workspace-sandbox-workspace', 'ResourceQuota sandboxes/workspaces', 'LimitRange sandboxes/workspaces',
];

/** Production is gVisor only: the runc fallback exists where an overlay says so. */
const NOT_PROD = ['RuntimeClass runc'];

t.test('the base renders on its own', { skip }, async (t) => {
  const ids = renderDir(join(MANIFESTS, 'base')).map(idOf);
  for (const id of [...EVERYWHERE, ...EKS_ONLY, ...NOT_PROD]) t.ok(ids.includes(id), id);
});

for (const overlay of OVERLAYS) {
  t.test(`overlay ${overlay} renders the objects of its environment, each once`, { skip }, async (t) => {
    const ids = renderOverlay(overlay).map(idOf);
    t.same(ids.filter((id, i) => ids.indexOf(id) !== i), [], 'no object twice');
    for (const id of EVERYWHERE) t.ok(ids.includes(id), id);
    for (const id of NOT_PROD) t.equal(ids.includes(id), overlay !== 'prod', `${id} ${overlay === 'prod' ? 'absent' : 'present'}`);
    for (const id of [...EKS_ONLY, ...MONITORING]) {
      if (overlay === 'local') t.notOk(ids.includes(id), `kind has no ${id}`);
      else t.ok(ids.includes(id), id);
    }
    t.equal(ids.length, EVERYWHERE.length + (overlay === 'local' ? 0 : EKS_ONLY.length + MONITORING.length) + (overlay === 'prod' ? 0 : NOT_PROD.length), 'nothing unexpected');
  });
}

t.test('a broken kustomization fails to render (the render check can fail)', { skip }, async (t) => {
  t.throws(() => renderDir(join(REPO_ROOT, 'test', 'manifests', 'no-such-overlay')));
});

const yamllint = spawnSync('yamllint', ['--version'], { encoding: 'utf8' });
t.test('yamllint -s manifests/ passes with the repository config', { skip: yamllint.status === 0 ? false : 'yamllint not installed (CI runs it)' }, async (t) => {
  const r = spawnSync('yamllint', ['-s', 'manifests/'], { cwd: REPO_ROOT, encoding: 'utf8' });
  t.equal(r.status, 0, r.stdout + r.stderr);
});
