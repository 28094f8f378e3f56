// IP address literals as numbers and bytes (inputs must pass node:net's isIP()).
import { isIP } from 'node:net';

export function ipv4ToInt(address: string): number {
  const parts = address.split('.').map(Number);
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

/** Eight 16-bit groups; handles `::`, a zone (`%eth0`, dropped) and a trailing dotted IPv4. */
export function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase();
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const n = ipv4ToInt(tail);
    text = `${text.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, rest] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined];
  const h = head ? head.split(':').map((g) => parseInt(g, 16)) : [];
  if (rest === undefined) return h;
  const r = rest ? rest.split(':').map((g) => parseInt(g, 16)) : [];
  return [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r];
}

/** Network byte order: 4 bytes for IPv4, 16 for IPv6 (as an X.509 iPAddress name holds them). */
export function ipBytes(address: string): Buffer {
  if (isIP(address) === 4) return Buffer.from(address.split('.').map(Number));
  const out = Buffer.alloc(16);
  ipv6Groups(address).forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}
