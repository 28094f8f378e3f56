// The infra/ program for each stack, run under Pulumi's mocks (test/infra/harness.ts): the
// security-relevant properties of what it would create, read from the inputs it sends.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { NAMESPACES, SERVICE_ACCOUNT_WORKSPACE } from '../../lib/constants.ts';
import { parseInjectionConfig } from '../../webhook/config.ts';
import { BEDROCK_ACTIONS } from '../../infra/bedrock.ts';
import { ENVIRONMENTS, KUBERNETES_VERSION, clusterNameOf, parseStackConfig } from '../../infra/config.ts';
import { NODE_POLICIES } from '../../infra/iam.ts';
import { INTERRUPTION_EVENTS, KARPENTER_SERVICE_ACCOUNT } from '../../infra/karpenter.ts';
import { baseTags } from '../../infra/tags.ts';
import { ACCOUNT, json, list, runStack, stackFileConfig, type Recorded, type StackRun } from './harness.ts';

const REPO = join(import.meta.dirname, '..', '..');
/** What a node needs, written out here so a change to the program's list cannot pass unnoticed. */
const NODE_POLICY_ARNS = ['AmazonEC2ContainerRegistryPullOnly', 'AmazonEKSWorkerNodePolicy', 'AmazonEKS_CNI_Policy'].map((p) => `arn:aws:iam::aws:policy/${p}`);
const require = createRequire(import.meta.url);
const statements = (policyText: unknown) => json(policyText).Statement as Record<string, any>[]; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Whether the AWS provider lets this resource type carry tags, read from the provider SDK itself:
 * a taggable resource's constructor forwards `tags` to the engine.
 */
function taggable(type: string): boolean {
  const m = /^aws:([a-zA-Z0-9]+)\/([a-zA-Z0-9]+):/.exec(type);
  if (m === null) throw new Error(`not an aws resource type: ${type}`);
  const source = readFileSync(require.resolve(`@pulumi/aws/${m[1]}/${m[2]}.js`), 'utf8');
  return source.includes('resourceInputs["tags"] = args?.tags');
}

const runs = new Map<string, StackRun>();
for (const env of ENVIRONMENTS) runs.set(env, await runStack(env));

for (const env of ENVIRONMENTS) {
  const run = runs.get(env)!;
  const clusterName = clusterNameOf(env);
  const cluster = run.one('aws:eks/cluster:Cluster');
  const roleNamed = (name: string) => run.ofType('aws:iam/role:Role').find((r) => r.inputs.name === name)!;
  const attachedTo = (role: Recorded) => run.ofType('aws:iam/rolePolicyAttachment:RolePolicyAttachment').filter((a) => a.inputs.role === role.inputs.name);
  const inlineOf = (role: Recorded) => run.ofType('aws:iam/rolePolicy:RolePolicy').filter((p) => p.inputs.role === role.state.id);

  t.test(`${env}: EKS ${KUBERNETES_VERSION}, private by default, encrypted, audited, API-only access`, async (t) => {
    const c = cluster.inputs;
    t.equal(c.version, '1.32');
    t.equal(c.name, clusterName);
    t.same(c.accessConfig, { authenticationMode: 'API', bootstrapClusterCreatorAdminPermissions: false });
    t.equal(c.vpcConfig.endpointPrivateAccess, true);
    t.equal(c.vpcConfig.endpointPublicAccess, false, 'no public API endpoint in the committed stacks');
    t.same(c.encryptionConfig.resources, ['secrets']);
    t.equal(c.encryptionConfig.provider.keyArn, run.one('aws:kms/key:Key').state.arn);
    t.equal(run.one('aws:kms/key:Key').inputs.enableKeyRotation, true);
    t.ok(c.enabledClusterLogTypes.includes('audit'));
    t.equal(c.upgradePolicy.supportType, run.config.supportType, 'the support tier is the stack\'s decision, never EKS\'s default');
    t.equal(c.deletionProtection, env === 'prod');
    t.same(c.vpcConfig.subnetIds, run.outputs.privateSubnetIds, 'the control plane ENIs sit in the private subnets');
    const admins = run.ofType('aws:eks/accessPolicyAssociation:AccessPolicyAssociation');
    t.same(admins.map((a) => a.inputs.principalArn), run.config.clusterAdminRoleArns);
    t.ok(admins.every((a) => a.inputs.accessScope.type === 'cluster' && a.inputs.policyArn.endsWith('/AmazonEKSClusterAdminPolicy')));
  });

  t.test(`${env}: add-ons: Pod Identity agent, VPC CNI enforcing NetworkPolicies in strict mode`, async (t) => {
    const addons = Object.fromEntries(run.ofType('aws:eks/addon:Addon').map((a) => [a.inputs.addonName, a.inputs]));
    t.same(Object.keys(addons).sort(), ['coredns', 'eks-pod-identity-agent', 'kube-proxy', 'vpc-cni']);
    const cni = json(addons['vpc-cni']!.configurationValues);
    t.equal(cni.enableNetworkPolicy, 'true');
    t.equal(cni.env.NETWORK_POLICY_ENFORCING_MODE, 'strict');
    t.equal(cluster.inputs.bootstrapSelfManagedAddons, false, 'no unmanaged default add-ons beside these');
  });

  t.test(`${env}: the Bedrock role allows only the two invoke actions on the configured models`, async (t) => {
    const role = roleNamed(`${clusterName}-workspace-bedrock`);
    const trust = statements(role.inputs.assumeRolePolicy);
    t.same(trust.map((s) => s.Principal), [{ Service: 'pods.eks.amazonaws.com' }], 'only EKS Pod Identity assumes it');
    t.same(trust[0]!.Condition, { StringEquals: { 'aws:SourceAccount': ACCOUNT }, ArnEquals: { 'aws:SourceArn': cluster.state.arn } });
    t.same(attachedTo(role), [], 'no managed policy');
    const inline = inlineOf(role);
    t.equal(inline.length, 1);
    const [statement, ...rest] = statements(inline[0]!.inputs.policy);
    t.same(rest, []);
    t.equal(statement!.Effect, 'Allow');
    t.same(list(statement!.Action).sort(), ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream']);
    t.same([...BEDROCK_ACTIONS].sort(), list(statement!.Action).sort());
    t.same(list(statement!.Resource), run.config.bedrockModelArns);
    t.notOk(JSON.stringify(statement).includes('*'), 'no wildcard anywhere in it');
    t.same(statement!.Condition.StringEquals, {
      'aws:PrincipalTag/eks-cluster-name': clusterName,
      'aws:PrincipalTag/kubernetes-namespace': NAMESPACES.sandboxes,
      'aws:PrincipalTag/kubernetes-service-account': SERVICE_ACCOUNT_WORKSPACE,
    });
  });

  t.test(`${env}: the Pod Identity association binds the workspace ServiceAccount the webhook serves`, async (t) => {
    const associations = run.ofType('aws:eks/podIdentityAssociation:PodIdentityAssociation');
    const workspace = associations.find((a) => a.inputs.namespace === NAMESPACES.sandboxes)!;
    t.same([workspace.inputs.serviceAccount, workspace.inputs.roleArn, workspace.inputs.clusterName],
      [SERVICE_ACCOUNT_WORKSPACE, roleNamed(`${clusterName}-workspace-bedrock`).state.arn, clusterName]);
    t.equal(SERVICE_ACCOUNT_WORKSPACE, 'workspace-sandbox-workspace');
    // The overlay's injection config serves the namespace the association names.
    const config = parseInjectionConfig(parseYaml(readFileSync(join(REPO, 'manifests', 'overlays', env, 'injection-config.yaml'), 'utf8')), env);
    t.same(config.namespaces, [NAMESPACES.sandboxes]);
    t.same(associations.map((a) => `${a.inputs.namespace}/${a.inputs.serviceAccount}`).sort(),
      [`${run.config.karpenterNamespace}/${KARPENTER_SERVICE_ACCOUNT}`, `${NAMESPACES.sandboxes}/${SERVICE_ACCOUNT_WORKSPACE}`].sort(), 'no other association');
  });

  t.test(`${env}: node roles carry only the node policies: no Bedrock, no wildcard, no inline policy`, async (t) => {
    const karpenterNode = roleNamed(`KarpenterNodeRole-${clusterName}`);
    const systemNode = roleNamed(`${clusterName}-system-node`);
    for (const role of [karpenterNode, systemNode]) {
      t.same(statements(role.inputs.assumeRolePolicy).map((s) => s.Principal), [{ Service: 'ec2.amazonaws.com' }]);
      t.same(attachedTo(role).map((a) => a.inputs.policyArn).sort(), NODE_POLICY_ARNS, role.inputs.name);
      t.same(inlineOf(role), [], `${role.inputs.name}: no inline policy`);
    }
    t.same([...NODE_POLICIES].sort(), NODE_POLICY_ARNS.map((a) => a.split('/').pop()), 'the program\'s list is this one');
    const profile = run.one('aws:iam/instanceProfile:InstanceProfile');
    t.same([profile.inputs.name, profile.inputs.role], [`KarpenterNodeInstanceProfile-${clusterName}`, karpenterNode.inputs.name]);
    const entry = run.ofType('aws:eks/accessEntry:AccessEntry').find((e) => e.inputs.principalArn === karpenterNode.state.arn)!;
    t.equal(entry.inputs.type, 'EC2_LINUX', 'Karpenter nodes join as nodes, nothing more');
  });

  t.test(`${env}: the Karpenter controller role: Pod Identity, scoped writes, reads only where AWS has no resource`, async (t) => {
    const role = roleNamed(`KarpenterControllerRole-${clusterName}`);
    t.same(statements(role.inputs.assumeRolePolicy).map((s) => s.Principal), [{ Service: 'pods.eks.amazonaws.com' }]);
    t.same(attachedTo(role), []);
    const policy = statements(inlineOf(role)[0]!.inputs.policy);
    for (const s of policy) {
      t.equal(s.Effect, 'Allow');
      for (const action of list<string>(s.Action)) t.notOk(action.includes('*'), `${s.Sid}: ${action} is one action`);
      if (list(s.Resource).includes('*')) {
        t.ok(list<string>(s.Action).every((a) => /^ec2:Describe|^pricing:GetProducts$/.test(a)), `${s.Sid}: a wildcard resource only for reads`);
      }
      const writes = list<string>(s.Action).filter((a) => /^ec2:(RunInstances|CreateFleet|CreateLaunchTemplate|CreateTags|TerminateInstances|DeleteLaunchTemplate)$/.test(a));
      if (writes.length > 0 && s.Sid !== 'AllowScopedEC2InstanceAccessActions') {
        t.match(JSON.stringify(s.Condition), `kubernetes.io/cluster/${clusterName}`, `${s.Sid}: only on what this cluster owns`);
      }
    }
    const passRole = policy.filter((s) => list(s.Action).includes('iam:PassRole'));
    t.same(passRole.map((s) => s.Resource), [roleNamed(`KarpenterNodeRole-${clusterName}`).state.arn], 'passes the node role only');
    t.notOk(policy.some((s) => list<string>(s.Action).some((a) => /^iam:(Create|Add|Remove|Delete|Tag)/.test(a))), 'no IAM writes');
    t.same(policy.find((s) => s.Sid === 'AllowInterruptionQueueActions')!.Resource, run.one('aws:sqs/queue:Queue').state.arn);
  });

  t.test(`${env}: the interruption queue receives all four event kinds`, async (t) => {
    const queue = run.one('aws:sqs/queue:Queue');
    t.equal(queue.inputs.sqsManagedSseEnabled, true);
    const rules = run.ofType('aws:cloudwatch/eventRule:EventRule');
    const targets = run.ofType('aws:cloudwatch/eventTarget:EventTarget');
    const detailTypes = rules.flatMap((r) => json(r.inputs.eventPattern)['detail-type'] as string[]).sort();
    t.same(detailTypes, ['AWS Health Event', 'EC2 Instance Rebalance Recommendation', 'EC2 Instance State-change Notification',
      'EC2 Spot Instance Interruption Warning'].sort());
    t.equal(rules.length, Object.keys(INTERRUPTION_EVENTS).length);
    for (const rule of rules) {
      t.same(targets.filter((x) => x.inputs.rule === rule.state.name).map((x) => x.inputs.arn), [queue.state.arn], `${rule.inputs.name} → the queue`);
    }
    const queuePolicy = statements(run.one('aws:sqs/queuePolicy:QueuePolicy').inputs.policy);
    const allow = queuePolicy.filter((s) => s.Effect === 'Allow');
    t.same(allow.map((s) => s.Principal), [{ Service: ['events.amazonaws.com', 'sqs.amazonaws.com'] }]);
    t.same(allow.map((s) => s.Action), ['sqs:SendMessage']);
    t.ok(queuePolicy.some((s) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'), 'TLS only');
  });

  t.test(`${env}: every resource that can carry tags carries the product's`, async (t) => {
    const expected = baseTags(run.config);
    let tagged = 0;
    for (const r of run.resources) {
      if (!taggable(r.type)) continue;
      tagged++;
      t.match(r.inputs.tags ?? {}, expected, `${r.type} ${r.name}`);
    }
    t.ok(tagged >= 40, `${tagged} taggable resources checked`);
    // The detector tells the two kinds apart (the check can fail).
    t.ok(taggable('aws:iam/role:Role') && taggable('aws:eks/podIdentityAssociation:PodIdentityAssociation'));
    t.notOk(taggable('aws:iam/rolePolicyAttachment:RolePolicyAttachment') || taggable('aws:ec2/tag:Tag'));
    const lt = run.one('aws:ec2/launchTemplate:LaunchTemplate').inputs;
    t.same(lt.tagSpecifications.map((s: { resourceType: string }) => s.resourceType), ['instance', 'volume', 'network-interface'], 'the instances themselves too');
    t.ok(lt.tagSpecifications.every((s: { tags: Record<string, string> }) => Object.entries(expected).every(([k, v]) => s.tags[k] === v)));
  });

  t.test(`${env}: nothing is public that should not be`, async (t) => {
    const subnets = run.ofType('aws:ec2/subnet:Subnet');
    t.equal(subnets.length, run.config.vpc.create!.availabilityZones.length * 2);
    t.ok(subnets.every((s) => s.inputs.mapPublicIpOnLaunch === false), 'no subnet hands out public addresses');
    const privateIds = new Set(run.outputs.privateSubnetIds);
    const priv = subnets.filter((s) => s.name.includes('-private-'));
    t.same(priv.map((s) => s.inputs.tags['karpenter.sh/discovery']), priv.map(() => clusterName), 'private subnets tagged for Karpenter discovery');
    t.ok(subnets.filter((s) => s.name.includes('-public-')).every((s) => s.inputs.tags['karpenter.sh/discovery'] === undefined), 'public subnets are not');
    t.same(run.one('aws:eks/nodeGroup:NodeGroup').inputs.subnetIds.filter((id: string) => !privateIds.has(id)), [], 'nodes in private subnets only');
    const sgDefault = run.one('aws:ec2/defaultSecurityGroup:DefaultSecurityGroup').inputs;
    t.same([sgDefault.ingress, sgDefault.egress], [[], []], 'the default security group allows nothing');
    t.same(run.ofType('aws:ec2/securityGroup:SecurityGroup'), [], 'no security group of our own opens anything');
    t.same(run.ofType('aws:ec2/instance:Instance'), []);
    const lt = run.one('aws:ec2/launchTemplate:LaunchTemplate').inputs;
    t.same([lt.metadataOptions.httpTokens, lt.metadataOptions.httpPutResponseHopLimit], ['required', 2], 'IMDSv2 only');
    t.ok(lt.blockDeviceMappings.every((b: { ebs: { encrypted: string } }) => b.ebs.encrypted === 'true'));
    const sg = run.ofType('aws:ec2/tag:Tag').find((x) => x.inputs.resourceId === 'sg-0cluster0000000000')!;
    t.same([sg.inputs.key, sg.inputs.value], ['karpenter.sh/discovery', clusterName], 'the cluster security group is discoverable');
    for (const p of [...run.ofType('aws:iam/rolePolicy:RolePolicy'), ...run.ofType('aws:sqs/queuePolicy:QueuePolicy')]) {
      for (const s of statements(p.inputs.policy)) t.not(s.Effect === 'Allow' && s.Principal === '*', true, `${p.name}: no Allow to everyone`);
    }
    for (const r of run.ofType('aws:iam/role:Role')) {
      for (const s of statements(r.inputs.assumeRolePolicy)) t.notOk(JSON.stringify(s.Principal).includes('AWS'), `${r.inputs.name}: only services assume it`);
    }
    const nats = run.ofType('aws:ec2/natGateway:NatGateway');
    t.equal(nats.length, env === 'prod' ? 3 : 1);
  });
}

t.test('npm run typecheck covers infra/: the provider schema is checked in CI', async (t) => {
  // A type-checking run inside tap costs about a minute under coverage; CI's `npm run typecheck` does it.
  const tsconfig = JSON.parse(readFileSync(join(REPO, 'tsconfig.json'), 'utf8')) as { include: string[] };
  t.ok(tsconfig.include.includes('infra'));
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  t.match(pkg.scripts.typecheck, /tsc -p tsconfig\.json --noEmit/);
});

t.test('a stack refuses unsafe or inconsistent configuration, listing every problem', async (t) => {
  const raw = stackFileConfig('staging');
  const bad = {
    ...raw,
    bedrockModelArns: ['arn:aws:bedrock:us-east-1::foundation-model/*'],
    endpointPublicAccessCidrs: ['0.0.0.0/0'],
    amiId: 'ami-latest',
  };
  const err = (() => { try { parseStackConfig(bad, 'staging'); return undefined; } catch (e) { return (e as Error).message; } })();
  t.match(err, /bedrockModelArns\.0: .*wildcard|bedrockModelArns\.0: a Bedrock model/);
  t.match(err, /endpointPublicAccessCidrs\.0: the API endpoint is never opened to the whole internet/);
  t.match(err, /amiId: an AMI id/);
  t.throws(() => parseStackConfig(raw, 'prod'), /environment is staging/);
  t.throws(() => parseStackConfig({ ...raw, vpc: {} }, 'staging'), /exactly one of vpc.create or vpc.existing/);
  t.throws(() => parseStackConfig({ ...raw, clusterAdminRoleArns: [] }, 'staging'), /clusterAdminRoleArns/);
  t.throws(() => parseStackConfig({ ...raw, unknownKey: 1 }, 'staging'), /unknownKey|Unrecognized/i);
});

t.test('an existing VPC: its private subnets get the discovery tag, nothing network-wide is created', async (t) => {
  const raw = { ...stackFileConfig('staging'), vpc: { existing: { id: 'vpc-0abc12345', privateSubnetIds: ['subnet-0aaa1111', 'subnet-0bbb2222', 'subnet-0ccc3333'] } } };
  const run = await runStack('staging', raw);
  for (const type of ['aws:ec2/vpc:Vpc', 'aws:ec2/subnet:Subnet', 'aws:ec2/natGateway:NatGateway', 'aws:ec2/internetGateway:InternetGateway']) t.same(run.ofType(type), [], type);
  const tags = run.ofType('aws:ec2/tag:Tag').filter((x) => x.inputs.resourceId.startsWith('subnet-'));
  t.same(tags.map((x) => [x.inputs.resourceId, x.inputs.key, x.inputs.value]),
    ['subnet-0aaa1111', 'subnet-0bbb2222', 'subnet-0ccc3333'].map((id) => [id, 'karpenter.sh/discovery', 'workspace-sandbox-staging']));
  t.same(run.one('aws:eks/cluster:Cluster').inputs.vpcConfig.subnetIds, ['subnet-0aaa1111', 'subnet-0bbb2222', 'subnet-0ccc3333']);
});
