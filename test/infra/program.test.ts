// infra/index.ts, the entry point the Pulumi CLI runs: it reads the stack's configuration the way
// the CLI hands it over (every value a string; structured values as JSON text) and exports the
// outputs the write script and the install guide use. The engine is Pulumi's mock monitor.
import t from 'tap';
import * as pulumi from '@pulumi/pulumi';
import { PROJECT } from '../../infra/config.ts';
import { renderClusterYaml } from '../../infra/cluster-yaml.ts';
import { ACCOUNT, REGION, stackFileConfig } from './harness.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const STACK = 'prod';
const types: string[] = [];
await pulumi.runtime.setMocks({
  newResource(args) {
    types.push(args.type);
    const n = args.inputs.name ?? args.name;
    const extra: Record<string, unknown> = args.type === 'aws:eks/cluster:Cluster'
      ? { arn: `arn:aws:eks:${REGION}:${ACCOUNT}:cluster/${n}`, endpoint: 'https://example.eks', vpcConfig: { ...args.inputs.vpcConfig, clusterSecurityGroupId: 'sg-1' } }
      : { arn: `arn:aws:mock:${REGION}:${ACCOUNT}:${n}` };
    return { id: `${args.name}-id`, state: { ...args.inputs, ...extra, name: n } };
  },
  call(args) {
    return args.token === 'aws:index/getRegion:getRegion' ? { region: REGION } : args.token === 'aws:index/getPartition:getPartition' ? { partition: 'aws' } : { accountId: ACCOUNT };
  },
}, PROJECT, STACK, false);
// What `pulumi up -s prod` sets from Pulumi.prod.yaml.
pulumi.runtime.setAllConfig(Object.fromEntries(Object.entries(stackFileConfig(STACK))
  .map(([k, v]) => [`${PROJECT}:${k}`, typeof v === 'string' ? v : JSON.stringify(v)])));

const program = await import('../../infra/index.ts');
const resolve = <T>(o: pulumi.Output<T>) => new Promise<T>((r) => o.apply(r));

t.test('the entry point reads every key of the stack file and exports the outputs', async (t) => {
  t.equal(await resolve(program.clusterName), `${PROJECT}-${STACK}`);
  const values = await resolve(program.clusterYaml);
  t.equal(values.amiId, stackFileConfig(STACK).amiId);
  t.equal(renderClusterYaml(values), readFileSync(join(import.meta.dirname, '..', '..', 'manifests', 'overlays', STACK, 'cluster.yaml'), 'utf8'));
  const helm = await resolve(program.karpenterHelmValues);
  t.same(helm.serviceAccount, { name: 'karpenter' });
  t.equal(helm.settings.interruptionQueue, `${PROJECT}-${STACK}-karpenter-interruption`);
  t.equal((await resolve(program.privateSubnetIds)).length, 3);
  await pulumi.runtime.disconnect();
  t.equal(types.filter((x) => x === 'aws:ec2/natGateway:NatGateway').length, 3, 'structured config (natGateways: perZone) arrived intact');
  t.ok(types.includes('aws:eks/podIdentityAssociation:PodIdentityAssociation'));
});
