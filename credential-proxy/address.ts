// Address classification for the SSRF guard. An address is `public` only when it is global
// unicast; everything else has a named class so a denial says why. IPv6 forms that embed or
// translate to IPv4 (mapped, compatible, NAT64, 6to4, Teredo) are denied outright: checking the
// embedded IPv4 would still leave the translator deciding where the bytes go.
// Ranges: IANA IPv4/IPv6 Special-Purpose Address Registries (RFC 6890 and updates), one table per
// family that both the classifier (as node:net BlockLists) and the gateway's NetworkPolicy read.
import { BlockList, isIP } from 'node:net';
import { ipv6Groups } from '../lib/ip.ts';

export type AddressClass =
  | 'public' | 'unspecified' | 'loopback' | 'private' | 'link-local' | 'cgnat' | 'multicast' | 'broadcast'
  | 'reserved' | 'documentation' | 'benchmarking' | 'this-network' | 'ietf-protocol'
  | 'ula' | 'site-local' | 'ipv4-mapped' | 'ipv4-compatible' | 'nat64' | '6to4' | 'teredo' | 'discard' | 'invalid';

export interface Classified {
  readonly address: string;
  readonly family: 4 | 6;
  readonly class: AddressClass;
  readonly public: boolean;
}

type Range = readonly [cidr: string, cls: AddressClass];

// First match wins: a block nested in a bigger one (0.0.0.0/32 in 0.0.0.0/8) comes first.
const V4_RANGES: readonly Range[] = [
  ['0.0.0.0/32', 'unspecified'],
  ['0.0.0.0/8', 'this-network'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  ['127.0.0.0/8', 'loopback'],
  // Includes 169.254.169.254 (cloud metadata) and 169.254.170.23 (EKS Pod Identity agent).
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'ietf-protocol'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'], // deprecated 6to4 relay anycast
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmarking'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'],
];

const V6_RANGES: readonly Range[] = [
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['::/96', 'ipv4-compatible'], // ::a.b.c.d (deprecated)
  ['::ffff:0:0/96', 'ipv4-mapped'],
  ['64:ff9b::/96', 'nat64'],
  ['64:ff9b:1::/48', 'nat64'], // local-use NAT64 (RFC 8215)
  ['100::/64', 'discard'],
  ['2001:db8::/32', 'documentation'],
  ['2001::/32', 'teredo'],
  ['2002::/16', '6to4'],
  // fc00::/7 covers fd00:ec2::/32 (the EC2 IPv6 metadata and DNS endpoints).
  ['fc00::/7', 'ula'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local'],
  ['ff00::/8', 'multicast'],
  // Only global unicast (2000::/3) is public; the rest of the space is unassigned or special.
  ['::/3', 'reserved'],
  ['4000::/2', 'reserved'],
  ['8000::/1', 'reserved'],
];

/**
 * The table as node:net BlockLists: one holding every non-public block (a public address, the
 * common case, costs one check), and one per row to name the class of the others. The families
 * stay apart: a BlockList matches an IPv4 rule against the IPv4-mapped IPv6 form too, and
 * ::ffff:10.0.0.1 must be classified as mapped, not as private.
 */
function compile(ranges: readonly Range[], family: 'ipv4' | 'ipv6') {
  const block = (cidr: string) => {
    const [base, bits] = cidr.split('/') as [string, string];
    const list = new BlockList();
    list.addSubnet(base, Number(bits), family);
    return list;
  };
  const all = new BlockList();
  for (const [cidr] of ranges) {
    const [base, bits] = cidr.split('/') as [string, string];
    all.addSubnet(base, Number(bits), family);
  }
  return { family, all, rows: ranges.map(([cidr, cls]) => [block(cidr), cls] as const) };
}

const V4 = compile(V4_RANGES, 'ipv4');
const V6 = compile(V6_RANGES, 'ipv6');

function classify(table: ReturnType<typeof compile>, address: string): AddressClass {
  if (!table.all.check(address, table.family)) return 'public';
  for (const [list, cls] of table.rows) if (list.check(address, table.family)) return cls;
  return 'public'; // unreachable: `all` holds exactly the rows
}

/** V4_RANGES as CIDR blocks: what the egress gateway's NetworkPolicy excepts are generated from. */
export function nonPublicIPv4Cidrs(): string[] {
  return V4_RANGES.map(([cidr]) => cidr);
}

/** The non-public blocks of V6_RANGES inside global unicast (2000::/3), the only IPv6 space the gateway may reach. */
export function nonPublicGlobalIPv6Cidrs(): string[] {
  const global = new BlockList();
  global.addSubnet('2000::', 3, 'ipv6');
  return V6_RANGES.filter(([cidr]) => global.check(cidr.split('/')[0]!, 'ipv6') && Number(cidr.split('/')[1]) >= 3).map(([cidr]) => cidr);
}

export function classifyIPv4(address: string): AddressClass {
  return isIP(address) === 4 ? classify(V4, address) : 'invalid';
}

export function classifyIPv6(address: string): AddressClass {
  return isIP(address) === 6 ? classify(V6, address) : 'invalid';
}

/** Classifies a resolved address (a literal as the resolver returns it, no brackets). */
export function classifyAddress(address: string): Classified {
  const family = isIP(address);
  if (family === 4) {
    const cls = classifyIPv4(address);
    return { address, family: 4, class: cls, public: cls === 'public' };
  }
  if (family === 6) {
    const cls = classifyIPv6(address);
    return { address, family: 6, class: cls, public: cls === 'public' };
  }
  return { address, family: 4, class: 'invalid', public: false };
}

/**
 * Endpoints that hand out credentials or instance identity to whoever asks from the node or the
 * pod. They stay refused whatever a rule says (`allowPrivate` included): no egress rule has a
 * reason to reach them, and the sidecar's Pod Identity token must only ever be used by the AWS SDK
 * inside the proxy.
 */
const METADATA_V4: ReadonlyMap<string, string> = new Map([
  ['169.254.169.254', 'the cloud instance metadata service (IMDS)'],
  ['169.254.170.2', 'the ECS task metadata and credentials endpoint'],
  ['169.254.170.23', 'the EKS Pod Identity agent'],
]);

/** `fd00:ec2::/32`: EC2's IPv6 IMDS (fd00:ec2::254), DNS, NTP and the Pod Identity agent (fd00:ec2::23). */
const METADATA_V6_NAME = 'the EC2 IPv6 metadata and Pod Identity range';

function v4FromGroups(hi: number, lo: number): string {
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/**
 * The IPv4 address an IPv6 address carries or translates to, in every standard embedding:
 * IPv4-mapped (::ffff:0:0/96), IPv4-translated (::ffff:0:0:0/96), IPv4-compatible (::/96),
 * NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48 layout of RFC 6052 §2.2), 6to4
 * (2002::/16) and Teredo (2001::/32, the client address inverted).
 */
export function embeddedIPv4(address: string): string | undefined {
  if (isIP(address) !== 6) return undefined;
  const g = ipv6Groups(address);
  if (g.length !== 8) return undefined;
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 5) && g[5] === 0xffff) return v4FromGroups(g[6]!, g[7]!);
  if (zeros(0, 4) && g[4] === 0xffff && g[5] === 0) return v4FromGroups(g[6]!, g[7]!);
  if (zeros(0, 6)) return v4FromGroups(g[6]!, g[7]!);
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return v4FromGroups(g[6]!, g[7]!);
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) return v4FromGroups(g[3]!, ((g[4]! & 0xff) << 8) | (g[5]! >> 8));
  if (g[0] === 0x2002) return v4FromGroups(g[1]!, g[2]!);
  if (g[0] === 0x2001 && g[1] === 0) return v4FromGroups(~g[6]! & 0xffff, ~g[7]! & 0xffff);
  return undefined;
}

/** What credential endpoint `address` reaches (in any IPv4 or IPv6 form), or undefined. */
export function metadataEndpoint(address: string): string | undefined {
  const family = isIP(address);
  if (family === 4) return METADATA_V4.get(address);
  if (family !== 6) return undefined;
  const g = ipv6Groups(address);
  if (g[0] === 0xfd00 && g[1] === 0xec2) return METADATA_V6_NAME;
  const v4 = embeddedIPv4(address);
  return v4 === undefined ? undefined : METADATA_V4.get(v4);
}

/** True when `address` is one that reaches this host (loopback, unspecified, or a local interface). */
export function isLocalAddress(address: string, localAddresses: ReadonlySet<string>): boolean {
  const cls = classifyAddress(address).class;
  if (cls === 'loopback' || cls === 'unspecified') return true;
  if (localAddresses.has(address.toLowerCase())) return true;
  // ::ffff:127.0.0.1 reaches the IPv4 loopback on dual-stack sockets.
  if (cls === 'ipv4-mapped') {
    const g = ipv6Groups(address);
    const v4 = `${g[6]! >> 8}.${g[6]! & 0xff}.${g[7]! >> 8}.${g[7]! & 0xff}`;
    return isLocalAddress(v4, localAddresses);
  }
  return false;
}
