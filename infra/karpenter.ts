// Karpenter's prerequisites: the node role and its instance profile (referenced by the
// EC2NodeClass), the controller's role through EKS Pod Identity, and the interruption queue fed
// by EventBridge so Karpenter drains a node before AWS takes it away.
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import type { StackConfig } from './config.ts';
import { NODE_POLICIES, ec2Trust, managedPolicy, partition, podIdentityTrust, policy, region } from './iam.ts';
import type { Tags } from './tags.ts';

export const KARPENTER_SERVICE_ACCOUNT = 'karpenter';

/** The EventBridge rules feeding the interruption queue: what Karpenter acts on ahead of time. */
export const INTERRUPTION_EVENTS = {
  'scheduled-change': { source: ['aws.health'], 'detail-type': ['AWS Health Event'] },
  'spot-interruption': { source: ['aws.ec2'], 'detail-type': ['EC2 Spot Instance Interruption Warning'] },
  rebalance: { source: ['aws.ec2'], 'detail-type': ['EC2 Instance Rebalance Recommendation'] },
  'state-change': { source: ['aws.ec2'], 'detail-type': ['EC2 Instance State-change Notification'] },
} as const;

export interface Karpenter {
  nodeRole: aws.iam.Role;
  instanceProfile: aws.iam.InstanceProfile;
  controllerRole: aws.iam.Role;
  queue: aws.sqs.Queue;
}

export function createKarpenter(config: StackConfig, clusterName: string, cluster: aws.eks.Cluster, tags: Tags): Karpenter {
  const nodeRole = new aws.iam.Role(`${clusterName}-karpenter-node`, {
    // The name the EC2NodeClass and docs refer to.
    name: `KarpenterNodeRole-${clusterName}`,
    assumeRolePolicy: ec2Trust(),
    tags,
  });
  for (const name of NODE_POLICIES) {
    new aws.iam.RolePolicyAttachment(`${clusterName}-karpenter-node-${name}`, { role: nodeRole.name, policyArn: managedPolicy(name) });
  }
  // Pre-created, so the controller needs no right to create or change instance profiles.
  const instanceProfile = new aws.iam.InstanceProfile(`${clusterName}-karpenter-node`, {
    name: `KarpenterNodeInstanceProfile-${clusterName}`,
    role: nodeRole.name,
    tags,
  });
  // Nodes launched with the role may join the cluster.
  new aws.eks.AccessEntry(`${clusterName}-karpenter-node`, { clusterName: cluster.name, principalArn: nodeRole.arn, type: 'EC2_LINUX', tags });

  const queue = new aws.sqs.Queue(`${clusterName}-karpenter-interruption`, {
    name: `${clusterName}-karpenter-interruption`,
    // An interruption notice older than five minutes is about a node that is already gone.
    messageRetentionSeconds: 300,
    sqsManagedSseEnabled: true,
    tags,
  });
  new aws.sqs.QueuePolicy(`${clusterName}-karpenter-interruption`, {
    queueUrl: queue.url,
    policy: policy([
      { Sid: 'EventBridgeAndSqs', Effect: 'Allow', Principal: { Service: ['events.amazonaws.com', 'sqs.amazonaws.com'] }, Action: 'sqs:SendMessage', Resource: queue.arn },
      { Sid: 'DenyHTTP', Effect: 'Deny', Principal: '*', Action: 'sqs:*', Resource: queue.arn, Condition: { Bool: { 'aws:SecureTransport': 'false' } } },
    ]),
  });
  for (const [kind, pattern] of Object.entries(INTERRUPTION_EVENTS)) {
    const rule = new aws.cloudwatch.EventRule(`${clusterName}-karpenter-${kind}`, {
      name: `${clusterName}-karpenter-${kind}`,
      eventPattern: JSON.stringify(pattern),
      tags,
    });
    new aws.cloudwatch.EventTarget(`${clusterName}-karpenter-${kind}`, { rule: rule.name, arn: queue.arn, targetId: 'KarpenterInterruptionQueue' });
  }

  const controllerRole = new aws.iam.Role(`${clusterName}-karpenter-controller`, {
    name: `KarpenterControllerRole-${clusterName}`,
    assumeRolePolicy: podIdentityTrust(cluster.arn),
    tags,
  });
  new aws.iam.RolePolicy(`${clusterName}-karpenter-controller`, {
    role: controllerRole.id,
    policy: controllerPolicy(clusterName, cluster.arn, nodeRole.arn, instanceProfile.arn, queue.arn),
  });
  new aws.eks.PodIdentityAssociation(`${clusterName}-karpenter`, {
    clusterName: cluster.name,
    namespace: config.karpenterNamespace,
    serviceAccount: KARPENTER_SERVICE_ACCOUNT,
    roleArn: controllerRole.arn,
    tags,
  });

  return { nodeRole, instanceProfile, controllerRole, queue };
}

/**
 * Karpenter v1's controller policy (its reference CloudFormation template), narrowed: it may launch,
 * tag and terminate only what carries this cluster's ownership tag, pass only the node role, read
 * only our instance profile, and needs no instance-profile write rights (the profile is ours).
 */
function controllerPolicy(clusterName: string, clusterArn: pulumi.Input<string>, nodeRoleArn: pulumi.Input<string>,
  instanceProfileArn: pulumi.Input<string>, queueArn: pulumi.Input<string>): pulumi.Output<string> {
  const ec2 = (resource: string, regional = true) => pulumi.interpolate`arn:${partition()}:ec2:${region()}:${regional ? '*' : ''}:${resource}`;
  const owned = { [`aws:ResourceTag/kubernetes.io/cluster/${clusterName}`]: 'owned' };
  const requestOwned = { [`aws:RequestTag/kubernetes.io/cluster/${clusterName}`]: 'owned', 'aws:RequestTag/eks:eks-cluster-name': clusterName };
  const launched = ['fleet/*', 'instance/*', 'volume/*', 'network-interface/*', 'launch-template/*', 'spot-instances-request/*'].map((r) => ec2(r));
  return policy([
    {
      Sid: 'AllowScopedEC2InstanceAccessActions', Effect: 'Allow', Action: ['ec2:RunInstances', 'ec2:CreateFleet'],
      Resource: [ec2('image/*', false), ec2('snapshot/*', false), ec2('security-group/*'), ec2('subnet/*'), ec2('capacity-reservation/*')],
    },
    {
      Sid: 'AllowScopedEC2LaunchTemplateAccessActions', Effect: 'Allow', Action: ['ec2:RunInstances', 'ec2:CreateFleet'], Resource: ec2('launch-template/*'),
      Condition: { StringEquals: owned, StringLike: { 'aws:ResourceTag/karpenter.sh/nodepool': '*' } },
    },
    {
      Sid: 'AllowScopedEC2InstanceActionsWithTags', Effect: 'Allow', Action: ['ec2:RunInstances', 'ec2:CreateFleet', 'ec2:CreateLaunchTemplate'], Resource: launched,
      Condition: { StringEquals: requestOwned, StringLike: { 'aws:RequestTag/karpenter.sh/nodepool': '*' } },
    },
    {
      Sid: 'AllowScopedResourceCreationTagging', Effect: 'Allow', Action: 'ec2:CreateTags', Resource: launched,
      Condition: {
        StringEquals: { ...requestOwned, 'ec2:CreateAction': ['RunInstances', 'CreateFleet', 'CreateLaunchTemplate'] },
        StringLike: { 'aws:RequestTag/karpenter.sh/nodepool': '*' },
      },
    },
    {
      Sid: 'AllowScopedResourceTagging', Effect: 'Allow', Action: 'ec2:CreateTags', Resource: ec2('instance/*'),
      Condition: {
        StringEquals: owned,
        StringLike: { 'aws:ResourceTag/karpenter.sh/nodepool': '*' },
        StringEqualsIfExists: { 'aws:RequestTag/eks:eks-cluster-name': clusterName },
        'ForAllValues:StringEquals': { 'aws:TagKeys': ['eks:eks-cluster-name', 'karpenter.sh/nodeclaim', 'Name'] },
      },
    },
    {
      Sid: 'AllowScopedDeletion', Effect: 'Allow', Action: ['ec2:TerminateInstances', 'ec2:DeleteLaunchTemplate'],
      Resource: [ec2('instance/*'), ec2('launch-template/*')],
      Condition: { StringEquals: owned, StringLike: { 'aws:ResourceTag/karpenter.sh/nodepool': '*' } },
    },
    {
      Sid: 'AllowRegionalReadActions', Effect: 'Allow', Resource: '*',
      Action: ['ec2:DescribeCapacityReservations', 'ec2:DescribeImages', 'ec2:DescribeInstances', 'ec2:DescribeInstanceTypeOfferings',
        'ec2:DescribeInstanceTypes', 'ec2:DescribeLaunchTemplates', 'ec2:DescribeSecurityGroups', 'ec2:DescribeSpotPriceHistory', 'ec2:DescribeSubnets'],
      Condition: { StringEquals: { 'aws:RequestedRegion': region() } },
    },
    { Sid: 'AllowSSMReadActions', Effect: 'Allow', Action: 'ssm:GetParameter', Resource: pulumi.interpolate`arn:${partition()}:ssm:${region()}::parameter/aws/service/*` },
    { Sid: 'AllowPricingReadActions', Effect: 'Allow', Action: 'pricing:GetProducts', Resource: '*' },
    { Sid: 'AllowInterruptionQueueActions', Effect: 'Allow', Action: ['sqs:DeleteMessage', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage'], Resource: queueArn },
    {
      Sid: 'AllowPassingInstanceRole', Effect: 'Allow', Action: 'iam:PassRole', Resource: nodeRoleArn,
      Condition: { StringEquals: { 'iam:PassedToService': ['ec2.amazonaws.com'] } },
    },
    { Sid: 'AllowInstanceProfileReadActions', Effect: 'Allow', Action: 'iam:GetInstanceProfile', Resource: instanceProfileArn },
    { Sid: 'AllowAPIServerEndpointDiscovery', Effect: 'Allow', Action: 'eks:DescribeCluster', Resource: clusterArn },
  ]);
}
