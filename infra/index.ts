// The Pulumi program (infra/Pulumi.yaml): one stack per environment, configured by
// Pulumi.<stack>.yaml and validated before any resource is planned.
import * as pulumi from '@pulumi/pulumi';
import { PROJECT, STRING_KEYS, StackConfigSchema, parseStackConfig } from './config.ts';
import { createStack } from './stack.ts';

const cfg = new pulumi.Config(PROJECT);
const raw: Record<string, unknown> = {};
for (const key of Object.keys(StackConfigSchema.shape)) {
  const value = STRING_KEYS.includes(key) ? cfg.get(key) : cfg.getObject<unknown>(key);
  if (value !== undefined) raw[key] = value;
}
const outputs = createStack(parseStackConfig(raw, pulumi.getStack()));

export const clusterName = outputs.clusterName;
export const clusterEndpoint = outputs.clusterEndpoint;
export const clusterArn = outputs.clusterArn;
export const vpcId = outputs.vpcId;
export const privateSubnetIds = outputs.privateSubnetIds;
export const bedrockRoleArn = outputs.bedrockRoleArn;
export const clusterYaml = outputs.clusterYaml;
export const karpenterHelmValues = outputs.karpenterHelmValues;
