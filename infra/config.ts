// One validated configuration object per stack (Pulumi.<stack>.yaml, namespace `workspace-sandbox:`).
// Every problem is reported at once, before a single resource is planned.
import { z } from 'zod';

export const PROJECT = 'workspace-sandbox';
export const ENVIRONMENTS = ['staging', 'prod'] as const;
export type Environment = (typeof ENVIRONMENTS)[number];

/** EKS control-plane version: the version the manifests, the AMI and the VPC CNI settings were written for. */
export const KUBERNETES_VERSION = '1.32';

const ipv4Cidr = z.string().regex(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/, 'an IPv4 CIDR such as 10.0.0.0/16')
  .refine((c) => c.split(/[./]/).slice(0, 4).every((o) => Number(o) <= 255) && Number(c.split('/')[1]) <= 32, 'octets ≤ 255, prefix ≤ 32');
const iamRoleArn = z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]+$/, 'an IAM role ARN (arn:aws:iam::<account>:role/<name>)');

/**
 * Bedrock resources the workspace may invoke: foundation models and inference profiles, each by
 * its full ARN. A wildcard would let a workspace run any model on the account's bill.
 */
const bedrockModelArn = z.string()
  .regex(/^arn:aws[a-z-]*:bedrock:[a-z0-9-]+:(\d{12})?:(foundation-model|inference-profile|application-inference-profile|provisioned-model|custom-model)\/[A-Za-z0-9.:_/-]+$/,
    'a Bedrock model or inference-profile ARN, e.g. arn:aws:bedrock:us-east-1::foundation-model/<model-id>')
  .refine((a) => !a.includes('*'), 'no wildcards: list each model');

const publicAccessCidr = ipv4Cidr.refine((c) => Number(c.split('/')[1]) >= 8, 'the API endpoint is never opened to the whole internet (prefix at least /8)');

const newVpc = z.object({
  cidr: ipv4Cidr.refine((c) => { const p = Number(c.split('/')[1]); return p >= 16 && p <= 20; }, 'a /16 to /20: pods take VPC addresses'),
  /** Three zones: Karpenter spreads spot capacity across them, the webhook spreads over them. */
  availabilityZones: z.array(z.string().regex(/^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$/, 'a zone name such as us-east-1a')).min(2).max(4),
  /** `perZone` keeps egress up when a zone fails (prod); `single` saves ~$33/month per gateway (staging). */
  natGateways: z.enum(['single', 'perZone']),
}).strict();

const existingVpc = z.object({
  id: z.string().regex(/^vpc-[0-9a-f]{8,17}$/),
  /** Private subnets with a NAT route, one per zone; they get the Karpenter discovery tag. */
  privateSubnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]{8,17}$/)).min(2),
}).strict();

export const StackConfigSchema = z.object({
  environment: z.enum(ENVIRONMENTS),
  /** Exactly one of: a VPC this stack creates, or an existing one by id. */
  vpc: z.object({ create: newVpc.optional(), existing: existingVpc.optional() }).strict()
    .refine((v) => (v.create === undefined) !== (v.existing === undefined), 'set exactly one of vpc.create or vpc.existing'),
  /** CIDRs allowed to reach the public API endpoint; empty = private endpoint only (reach it from the VPC or a VPN). */
  endpointPublicAccessCidrs: z.array(publicAccessCidr).default([]),
  /** IAM roles that administer the cluster (EKS access entries; nobody else gets in, not even the creator). */
  clusterAdminRoleArns: z.array(iamRoleArn).min(1),
  /** The AMI packer/al2023-gvisor.pkr.hcl built (its `artifact_id` in the packer manifest); pinned per environment. */
  amiId: z.string().regex(/^ami-[0-9a-f]{8}([0-9a-f]{9})?$/, 'an AMI id such as ami-0123456789abcdef0 (from the packer build)'),
  bedrockModelArns: z.array(bedrockModelArn).min(1),
  /** The on-demand node group for Karpenter and the system pods (CoreDNS, Pod Identity agent). */
  systemNodes: z.object({
    instanceTypes: z.array(z.string().regex(/^[a-z][a-z0-9-]*\.[a-z0-9]+$/)).min(1),
    minSize: z.number().int().min(2),
    desiredSize: z.number().int().min(2),
    maxSize: z.number().int().max(10),
  }).strict().refine((n) => n.minSize <= n.desiredSize && n.desiredSize <= n.maxSize, 'minSize ≤ desiredSize ≤ maxSize'),
  /** Where the Karpenter chart is installed; its controller role is bound to `karpenter` there. */
  karpenterNamespace: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/).default('kube-system'),
  /** Control-plane log retention (CloudWatch); unbounded retention is an unbounded bill. */
  logRetentionDays: z.union([z.literal(7), z.literal(14), z.literal(30), z.literal(60), z.literal(90), z.literal(180), z.literal(365)]).default(90),
  /**
   * EKS support tier. 1.32's standard support ended on 2026-03-23: with STANDARD, EKS upgrades a
   * cluster past its standard support on its own (the manifests are written for 1.32); EXTENDED
   * keeps 1.32 at $0.60 instead of $0.10 per cluster-hour until 2027-03-23. Moving to a newer
   * version is the way out of both (README.md, "Cost").
   */
  supportType: z.enum(['STANDARD', 'EXTENDED']),
  /** Refuse `pulumi destroy` of the cluster until this is turned off (prod). */
  deletionProtection: z.boolean().default(true),
  /** Extra tags (cost centre, owner) on every resource, added to the product's own. */
  tags: z.record(z.string().regex(/^[\w.:/=+@ -]{1,128}$/), z.string().max(256)).default({}),
}).strict();

export type StackConfig = z.infer<typeof StackConfigSchema>;

/** Keys whose Pulumi config values are plain strings; every other key holds YAML structure. */
export const STRING_KEYS: readonly string[] = ['environment', 'amiId', 'karpenterNamespace', 'supportType'];

/** Validates a stack's raw config; the error lists every problem with its key. */
export function parseStackConfig(raw: Record<string, unknown>, stack: string): StackConfig {
  const result = StackConfigSchema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `  ${PROJECT}:${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new Error(`stack ${stack}: invalid configuration\n${problems.join('\n')}`);
  }
  if (result.data.environment !== stack) {
    throw new Error(`stack ${stack}: ${PROJECT}:environment is ${result.data.environment}; a stack configures the environment it is named for`);
  }
  return result.data;
}

export function clusterNameOf(env: Environment): string {
  return `${PROJECT}-${env}`;
}
