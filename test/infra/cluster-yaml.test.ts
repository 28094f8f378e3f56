// manifests/overlays/<env>/cluster.yaml is what the environment's stack outputs, and the rendered
// overlay carries those values on every EC2NodeClass: the AWS side and the manifests agree.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ENVIRONMENTS } from '../../infra/config.ts';
import { EC2_NODE_CLASSES, clusterYamlPath, renderClusterYaml } from '../../infra/cluster-yaml.ts';
import { findAll, kubectlSkipReason, renderOverlay } from '../manifests/render.ts';
import { runStack } from './harness.ts';

const REPO = join(import.meta.dirname, '..', '..');
const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED (rendered-overlay checks): ${skip}`);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

for (const env of ENVIRONMENTS) {
  const run = await runStack(env);
  const values = run.outputs.clusterYaml;

  t.test(`${env}: the committed cluster.yaml is the stack's output, byte for byte`, async (t) => {
    const committed = readFileSync(join(REPO, clusterYamlPath(env)), 'utf8');
    t.equal(committed, renderClusterYaml(values), 'regenerate: pulumi stack output --json -s ' + env + ' | npx node infra/write-cluster-yaml.ts');
    t.same(parseAllDocuments(committed).map((d) => (d.toJS() as Json).metadata.name), [...EC2_NODE_CLASSES]);
    // The write script, fed what `pulumi stack output --json` prints, writes the same file.
    const dir = mkdtempSync(join(tmpdir(), 'ws-cluster-yaml-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const out = join(dir, 'cluster.yaml');
    const r = spawnSync(process.execPath, [join(REPO, 'infra', 'write-cluster-yaml.ts'), out], { input: JSON.stringify({ ...run.outputs, clusterYaml: values }), encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    t.equal(readFileSync(out, 'utf8'), committed);
    const bad = spawnSync(process.execPath, [join(REPO, 'infra', 'write-cluster-yaml.ts'), out], { input: JSON.stringify({ clusterYaml: { ...values, amiId: '' } }), encoding: 'utf8' });
    t.not(bad.status, 0, 'refuses outputs that are not a stack\'s');
  });

  t.test(`${env}: the outputs name what the stack creates`, async (t) => {
    t.equal(values.instanceProfile, run.one('aws:iam/instanceProfile:InstanceProfile').inputs.name);
    t.equal(values.amiId, run.config.amiId);
    const privateSubnets = run.ofType('aws:ec2/subnet:Subnet').filter((s) => s.name.includes('-private-'));
    t.ok(privateSubnets.length >= 2);
    for (const s of privateSubnets) t.equal(s.inputs.tags['karpenter.sh/discovery'], values.discoveryTag, s.name);
    const sgTag = run.ofType('aws:ec2/tag:Tag').find((x) => x.inputs.resourceId === run.one('aws:eks/cluster:Cluster').state.vpcConfig.clusterSecurityGroupId)!;
    t.equal(sgTag.inputs.value, values.discoveryTag, 'the security group Karpenter selects carries the same tag');
    t.same(run.outputs.karpenterHelmValues.settings, { clusterName: run.outputs.clusterName, interruptionQueue: run.one('aws:sqs/queue:Queue').inputs.name });
  });

  t.test(`${env}: every EC2NodeClass of the rendered overlay uses the stack's values`, { skip }, async (t) => {
    const nodeClasses = findAll<Json>(renderOverlay(env), 'EC2NodeClass');
    t.same(nodeClasses.map((n) => n.metadata.name).sort(), [...EC2_NODE_CLASSES].sort(), 'cluster.yaml patches every node class');
    for (const { metadata, spec } of nodeClasses) {
      t.equal(spec.instanceProfile, values.instanceProfile, metadata.name);
      t.equal(spec.role, undefined);
      t.same(spec.amiSelectorTerms, [{ id: values.amiId }]);
      t.same(spec.subnetSelectorTerms, [{ tags: { 'karpenter.sh/discovery': values.discoveryTag } }]);
      t.same(spec.securityGroupSelectorTerms, [{ tags: { 'karpenter.sh/discovery': values.discoveryTag } }]);
    }
  });
}

t.test('the renderer refuses values that are not what a stack outputs', async (t) => {
  const good = { environment: 'staging', instanceProfile: 'p', discoveryTag: 'd', amiId: 'ami-0123456789abcdef0' } as const;
  t.match(renderClusterYaml(good), /- id: ami-0123456789abcdef0\n/);
  t.throws(() => renderClusterYaml({ ...good, amiId: 'ami-latest' }));
  t.throws(() => renderClusterYaml({ ...good, discoveryTag: 'x\n  role: admin' }), 'no YAML injection through a value');
  t.throws(() => renderClusterYaml({ ...good, environment: 'dev' as never }));
});
