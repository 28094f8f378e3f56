// The few DER (X.690) forms an X.509 certificate needs, written directly (lib/certs.ts builds CAs and
// leaves with them): minting a leaf for a new intercepted host is on that connection's path, and
// building it through node-forge's object model cost more than the CA's signature itself.

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV: `tag` is the whole identifier octet (class, constructed bit and number). */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

export const TAG = Object.freeze({
  BOOLEAN: 0x01, INTEGER: 0x02, BIT_STRING: 0x03, OCTET_STRING: 0x04, NULL: 0x05, OID: 0x06,
  UTF8_STRING: 0x0c, UTC_TIME: 0x17, GENERALIZED_TIME: 0x18, SEQUENCE: 0x30, SET: 0x31,
});

export const sequence = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...items);

/** A context-specific tag: `[n]`, constructed (EXPLICIT or a constructed IMPLICIT type) or primitive. */
export const contextTag = (n: number, constructed: boolean): number => 0x80 | (constructed ? 0x20 : 0) | n;

/** A non-negative INTEGER from big-endian bytes (a leading zero keeps a high first bit positive). */
export function unsignedInteger(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0 && bytes[i + 1]! < 0x80) i++;
  const trimmed = bytes.subarray(i);
  return tlv(TAG.INTEGER, trimmed[0]! >= 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
}

export function oid(dotted: string): Buffer {
  const [first, second, ...rest] = dotted.split('.').map(Number);
  const out: number[] = [first! * 40 + second!];
  for (const arc of rest) {
    const bytes = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) bytes.unshift(0x80 | (v & 0x7f));
    out.push(...bytes);
  }
  return tlv(TAG.OID, Buffer.from(out));
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, UTC. */
export function time(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-11-29T22:58:52.123Z
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '') + 'Z'; // 20261129225852Z
  return date.getUTCFullYear() < 2050 ? tlv(TAG.UTC_TIME, Buffer.from(digits.slice(2), 'latin1')) : tlv(TAG.GENERALIZED_TIME, Buffer.from(digits, 'latin1'));
}

/** A BIT STRING of whole bytes (no unused bits). */
export const bitString = (bytes: Buffer): Buffer => tlv(TAG.BIT_STRING, Buffer.from([0]), bytes);

export interface Element {
  tag: number;
  /** The whole TLV. */
  der: Buffer;
  /** The content octets. */
  content: Buffer;
}

/** The TLV elements one after another in `der` (definite lengths only, as DER requires). */
export function children(der: Buffer): Element[] {
  const out: Element[] = [];
  let at = 0;
  while (at < der.length) {
    if (at + 2 > der.length) throw new Error('truncated DER');
    const tag = der[at]!;
    let len = der[at + 1]!;
    let header = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4) throw new Error('unsupported DER length');
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[at + 2 + i]!;
      header += n;
    }
    const end = at + header + len;
    if (end > der.length) throw new Error('truncated DER');
    out.push({ tag, der: der.subarray(at, end), content: der.subarray(at + header, end) });
    at = end;
  }
  return out;
}
