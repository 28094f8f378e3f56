// EKS 1.32: private control plane by default, secrets encrypted with a key of our own, audit logs
// with bounded retention, API-only access entries, every add-on managed and configured here, and
// a small on-demand node group for Karpenter and the system pods.
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { KUBERNETES_VERSION, type StackConfig } from './config.ts';
import { NODE_POLICIES, ec2Trust, managedPolicy, policy } from './iam.ts';
import type { Network } from './network.ts';
import { DISCOVERY_TAG, type Tags } from './tags.ts';

/**
 * The VPC CNI enforces NetworkPolicies (the workspace fence), and in strict mode a new pod starts
 * with deny-all until its policies are programmed: no allow-all window at pod start.
 */
export const VPC_CNI_CONFIGURATION = {
  enableNetworkPolicy: 'true',
  env: { NETWORK_POLICY_ENFORCING_MODE: 'strict' },
} as const;

export interface Cluster {
  cluster: aws.eks.Cluster;
  /** The add-ons nodes need before they turn Ready (CNI, kube-proxy, Pod Identity agent). */
  nodeAddons: aws.eks.Addon[];
}

export function createCluster(config: StackConfig, clusterName: string, network: Network, tags: Tags): Cluster {
  const secretsKey = new aws.kms.Key(`${clusterName}-secrets`, {
    description: `Envelope encryption of Kubernetes Secrets in ${clusterName}`,
    enableKeyRotation: true,
    deletionWindowInDays: 30,
    tags,
  });
  new aws.kms.Alias(`${clusterName}-secrets`, { name: `alias/${clusterName}-secrets`, targetKeyId: secretsKey.keyId });

  // Created before the cluster so EKS writes into a group with bounded retention.
  const logGroup = new aws.cloudwatch.LogGroup(`${clusterName}-control-plane`, {
    name: `/aws/eks/${clusterName}/cluster`,
    retentionInDays: config.logRetentionDays,
    tags,
  });

  const clusterRole = new aws.iam.Role(`${clusterName}-cluster`, {
    name: `${clusterName}-cluster`,
    assumeRolePolicy: policy([{ Effect: 'Allow', Principal: { Service: 'eks.amazonaws.com' }, Action: ['sts:AssumeRole', 'sts:TagSession'] }]),
    tags,
  });
  const clusterPolicy = new aws.iam.RolePolicyAttachment(`${clusterName}-cluster`, { role: clusterRole.name, policyArn: managedPolicy('AmazonEKSClusterPolicy') });

  const publicCidrs = config.endpointPublicAccessCidrs;
  const cluster = new aws.eks.Cluster(clusterName, {
    name: clusterName,
    version: KUBERNETES_VERSION,
    roleArn: clusterRole.arn,
    vpcConfig: {
      subnetIds: network.privateSubnetIds,
      endpointPrivateAccess: true,
      endpointPublicAccess: publicCidrs.length > 0,
      ...(publicCidrs.length > 0 ? { publicAccessCidrs: publicCidrs } : {}),
    },
    accessConfig: { authenticationMode: 'API', bootstrapClusterCreatorAdminPermissions: false },
    // Every add-on is an EKS add-on below, configured here, not a default left to drift.
    bootstrapSelfManagedAddons: false,
    encryptionConfig: { provider: { keyArn: secretsKey.arn }, resources: ['secrets'] },
    enabledClusterLogTypes: ['api', 'audit', 'authenticator'],
    // Chosen per stack: extended support costs six times as much per cluster-hour (config.ts).
    upgradePolicy: { supportType: config.supportType },
    kubernetesNetworkConfig: { ipFamily: 'ipv4' },
    deletionProtection: config.deletionProtection,
    tags,
  }, { dependsOn: [logGroup, clusterPolicy] });

  for (const [i, principalArn] of config.clusterAdminRoleArns.entries()) {
    const entry = new aws.eks.AccessEntry(`${clusterName}-admin-${i}`, { clusterName: cluster.name, principalArn, type: 'STANDARD', tags });
    new aws.eks.AccessPolicyAssociation(`${clusterName}-admin-${i}`, {
      clusterName: cluster.name,
      principalArn,
      policyArn: pulumi.interpolate`arn:${aws.getPartitionOutput().partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy`,
      accessScope: { type: 'cluster' },
    }, { dependsOn: [entry] });
  }

  // Karpenter's nodes join the cluster security group, found by the discovery tag.
  new aws.ec2.Tag(`${clusterName}-cluster-sg-discovery`, {
    resourceId: cluster.vpcConfig.clusterSecurityGroupId,
    key: DISCOVERY_TAG,
    value: clusterName,
  });

  const addon = (name: string, extra: Partial<aws.eks.AddonArgs> = {}, opts: pulumi.CustomResourceOptions = {}) =>
    new aws.eks.Addon(`${clusterName}-${name}`, {
      clusterName: cluster.name,
      addonName: name,
      // This program owns the add-ons' configuration: a hand edit is overwritten on the next `up`.
      resolveConflictsOnCreate: 'OVERWRITE',
      resolveConflictsOnUpdate: 'OVERWRITE',
      tags,
      ...extra,
    }, opts);
  const nodeAddons = [
    addon('vpc-cni', { configurationValues: JSON.stringify(VPC_CNI_CONFIGURATION) }),
    addon('kube-proxy'),
    addon('eks-pod-identity-agent'),
  ];

  const systemNodes = createSystemNodeGroup(config, clusterName, cluster, network, tags, nodeAddons);
  // CoreDNS needs nodes to become healthy.
  addon('coredns', {}, { dependsOn: [systemNodes] });

  return { cluster, nodeAddons };
}

function createSystemNodeGroup(config: StackConfig, clusterName: string, cluster: aws.eks.Cluster, network: Network, tags: Tags,
  addons: aws.eks.Addon[]): aws.eks.NodeGroup {
  const role = new aws.iam.Role(`${clusterName}-system-node`, { name: `${clusterName}-system-node`, assumeRolePolicy: ec2Trust(), tags });
  const attachments = NODE_POLICIES.map((name) =>
    new aws.iam.RolePolicyAttachment(`${clusterName}-system-node-${name}`, { role: role.name, policyArn: managedPolicy(name) }));

  const launchTemplate = new aws.ec2.LaunchTemplate(`${clusterName}-system`, {
    name: `${clusterName}-system`,
    // IMDSv2 only; hop limit 2 for the host-network add-ons that read the instance's region.
    metadataOptions: { httpEndpoint: 'enabled', httpTokens: 'required', httpPutResponseHopLimit: 2 },
    blockDeviceMappings: [{ deviceName: '/dev/xvda', ebs: { volumeSize: 30, volumeType: 'gp3', encrypted: 'true', deleteOnTermination: 'true' } }],
    // Instances and volumes carry the tags too (a node group's own tags stop at the group).
    tagSpecifications: ['instance', 'volume', 'network-interface'].map((resourceType) => ({ resourceType, tags: { ...tags, Name: `${clusterName}-system` } })),
    tags,
  });

  return new aws.eks.NodeGroup(`${clusterName}-system`, {
    clusterName: cluster.name,
    nodeGroupName: `${clusterName}-system`,
    nodeRoleArn: role.arn,
    subnetIds: network.privateSubnetIds,
    capacityType: 'ON_DEMAND',
    amiType: 'AL2023_x86_64_STANDARD',
    instanceTypes: config.systemNodes.instanceTypes,
    scalingConfig: { minSize: config.systemNodes.minSize, desiredSize: config.systemNodes.desiredSize, maxSize: config.systemNodes.maxSize },
    updateConfig: { maxUnavailable: 1 },
    launchTemplate: { id: launchTemplate.id, version: pulumi.interpolate`${launchTemplate.latestVersion}` },
    // No taint: Argo CD and the webhook must be able to start here before Karpenter's NodePools exist.
    labels: { 'workspace-sandbox.io/pool': 'system' },
    tags,
  }, { dependsOn: [...attachments, ...addons] });
}
