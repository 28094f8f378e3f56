// Address classification for the SSRF guard. An address is `public` only when it is global
// unicast; everything else has a named class so a denial says why. IPv6 forms that embed or
// translate to IPv4 (mapped, compatible, NAT64, 6to4, Teredo) are denied outright: checking the
// embedded IPv4 would still leave the translator deciding where the bytes go.
// Ranges: IANA IPv4/IPv6 Special-Purpose Address Registries (RFC 6890 and updates).
import { isIP } from 'node:net';
import { ipv4ToInt, ipv6Groups } from '../lib/ip.ts';

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

function cidr4(base: string, bits: number): [number, number] {
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return [(ipv4ToInt(base) & mask) >>> 0, mask];
}

const V4_RANGES: [[number, number], AddressClass][] = [
  [cidr4('0.0.0.0', 32), 'unspecified'],
  [cidr4('0.0.0.0', 8), 'this-network'],
  [cidr4('10.0.0.0', 8), 'private'],
  [cidr4('100.64.0.0', 10), 'cgnat'],
  [cidr4('127.0.0.0', 8), 'loopback'],
  // Includes 169.254.169.254 (cloud metadata) and 169.254.170.23 (EKS Pod Identity agent).
  [cidr4('169.254.0.0', 16), 'link-local'],
  [cidr4('172.16.0.0', 12), 'private'],
  [cidr4('192.0.0.0', 24), 'ietf-protocol'],
  [cidr4('192.0.2.0', 24), 'documentation'],
  [cidr4('192.88.99.0', 24), 'reserved'], // deprecated 6to4 relay anycast
  [cidr4('192.168.0.0', 16), 'private'],
  [cidr4('198.18.0.0', 15), 'benchmarking'],
  [cidr4('198.51.100.0', 24), 'documentation'],
  [cidr4('203.0.113.0', 24), 'documentation'],
  [cidr4('224.0.0.0', 4), 'multicast'],
  [cidr4('255.255.255.255', 32), 'broadcast'],
  [cidr4('240.0.0.0', 4), 'reserved'],
];

/** V4_RANGES as CIDR blocks: what the egress gateway's NetworkPolicy excepts are generated from. */
export function nonPublicIPv4Cidrs(): string[] {
  return V4_RANGES.map(([[base, mask]]) => {
    const bits = Math.clz32(~mask); // leading ones of the mask
    return `${base >>> 24}.${(base >>> 16) & 0xff}.${(base >>> 8) & 0xff}.${base & 0xff}/${bits}`;
  });
}

export function classifyIPv4(address: string): AddressClass {
  const n = ipv4ToInt(address);
  for (const [[base, mask], cls] of V4_RANGES) if (((n & mask) >>> 0) === base) return cls;
  return 'public';
}

function prefixMatch(groups: number[], prefix: number[], bits: number): boolean {
  for (let i = 0; bits > 0; i++, bits -= 16) {
    const mask = bits >= 16 ? 0xffff : (0xffff << (16 - bits)) & 0xffff;
    if (((groups[i]! ^ (prefix[i] ?? 0)) & mask) !== 0) return false;
  }
  return true;
}

const V6_RANGES: [number[], number, AddressClass][] = [
  [[0, 0, 0, 0, 0, 0xffff], 96, 'ipv4-mapped'],
  [[0x64, 0xff9b], 96, 'nat64'],
  [[0x64, 0xff9b, 1], 48, 'nat64'], // local-use NAT64 (RFC 8215)
  [[0x100], 64, 'discard'],
  [[0x2001, 0xdb8], 32, 'documentation'],
  [[0x2001], 32, 'teredo'],
  [[0x2002], 16, '6to4'],
  // fc00::/7 covers fd00:ec2::/32 (the EC2 IPv6 metadata and DNS endpoints).
  [[0xfc00], 7, 'ula'],
  [[0xfe80], 10, 'link-local'],
  [[0xfec0], 10, 'site-local'],
  [[0xff00], 8, 'multicast'],
];

/** The non-public blocks of V6_RANGES inside global unicast (2000::/3), the only IPv6 space the gateway may reach. */
export function nonPublicGlobalIPv6Cidrs(): string[] {
  return V6_RANGES.filter(([prefix]) => ((prefix[0] ?? 0) & 0xe000) === 0x2000)
    .map(([prefix, bits]) => `${prefix.map((g) => g.toString(16)).join(':')}::/${bits}`);
}

export function classifyIPv6(address: string): AddressClass {
  const g = ipv6Groups(address);
  if (g.length !== 8) return 'invalid';
  if (g.every((x) => x === 0)) return 'unspecified';
  if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return 'loopback';
  // ::a.b.c.d (deprecated IPv4-compatible; also ::/96 in general).
  if (g.slice(0, 6).every((x) => x === 0)) return 'ipv4-compatible';
  for (const [prefix, bits, cls] of V6_RANGES) if (prefixMatch(g, prefix, bits)) return cls;
  // Only global unicast (2000::/3) is public; the rest of the space is unassigned or special.
  return (g[0]! & 0xe000) === 0x2000 ? 'public' : 'reserved';
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
