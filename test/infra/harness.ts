// Runs the infra/ program for a stack under pulumi.runtime.setMocks: no CLI, no engine, no AWS.
// The mocks stand in for the engine and the provider: every resource's inputs are recorded as the
// program sends them, and the provider's computed attributes (ARNs, ids, the cluster security
// group) come back as the AWS API would shape them, so outputs built from them resolve.
import * as pulumi from '@pulumi/pulumi';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { PROJECT, parseStackConfig, type StackConfig } from '../../infra/config.ts';
import { createStack, type StackOutputs } from '../../infra/stack.ts';

export const INFRA = join(import.meta.dirname, '..', '..', 'infra');
export const ACCOUNT = '111122223333';
export const REGION = 'us-east-1';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
export interface Recorded { type: string; name: string; inputs: Json; state: Json }

/** The `workspace-sandbox:` entries of infra/Pulumi.<stack>.yaml, as Pulumi hands them to the program. */
export function stackFileConfig(stack: string): Record<string, unknown> {
  const file = parseYaml(readFileSync(join(INFRA, `Pulumi.${stack}.yaml`), 'utf8')) as { config: Record<string, unknown> };
  const raw: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(file.config)) {
    if (key.startsWith(`${PROJECT}:`)) raw[key.slice(PROJECT.length + 1)] = value;
  }
  return raw;
}

/** What the AWS provider computes for a resource: the attributes the program reads back. */
function computed(type: string, name: string, inputs: Json): Json {
  const n = inputs.name ?? name;
  const arn = (service: string, resource: string, region = REGION) => `arn:aws:${service}:${region}:${ACCOUNT}:${resource}`;
  switch (type) {
    case 'aws:iam/role:Role': return { arn: arn('iam', `role/${n}`, ''), id: n, name: n };
    case 'aws:iam/instanceProfile:InstanceProfile': return { arn: arn('iam', `instance-profile/${n}`, ''), name: n };
    case 'aws:eks/cluster:Cluster': return {
      arn: arn('eks', `cluster/${n}`), name: n, endpoint: `https://${n}.gr7.${REGION}.eks.amazonaws.com`,
      vpcConfig: { ...inputs.vpcConfig, clusterSecurityGroupId: 'sg-0cluster0000000000', vpcId: 'vpc-0mock' },
    };
    case 'aws:sqs/queue:Queue': return { arn: arn('sqs', n), url: `https://sqs.${REGION}.amazonaws.com/${ACCOUNT}/${n}`, name: n };
    case 'aws:kms/key:Key': return { arn: arn('kms', `key/${name}`), keyId: `${name}-key-id` };
    case 'aws:ec2/launchTemplate:LaunchTemplate': return { latestVersion: 1 };
    case 'aws:cloudwatch/eventRule:EventRule': return { arn: arn('events', `rule/${n}`), name: n };
    default: return {};
  }
}

export interface StackRun {
  config: StackConfig;
  resources: Recorded[];
  outputs: { [K in keyof StackOutputs]: StackOutputs[K] extends pulumi.Output<infer T> ? T : never };
  ofType(type: string): Recorded[];
  one(type: string, name?: string): Recorded;
}

const resolve = <T>(o: pulumi.Output<T>) => new Promise<T>((r) => o.apply(r));

/** Runs the program for `stack` with its stack file's config (or `raw`), recording every resource. */
export async function runStack(stack: string, raw: Record<string, unknown> = stackFileConfig(stack)): Promise<StackRun> {
  const resources: Recorded[] = [];
  await pulumi.runtime.setMocks({
    newResource(args) {
      const state = { ...args.inputs, ...computed(args.type, args.name, args.inputs) };
      resources.push({ type: args.type, name: args.name, inputs: args.inputs, state });
      return { id: state.id ?? `${args.name}-id`, state };
    },
    call(args) {
      switch (args.token) {
        case 'aws:index/getCallerIdentity:getCallerIdentity': return { accountId: ACCOUNT, arn: `arn:aws:iam::${ACCOUNT}:user/ci`, userId: 'AIDA' };
        case 'aws:index/getPartition:getPartition': return { partition: 'aws', dnsSuffix: 'amazonaws.com' };
        case 'aws:index/getRegion:getRegion': return { region: REGION, name: REGION };
        default: throw new Error(`unexpected call ${args.token}`);
      }
    },
  }, PROJECT, stack, false);
  const config = parseStackConfig(raw, stack);
  const stackOutputs = createStack(config);
  const outputs = Object.fromEntries(await Promise.all(Object.entries(stackOutputs).map(async ([k, v]) => [k, await resolve(v as pulumi.Output<unknown>)])));
  // Resources whose outputs feed no stack output (attachments, targets, tags) may still be queued.
  await pulumi.runtime.disconnect();
  const custom = resources.filter((r) => !r.type.startsWith('pulumi:'));
  return {
    config, resources: custom, outputs: outputs as StackRun['outputs'],
    ofType: (type) => custom.filter((r) => r.type === type),
    one(type, name) {
      const found = custom.filter((r) => r.type === type && (name === undefined || r.name === name));
      if (found.length !== 1) throw new Error(`${found.length} resources of type ${type}${name ? ` named ${name}` : ''}`);
      return found[0]!;
    },
  };
}

export const json = (text: unknown): Json => JSON.parse(String(text)) as Json;
export const list = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
