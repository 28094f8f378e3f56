// CIDR blocks, and the only non-public ranges an operator may open in the gateway: the ones
// reserved for documentation and benchmarking (RFC 5737, RFC 3849, RFC 2544), which no real
// service uses, so a lab or a conformance suite can stand an "internet" up on them. Cloud metadata,
// the Pod Identity agent, loopback, private and link-local space can never be opened this way.
import { isIP } from 'node:net';
import { ipBytes } from '../lib/ip.ts';

export interface Cidr {
  readonly text: string;
  readonly family: 4 | 6;
  readonly bytes: Buffer;
  readonly bits: number;
}

export const LAB_RANGES: readonly string[] = Object.freeze([
  '192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '198.18.0.0/15', '2001:db8::/32',
]);

export function parseCidr(text: string): Cidr | string {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) return 'must be a CIDR block (address/prefix)';
  const family = isIP(m[1]!);
  if (family === 0) return 'must start with an IPv4 or IPv6 address';
  const bits = Number(m[2]);
  if (bits > (family === 4 ? 32 : 128)) return `prefix must be at most ${family === 4 ? 32 : 128}`;
  return { text: text.trim(), family: family as 4 | 6, bytes: ipBytes(m[1]!), bits };
}

function prefixEqual(a: Buffer, b: Buffer, bits: number): boolean {
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((a[i]! ^ b[i]!) & mask) !== 0) return false;
  }
  return true;
}

/** True when `address` (a literal) lies in `cidr`. */
export function cidrContains(cidr: Cidr, address: string): boolean {
  const family = isIP(address);
  if (family !== cidr.family) return false;
  return prefixEqual(cidr.bytes, ipBytes(address), cidr.bits);
}

/** True when all of `inner` lies in `outer`. */
export function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return inner.family === outer.family && inner.bits >= outer.bits && prefixEqual(inner.bytes, outer.bytes, outer.bits);
}

const LAB = LAB_RANGES.map((r) => parseCidr(r) as Cidr);

/** A CIDR inside one of LAB_RANGES, or why not. */
export function parseLabCidr(text: string): Cidr | string {
  const c = parseCidr(text);
  if (typeof c === 'string') return c;
  if (!LAB.some((lab) => cidrWithin(c, lab))) return `must lie inside a documentation or benchmarking range (${LAB_RANGES.join(', ')})`;
  return c;
}
