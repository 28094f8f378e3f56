// The whole AWS side of one environment, and the values the manifests need from it.
import * as pulumi from '@pulumi/pulumi';
import { createBedrock } from './bedrock.ts';
import { clusterNameOf, type StackConfig } from './config.ts';
import { createCluster } from './cluster.ts';
import type { ClusterYamlValues } from './cluster-yaml.ts';
import { KARPENTER_SERVICE_ACCOUNT, createKarpenter } from './karpenter.ts';
import { createNetwork } from './network.ts';
import { baseTags } from './tags.ts';

export interface StackOutputs {
  clusterName: pulumi.Output<string>;
  clusterEndpoint: pulumi.Output<string>;
  clusterArn: pulumi.Output<string>;
  vpcId: pulumi.Output<string>;
  privateSubnetIds: pulumi.Output<string[]>;
  bedrockRoleArn: pulumi.Output<string>;
  /** What `infra/write-cluster-yaml.ts` turns into manifests/overlays/<env>/cluster.yaml. */
  clusterYaml: pulumi.Output<ClusterYamlValues>;
  /** Values for the Karpenter Helm chart (docs/install-eks.md installs it). */
  karpenterHelmValues: pulumi.Output<{ settings: { clusterName: string; interruptionQueue: string }; serviceAccount: { name: string }; namespace: string }>;
}

export function createStack(config: StackConfig): StackOutputs {
  const clusterName = clusterNameOf(config.environment);
  const tags = baseTags(config);
  const network = createNetwork(config, clusterName, tags);
  const { cluster } = createCluster(config, clusterName, network, tags);
  const karpenter = createKarpenter(config, clusterName, cluster, tags);
  const bedrock = createBedrock(config, clusterName, cluster, tags);

  return {
    clusterName: cluster.name,
    clusterEndpoint: cluster.endpoint,
    clusterArn: cluster.arn,
    vpcId: network.vpcId,
    privateSubnetIds: pulumi.all(network.privateSubnetIds),
    bedrockRoleArn: bedrock.role.arn,
    clusterYaml: pulumi.all([cluster.name, karpenter.instanceProfile.name]).apply(([name, instanceProfile]) => ({
      environment: config.environment,
      instanceProfile,
      discoveryTag: name,
      amiId: config.amiId,
    })),
    karpenterHelmValues: pulumi.all([cluster.name, karpenter.queue.name]).apply(([name, queue]) => ({
      settings: { clusterName: name, interruptionQueue: queue },
      serviceAccount: { name: KARPENTER_SERVICE_ACCOUNT },
      namespace: config.karpenterNamespace,
    })),
  };
}
