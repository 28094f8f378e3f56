// Tags on every AWS resource this program creates: who owns it, which environment, who manages it.
import type { StackConfig } from './config.ts';

export type Tags = Record<string, string>;

/** Karpenter finds the subnets and security groups of a cluster by this tag (EC2NodeClass selector terms). */
export const DISCOVERY_TAG = 'karpenter.sh/discovery';

export function baseTags(config: StackConfig): Tags {
  return {
    ...config.tags,
    'app.kubernetes.io/part-of': 'workspace-sandbox',
    'workspace-sandbox.io/environment': config.environment,
    'workspace-sandbox.io/managed-by': 'pulumi',
  };
}
