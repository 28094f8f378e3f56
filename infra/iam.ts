// IAM documents as typed values, so tests read the same objects the program sends.
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';

type Value = pulumi.Input<string> | pulumi.Input<string>[];

/** A statement whose values may still be unresolved (ARNs of resources being created). */
export interface Statement {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Principal?: Record<string, Value> | '*';
  Action: string | string[];
  Resource?: Value;
  Condition?: Record<string, Record<string, Value>>;
}

export function policy(statements: Statement[]): pulumi.Output<string> {
  return pulumi.output(statements).apply((Statement) => JSON.stringify({ Version: '2012-10-17', Statement }));
}

export const account = () => aws.getCallerIdentityOutput().accountId;
export const partition = () => aws.getPartitionOutput().partition;
export const region = () => aws.getRegionOutput().region;

export const managedPolicy = (name: string) => pulumi.interpolate`arn:${partition()}:iam::aws:policy/${name}`;

/** What nodes need and nothing else: join the cluster, run the VPC CNI, pull images from ECR. */
export const NODE_POLICIES = ['AmazonEKSWorkerNodePolicy', 'AmazonEKS_CNI_Policy', 'AmazonEC2ContainerRegistryPullOnly'] as const;

export function ec2Trust(): pulumi.Output<string> {
  return policy([{ Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }]);
}

/**
 * Trust for an EKS Pod Identity role: only the Pod Identity service, only on behalf of this
 * account's cluster (confused-deputy guard). The association decides which ServiceAccount.
 */
export function podIdentityTrust(clusterArn: pulumi.Input<string>): pulumi.Output<string> {
  return policy([{
    Sid: 'EksPodIdentity',
    Effect: 'Allow',
    Principal: { Service: 'pods.eks.amazonaws.com' },
    Action: ['sts:AssumeRole', 'sts:TagSession'],
    Condition: {
      StringEquals: { 'aws:SourceAccount': account() },
      ArnEquals: { 'aws:SourceArn': clusterArn },
    },
  }]);
}
