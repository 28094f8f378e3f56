// Output handling: a capped head+tail store for buffered mode and UTF-8 boundary helpers so text is
// never cut inside a character (a cut mid-sequence would turn into U+FFFD replacement characters and
// change the byte count the caller sees).

/** Length of the longest prefix of `buf` that does not end inside a UTF-8 sequence. */
export function utf8CompletePrefix(buf: Buffer): number {
  const n = buf.length;
  // A sequence is at most 4 bytes: look back for its lead byte among the last 3.
  for (let back = 1; back <= Math.min(3, n); back++) {
    const b = buf[n - back]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  // Only continuation bytes at the end (or nothing): invalid or empty; nothing to hold back.
  return n;
}

/** Number of leading continuation bytes (a tail that starts inside a character skips them). */
export function utf8LeadingContinuation(buf: Buffer): number {
  let i = 0;
  while (i < Math.min(3, buf.length) && (buf[i]! & 0xc0) === 0x80) i++;
  return i;
}

/** Smallest allocation of a growing buffer: tiny outputs stay tiny, 1-byte writes do not realloc each time. */
const MIN_ALLOCATION = 4096;

/** A capacity for `needed` bytes: doubled from `current`, never past `cap`. */
function grownCapacity(current: number, needed: number, cap: number): number {
  return Math.min(cap, Math.max(MIN_ALLOCATION, current * 2, needed));
}

/**
 * Keeps the first `headCap` and the last `tailCap` bytes of a stream, counting what falls between.
 * Bytes are copied into two buffers of their own (the head grows up to headCap, the tail is a ring
 * of at most tailCap), never kept as the chunks they arrived in: a command writing one byte at a
 * time would otherwise pin one small Buffer (≈100 bytes of bookkeeping each) per write. Memory is
 * at most headCap + tailCap, and 1.5 × that for the moment a buffer grows.
 */
export class HeadTailBuffer {
  readonly #headCap: number;
  readonly #tailCap: number;
  #head = Buffer.alloc(0);
  #headLen = 0;
  /** Ring: `#tailLen` bytes starting at `#tailStart`, wrapping at `#tail.length`. */
  #tail = Buffer.alloc(0);
  #tailStart = 0;
  #tailLen = 0;
  #total = 0;

  constructor(maxBytes: number) {
    this.#headCap = Math.floor(maxBytes / 2);
    this.#tailCap = maxBytes - this.#headCap;
  }

  get totalBytes(): number {
    return this.#total;
  }

  push(chunk: Buffer): void {
    this.#total += chunk.length;
    let rest = chunk;
    if (this.#headLen < this.#headCap) {
      const take = Math.min(this.#headCap - this.#headLen, rest.length);
      if (this.#headLen + take > this.#head.length) {
        const grown = Buffer.allocUnsafe(grownCapacity(this.#head.length, this.#headLen + take, this.#headCap));
        this.#head.copy(grown, 0, 0, this.#headLen);
        this.#head = grown;
      }
      rest.copy(this.#head, this.#headLen, 0, take);
      this.#headLen += take;
      rest = rest.subarray(take);
    }
    if (rest.length > 0 && this.#tailCap > 0) this.#pushTail(rest);
  }

  #pushTail(bytes: Buffer): void {
    const cap = this.#tailCap;
    if (bytes.length >= cap) bytes = bytes.subarray(bytes.length - cap);
    if (this.#tailLen + bytes.length > this.#tail.length && this.#tail.length < cap) {
      // Grow (and straighten the ring) while it is below its final size.
      const grown = Buffer.allocUnsafe(grownCapacity(this.#tail.length, this.#tailLen + bytes.length, cap));
      this.#tailLen = this.#copyTail(grown);
      this.#tail = grown;
      this.#tailStart = 0;
    }
    const ring = this.#tail;
    let end = (this.#tailStart + this.#tailLen) % ring.length;
    const first = Math.min(bytes.length, ring.length - end);
    bytes.copy(ring, end, 0, first);
    bytes.copy(ring, 0, first);
    end = (end + bytes.length) % ring.length;
    const len = this.#tailLen + bytes.length;
    if (len > ring.length) {
      // Overwrote the oldest bytes: the ring is full and starts where it now ends.
      this.#tailLen = ring.length;
      this.#tailStart = end;
    } else {
      this.#tailLen = len;
    }
  }

  /** Copies the ring's bytes, oldest first, to `target`; returns how many. */
  #copyTail(target: Buffer): number {
    const ring = this.#tail;
    const first = Math.min(this.#tailLen, ring.length - this.#tailStart);
    ring.copy(target, 0, this.#tailStart, this.#tailStart + first);
    ring.copy(target, first, 0, this.#tailLen - first);
    return this.#tailLen;
  }

  /**
   * The kept bytes and how many were dropped. With `utf8`, the head is cut back and the tail cut
   * forward to character boundaries (the trimmed bytes count as dropped), but only when something
   * was dropped: complete output is returned byte for byte.
   */
  result(utf8: boolean): { data: Buffer; truncatedBytes: number } {
    let head = this.#head.subarray(0, this.#headLen);
    const straight = Buffer.allocUnsafe(this.#tailLen);
    let tail = straight.subarray(0, this.#copyTail(straight));
    const kept = head.length + tail.length;
    if (kept === this.#total) return { data: Buffer.concat([head, tail], kept), truncatedBytes: 0 };
    if (utf8) {
      head = head.subarray(0, utf8CompletePrefix(head));
      tail = tail.subarray(utf8LeadingContinuation(tail));
    }
    return { data: Buffer.concat([head, tail]), truncatedBytes: this.#total - head.length - tail.length };
  }
}

/**
 * Turns raw chunks of one stream into NDJSON frames. UTF-8 text carries an incomplete trailing
 * character over to the next chunk; `offset` is the byte offset of the frame's first byte.
 */
export class FrameEncoder {
  readonly #type: 'stdout' | 'stderr';
  readonly #base64: boolean;
  #carry: Buffer | undefined;
  #offset = 0;

  constructor(type: 'stdout' | 'stderr', encoding: 'utf8' | 'base64') {
    this.#type = type;
    this.#base64 = encoding === 'base64';
  }

  /** The frame line for `chunk`, or undefined when it only completed nothing yet. */
  encode(chunk: Buffer): string | undefined {
    if (this.#base64) return this.#frame(chunk);
    let buf = chunk;
    if (this.#carry) {
      buf = Buffer.concat([this.#carry, chunk]);
      this.#carry = undefined;
    }
    const complete = utf8CompletePrefix(buf);
    if (complete < buf.length) this.#carry = Buffer.from(buf.subarray(complete));
    return complete === 0 ? undefined : this.#frame(buf.subarray(0, complete));
  }

  /** Bytes held back: the start of a character whose remaining bytes have not arrived. */
  get pendingBytes(): number {
    return this.#carry?.length ?? 0;
  }

  /** The held-back bytes as a last frame (the stream really ended inside a character). */
  flush(): string | undefined {
    const carry = this.#carry;
    this.#carry = undefined;
    return carry ? this.#frame(carry) : undefined;
  }

  #frame(bytes: Buffer): string {
    const offset = this.#offset;
    this.#offset += bytes.length;
    // Base64 needs no JSON escaping, so the frame is built by hand: this is the hot path of
    // binary streaming.
    const data = this.#base64 ? `"${bytes.toString('base64')}"` : JSON.stringify(bytes.toString('utf8'));
    return `{"type":"${this.#type}","data":${data},"offset":${offset}}\n`;
  }
}
