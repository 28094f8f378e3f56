// manifests/overlays/<env>/cluster.yaml, generated from a stack's outputs: the values the
// overlay's EC2NodeClass takes from the AWS side. One renderer for the program, the write script
// and the test that compares the committed file with the stack.
import { z } from 'zod';
import { ENVIRONMENTS } from './config.ts';

/** The overlays' EC2NodeClasses (manifests/base/karpenter/ec2nodeclass.yaml): each gets the stack's values. */
export const EC2_NODE_CLASSES = ['al2023-gvisor'] as const;

export const ClusterYamlValuesSchema = z.object({
  environment: z.enum(ENVIRONMENTS),
  instanceProfile: z.string().regex(/^[\w+=,.@-]{1,128}$/),
  discoveryTag: z.string().regex(/^[\w.:/=+@-]{1,256}$/),
  amiId: z.string().regex(/^ami-[0-9a-f]{8}([0-9a-f]{9})?$/),
}).strict();
export type ClusterYamlValues = z.infer<typeof ClusterYamlValuesSchema>;

export function clusterYamlPath(environment: string): string {
  return `manifests/overlays/${environment}/cluster.yaml`;
}

export function renderClusterYaml(input: ClusterYamlValues): string {
  const v = ClusterYamlValuesSchema.parse(input);
  const header = `# Generated from the Pulumi stack ${v.environment} (infra/README.md, "Feeding the overlays"); do not edit.
# test/infra/cluster-yaml.test.ts fails when this file and the stack disagree.
`;
  const nodeClass = (name: string) => `apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: ${name}
spec:
  # The AMI packer/ built, pinned per environment: a new build reaches nodes here only when
  # this stack's amiId changes (Karpenter then replaces the nodes as drifted).
  amiSelectorTerms:
    - id: ${v.amiId}
  # Created by the stack with the node role in it: the controller needs no IAM write rights.
  instanceProfile: ${v.instanceProfile}
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: ${v.discoveryTag}
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: ${v.discoveryTag}
`;
  return header + EC2_NODE_CLASSES.map(nodeClass).join('---\n');
}
