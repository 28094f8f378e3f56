// The VPC: private subnets (nodes and pods, tagged for Karpenter discovery) behind NAT, small
// public subnets for the NAT gateways and internet-facing load balancers only. Or an existing VPC
// by id, whose private subnets get the discovery tag.
import * as aws from '@pulumi/aws';
import * as pulumi from '@pulumi/pulumi';
import { subnetOf } from './cidr.ts';
import type { StackConfig } from './config.ts';
import { DISCOVERY_TAG, type Tags } from './tags.ts';

export interface Network {
  vpcId: pulumi.Output<string>;
  privateSubnetIds: pulumi.Output<string>[];
}

export function createNetwork(config: StackConfig, clusterName: string, tags: Tags): Network {
  const discovery = { [DISCOVERY_TAG]: clusterName };
  if (config.vpc.existing !== undefined) {
    const existing = config.vpc.existing;
    for (const [i, subnetId] of existing.privateSubnetIds.entries()) {
      new aws.ec2.Tag(`${clusterName}-private-${i}-discovery`, { resourceId: subnetId, key: DISCOVERY_TAG, value: clusterName });
    }
    return { vpcId: pulumi.output(existing.id), privateSubnetIds: existing.privateSubnetIds.map((id) => pulumi.output(id)) };
  }

  const spec = config.vpc.create!;
  const parentPrefix = Number(spec.cidr.split('/')[1]);
  // Eight equal blocks: one per zone for private subnets (pods take VPC addresses), the last one
  // split into small public subnets.
  const privatePrefix = parentPrefix + 3;
  const publicPrefix = Math.min(parentPrefix + 8, 26);
  const publicOffset = 7 * 2 ** (publicPrefix - privatePrefix);

  const vpc = new aws.ec2.Vpc(clusterName, {
    cidrBlock: spec.cidr,
    enableDnsHostnames: true,
    enableDnsSupport: true,
    tags: { ...tags, Name: clusterName },
  });
  // The default security group allows all traffic between its members: strip every rule.
  new aws.ec2.DefaultSecurityGroup(`${clusterName}-default`, { vpcId: vpc.id, ingress: [], egress: [], tags: { ...tags, Name: `${clusterName}-default-unused` } });
  const igw = new aws.ec2.InternetGateway(clusterName, { vpcId: vpc.id, tags: { ...tags, Name: clusterName } });

  const publicRoutes = new aws.ec2.RouteTable(`${clusterName}-public`, {
    vpcId: vpc.id,
    routes: [{ cidrBlock: '0.0.0.0/0', gatewayId: igw.id }],
    tags: { ...tags, Name: `${clusterName}-public` },
  });

  const publicSubnets = spec.availabilityZones.map((zone, i) => {
    const subnet = new aws.ec2.Subnet(`${clusterName}-public-${zone}`, {
      vpcId: vpc.id,
      availabilityZone: zone,
      cidrBlock: subnetOf(spec.cidr, publicPrefix, publicOffset + i),
      // Nothing launched here gets a public address by default; NAT gateways bring their own.
      mapPublicIpOnLaunch: false,
      tags: { ...tags, Name: `${clusterName}-public-${zone}`, 'kubernetes.io/role/elb': '1' },
    });
    new aws.ec2.RouteTableAssociation(`${clusterName}-public-${zone}`, { subnetId: subnet.id, routeTableId: publicRoutes.id });
    return subnet;
  });

  const natCount = spec.natGateways === 'perZone' ? spec.availabilityZones.length : 1;
  const nats = publicSubnets.slice(0, natCount).map((subnet, i) => {
    const zone = spec.availabilityZones[i]!;
    const eip = new aws.ec2.Eip(`${clusterName}-nat-${zone}`, { domain: 'vpc', tags: { ...tags, Name: `${clusterName}-nat-${zone}` } });
    return new aws.ec2.NatGateway(`${clusterName}-${zone}`, {
      allocationId: eip.id,
      subnetId: subnet.id,
      tags: { ...tags, Name: `${clusterName}-${zone}` },
    }, { dependsOn: [igw] });
  });

  const privateRouteTables: aws.ec2.RouteTable[] = [];
  const privateSubnets = spec.availabilityZones.map((zone, i) => {
    const subnet = new aws.ec2.Subnet(`${clusterName}-private-${zone}`, {
      vpcId: vpc.id,
      availabilityZone: zone,
      cidrBlock: subnetOf(spec.cidr, privatePrefix, i),
      mapPublicIpOnLaunch: false,
      tags: { ...tags, ...discovery, Name: `${clusterName}-private-${zone}`, 'kubernetes.io/role/internal-elb': '1' },
    });
    const routes = new aws.ec2.RouteTable(`${clusterName}-private-${zone}`, {
      vpcId: vpc.id,
      routes: [{ cidrBlock: '0.0.0.0/0', natGatewayId: nats[Math.min(i, nats.length - 1)]!.id }],
      tags: { ...tags, Name: `${clusterName}-private-${zone}` },
    });
    new aws.ec2.RouteTableAssociation(`${clusterName}-private-${zone}`, { subnetId: subnet.id, routeTableId: routes.id });
    privateRouteTables.push(routes);
    return subnet;
  });

  // S3 through a gateway endpoint (free): ECR image layers are served from S3, and each gigabyte
  // that skips the NAT gateway saves its processing charge.
  new aws.ec2.VpcEndpoint(`${clusterName}-s3`, {
    vpcId: vpc.id,
    serviceName: pulumi.interpolate`com.amazonaws.${aws.getRegionOutput().region}.s3`,
    vpcEndpointType: 'Gateway',
    routeTableIds: privateRouteTables.map((r) => r.id),
    tags: { ...tags, Name: `${clusterName}-s3` },
  });

  return { vpcId: vpc.id, privateSubnetIds: privateSubnets.map((s) => s.id) };
}
