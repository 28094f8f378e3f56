// Every rendered object validates: its kind's model, no unknown field at any depth, and the
// enum/format checks the models lack. Each layer is also shown to reject a planted error.
import t from 'tap';
import { join } from 'node:path';
import { MANIFESTS, OVERLAYS, idOf, kubectlSkipReason, renderDir, renderOverlay, type K8sObject } from './render.ts';
import { MODELS, modelProblems, objectProblems, unknownFields, valueProblems } from './validate.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED: ${skip}`);

for (const overlay of [...OVERLAYS, 'base'] as const) {
  t.test(`${overlay}: every object is valid`, { skip }, async (t) => {
    const objects = overlay === 'base' ? renderDir(join(MANIFESTS, 'base')) : renderOverlay(overlay);
    t.ok(objects.length > 20);
    for (const obj of objects) t.same(objectProblems(obj), [], idOf(obj));
  });
}

t.test('the cert-manager and Karpenter models are the versions the manifests use', async (t) => {
  t.ok(MODELS['cert-manager.io/v1/Certificate'] && MODELS['cert-manager.io/v1/Issuer']);
  t.ok(MODELS['karpenter.sh/v1/NodePool'] && MODELS['karpenter.k8s.aws/v1/EC2NodeClass']);
  const np = new (MODELS['karpenter.sh/v1/NodePool']!)({} as never);
  t.same((np as unknown as K8sObject).apiVersion, 'karpenter.sh/v1');
  // v1 moved expireAfter into the node template; the v1beta1 place is unknown to this schema.
  const v1beta1Shaped = { apiVersion: 'karpenter.sh/v1', kind: 'NodePool', metadata: { name: 'x' },
    spec: { disruption: { consolidateAfter: '1m', expireAfter: '720h' }, template: { spec: { nodeClassRef: { group: 'karpenter.k8s.aws', kind: 'EC2NodeClass', name: 'x' }, requirements: [] } } } } as K8sObject;
  t.match(objectProblems(v1beta1Shaped), [/\/spec\/disruption\/expireAfter: unknown field/]);
});

t.test('each validation layer rejects a planted error', { skip }, async (t) => {
  const objects = renderOverlay('prod');
  const pick = (kind: string, name: string) => structuredClone(objects.find((o) => o.kind === kind && o.metadata.name === name)!);

  const deployment = pick('Deployment', 'workspace-sandbox-webhook') as K8sObject & { spec: { template: { spec: { containers: Record<string, unknown>[] } } } };
  const container = deployment.spec.template.spec.containers[0]!;
  (container.securityContext as Record<string, unknown>).readOnlyRootFileSystem = true; // typo of readOnlyRootFilesystem
  container.imagePullPolicy = 'Sometimes';
  t.match(modelProblems(deployment), [/imagePullPolicy must be equal to one of the allowed values/]);
  container.imagePullPolicy = 'IfNotPresent';
  t.same(unknownFields(deployment), ['/spec/template/spec/containers/0/securityContext/readOnlyRootFileSystem']);

  const webhook = pick('MutatingWebhookConfiguration', 'workspace-sandbox') as K8sObject & { webhooks: Record<string, unknown>[] };
  webhook.webhooks[0]!.sideEffects = 'Some';
  t.same(modelProblems(webhook), [], 'the model lets a v1-invalid sideEffects through');
  t.match(valueProblems(webhook), [/sideEffects/]);

  const pool = pick('NodePool', 'workspace-spot') as K8sObject & { spec: { template: { spec: { requirements: { key: string; values: string[] }[] } } } };
  pool.spec.template.spec.requirements.find((r) => r.key === 'karpenter.sh/capacity-type')!.values = ['spotty'];
  t.match(valueProblems(pool), [/"spotty" is not a value of karpenter.sh\/capacity-type/]);

  const cert = pick('Certificate', 'workspace-sandbox-webhook-serving') as K8sObject & { spec: Record<string, unknown> };
  cert.spec.duration = '90d';
  t.match(valueProblems(cert), [/"90d" is not a valid Go duration/]);
  cert.spec.duration = '2160h';
  cert.spec.dnsName = ['typo'];
  t.same(unknownFields(cert), ['/spec/dnsName']);

  const nodeClass = pick('EC2NodeClass', 'al2023-gvisor') as K8sObject & { spec: { metadataOptions: Record<string, unknown> } };
  nodeClass.spec.metadataOptions.httpTokens = 'sometimes';
  t.match(modelProblems(nodeClass), [/httpTokens must be equal to one of the allowed values/]);

  t.match(objectProblems({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' } }), [/no schema known/]);
});
