// The workspace's AWS identity: a role that can invoke the configured Bedrock models and nothing
// else, bound by an EKS Pod Identity association to the ServiceAccount workspace pods run as. The
// webhook moves that identity's token into the credential-proxy sidecar, which signs Bedrock
// requests; the workspace container never holds it.
import * as aws from '@pulumi/aws';
import { NAMESPACES, SERVICE_ACCOUNT_WORKSPACE } from '../lib/constants.ts';
import type { StackConfig } from './config.ts';
import { podIdentityTrust, policy } from './iam.ts';
import type { Tags } from './tags.ts';

export const BEDROCK_ACTIONS = ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'] as const;

export interface Bedrock {
  role: aws.iam.Role;
  association: aws.eks.PodIdentityAssociation;
}

export function createBedrock(config: StackConfig, clusterName: string, cluster: aws.eks.Cluster, tags: Tags): Bedrock {
  const role = new aws.iam.Role(`${clusterName}-bedrock`, {
    name: `${clusterName}-workspace-bedrock`,
    assumeRolePolicy: podIdentityTrust(cluster.arn),
    // Credentials last an hour at most; a leaked set expires quickly.
    maxSessionDuration: 3600,
    tags,
  });
  new aws.iam.RolePolicy(`${clusterName}-bedrock`, {
    role: role.id,
    policy: policy([{
      Sid: 'InvokeConfiguredModels',
      Effect: 'Allow',
      Action: [...BEDROCK_ACTIONS],
      Resource: config.bedrockModelArns,
      // Pod Identity tags every session with where it came from: a second association that binds
      // this role anywhere else still gets nothing.
      Condition: {
        StringEquals: {
          'aws:PrincipalTag/eks-cluster-name': clusterName,
          'aws:PrincipalTag/kubernetes-namespace': NAMESPACES.sandboxes,
          'aws:PrincipalTag/kubernetes-service-account': SERVICE_ACCOUNT_WORKSPACE,
        },
      },
    }]),
  });
  const association = new aws.eks.PodIdentityAssociation(`${clusterName}-workspace`, {
    clusterName: cluster.name,
    namespace: NAMESPACES.sandboxes,
    serviceAccount: SERVICE_ACCOUNT_WORKSPACE,
    roleArn: role.arn,
    tags,
  });
  return { role, association };
}

