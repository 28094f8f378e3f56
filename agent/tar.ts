// A small, strict tar reader over a stream, for the batch upload of /files. It reads POSIX ustar
// with pax extended headers (Python's tarfile default) and GNU long names (GNU tar's default), and
// refuses everything else rather than guessing. Nothing here touches the filesystem: entries come
// out with their raw path, and files.ts decides where (and whether) they land.
//
// Format: https://pubs.opengroup.org/onlinepubs/9799919799/utilities/pax.html (ustar and pax
// interchange formats); GNU extensions: https://www.gnu.org/software/tar/manual/html_node/Standard.html
import { WorkspaceSandboxError } from '../lib/errors.ts';

const BLOCK = 512;

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink';

export interface TarEntry {
  path: string;
  type: TarEntryType;
  size: number;
  mode: number;
  mtime: Date | undefined;
  linkpath: string;
  /** The file's bytes; must be consumed (or abandoned) before the next entry is read. */
  body: AsyncIterable<Buffer>;
}

export interface TarLimits {
  /** Largest regular file. */
  maxEntryBytes: number;
  /** Largest archive (every byte read, headers and padding included). */
  maxTotalBytes: number;
  maxEntries: number;
  /** Largest pax header or GNU long name. */
  maxMetaBytes?: number;
}

function invalid(message: string): WorkspaceSandboxError {
  return new WorkspaceSandboxError('WS_ERR_INVALID_TAR', `invalid tar upload: ${message}`);
}

/** Pulls exact byte counts out of an async iterable of chunks, counting everything read. */
class ByteReader {
  readonly #it: AsyncIterator<Buffer>;
  readonly #maxTotal: number;
  #pending: Buffer[] = [];
  #pendingLen = 0;
  #total = 0;
  #ended = false;

  constructor(input: AsyncIterable<Buffer>, maxTotal: number) {
    this.#it = input[Symbol.asyncIterator]();
    this.#maxTotal = maxTotal;
  }

  async #fill(): Promise<boolean> {
    if (this.#ended) return false;
    const next = await this.#it.next();
    if (next.done) {
      this.#ended = true;
      return false;
    }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
    this.#total += chunk.length;
    if (this.#total > this.#maxTotal) {
      throw new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `tar upload exceeds ${this.#maxTotal} bytes`);
    }
    if (chunk.length > 0) {
      this.#pending.push(chunk);
      this.#pendingLen += chunk.length;
    }
    return true;
  }

  /**
   * Lets go of the input when reading stops early (an invalid archive): an iterator left
   * suspended keeps the request body paused, and the server's drain before the error answer would
   * wait for its timeout.
   */
  async release(): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    await this.#it.return?.();
  }

  /** Exactly `n` bytes, or fewer only at the end of the input. */
  async read(n: number): Promise<Buffer> {
    while (this.#pendingLen < n && await this.#fill()) { /* keep filling */ }
    const all = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending, this.#pendingLen);
    const out = all.subarray(0, Math.min(n, all.length));
    const rest = all.subarray(out.length);
    this.#pending = rest.length ? [rest] : [];
    this.#pendingLen = rest.length;
    return out;
  }

  /** Up to `max` bytes as they come (at least one unless the input ended). */
  async chunk(max: number): Promise<Buffer> {
    if (this.#pendingLen === 0) await this.#fill();
    const first = this.#pending[0];
    if (!first) return Buffer.alloc(0);
    if (first.length <= max) {
      this.#pending.shift();
      this.#pendingLen -= first.length;
      return first;
    }
    this.#pending[0] = first.subarray(max);
    this.#pendingLen -= max;
    return first.subarray(0, max);
  }

  /** Reads and discards the rest of the input (trailing zero records after the end marker). */
  async drain(): Promise<void> {
    this.#pending = [];
    this.#pendingLen = 0;
    while (await this.#fill()) {
      this.#pending = [];
      this.#pendingLen = 0;
    }
  }
}

function cstring(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? field.length : nul).toString('utf8');
}

/** Octal ASCII (NUL/space terminated) or, when the high bit of the first byte is set, GNU base-256. */
function number(buf: Buffer, start: number, length: number, what: string): number {
  const field = buf.subarray(start, start + length);
  if (field[0]! & 0x80) {
    if (field[0] === 0xff) throw invalid(`negative ${what}`);
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    if (!Number.isSafeInteger(value)) throw invalid(`${what} too large`);
    return value;
  }
  const text = field.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[ ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw invalid(`${what} is not an octal number`);
  return parseInt(text, 8);
}

function checksumOk(header: Buffer): boolean {
  const stored = number(header, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : header[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b; // some old tars summed signed bytes
  }
  return stored === unsigned || stored === signed;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

/** pax records: "<len> <key>=<value>\n", len counting the whole record. */
function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) break; // padding some writers leave
    const space = data.indexOf(0x20, i);
    if (space === -1) throw invalid('malformed pax record');
    const len = Number(data.subarray(i, space).toString('latin1'));
    if (!Number.isInteger(len) || len <= space - i + 1 || i + len > data.length || data[i + len - 1] !== 0x0a) {
      throw invalid('malformed pax record length');
    }
    const record = data.subarray(space + 1, i + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq <= 0) throw invalid('malformed pax record');
    out.set(record.slice(0, eq), record.slice(eq + 1));
    i += len;
  }
  return out;
}

const padding = (size: number) => (BLOCK - (size % BLOCK)) % BLOCK;

/**
 * Yields the archive's entries. Every limit is checked from the header before any data is read,
 * and again on the bytes actually read. Metadata entries (pax, GNU long names) are applied to the
 * entry that follows them.
 */
export async function* readTar(input: AsyncIterable<Buffer>, limits: TarLimits): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(input, limits.maxTotalBytes);
  try {
    yield* entries(reader, limits);
  } finally {
    await reader.release();
  }
}

async function* entries(reader: ByteReader, limits: TarLimits): AsyncGenerator<TarEntry> {
  const maxMeta = limits.maxMetaBytes ?? 1024 * 1024;
  let entries = 0;
  let pax = new Map<string, string>();
  let longName: string | undefined;
  let longLink: string | undefined;

  const readMeta = async (size: number, what: string): Promise<Buffer> => {
    if (size > maxMeta) throw invalid(`${what} of ${size} bytes exceeds ${maxMeta}`);
    const data = await reader.read(size);
    if (data.length < size) throw invalid('archive ends inside an entry');
    const pad = await reader.read(padding(size));
    if (pad.length < padding(size)) throw invalid('archive ends inside an entry');
    return data;
  };

  for (;;) {
    const header = await reader.read(BLOCK);
    if (header.length === 0) throw invalid('archive ends without an end-of-archive marker');
    if (header.length < BLOCK) throw invalid('archive ends inside a header');
    if (isZeroBlock(header)) {
      // End of archive: two zero blocks; tolerate a single one followed by the end of input.
      const second = await reader.read(BLOCK);
      if (second.length > 0 && !isZeroBlock(second)) throw invalid('data after a zero block');
      await reader.drain();
      if (longName !== undefined || longLink !== undefined || pax.size) throw invalid('metadata entry without a following entry');
      return;
    }
    if (!checksumOk(header)) throw invalid('header checksum mismatch (not a tar stream, or corrupted)');
    const magic = header.subarray(257, 263).toString('latin1');
    const gnu = magic === 'ustar ' && header[263] === 0x20;
    if (!magic.startsWith('ustar')) throw invalid('not a ustar/pax/GNU archive (old v7 headers are not accepted)');
    const typeflag = String.fromCharCode(header[156]!);
    let size = number(header, 124, 12, 'size');

    if (typeflag === 'x' || typeflag === 'g') {
      const records = parsePax(await readMeta(size, 'pax header'));
      if (typeflag === 'x') pax = records; // global headers ('g') carry nothing we apply
      continue;
    }
    if (typeflag === 'L' || typeflag === 'K') {
      const value = cstring(await readMeta(size, 'GNU long name'), 0, size);
      if (typeflag === 'L') longName = value;
      else longLink = value;
      continue;
    }

    if (++entries > limits.maxEntries) throw invalid(`more than ${limits.maxEntries} entries`);
    const prefix = gnu ? '' : cstring(header, 345, 155);
    const name = cstring(header, 0, 100);
    let path = pax.get('path') ?? longName ?? (prefix ? `${prefix}/${name}` : name);
    const linkpath = pax.get('linkpath') ?? longLink ?? cstring(header, 157, 100);
    const paxSize = pax.get('size');
    if (paxSize !== undefined) {
      if (!/^\d+$/.test(paxSize)) throw invalid('pax size is not a number');
      size = Number(paxSize);
    }
    const paxMtime = pax.get('mtime');
    const mtimeSeconds = paxMtime !== undefined ? Number(paxMtime) : number(header, 136, 12, 'mtime');
    const mode = number(header, 100, 8, 'mode') & 0o7777;
    pax = new Map();
    longName = undefined;
    longLink = undefined;

    let type: TarEntryType;
    switch (typeflag) {
      case '0': case '\0': case '7': type = 'file'; break;
      case '5': type = 'directory'; break;
      case '2': type = 'symlink'; break;
      case '1': type = 'hardlink'; break;
      default:
        throw invalid(`entry ${JSON.stringify(path)} has type '${typeflag.replace(/\0/, '\\0')}' (devices, FIFOs and sparse files are not accepted)`);
    }
    if (type === 'directory' && path.endsWith('/')) path = path.replace(/\/+$/, '');
    if (path === '') throw invalid('entry with an empty name');
    if (type !== 'file') {
      if (size !== 0 && type !== 'directory') throw invalid(`${type} entry ${JSON.stringify(path)} carries data`);
      if (size !== 0) await readMeta(size, 'directory data'); // never written anywhere
      size = 0;
    }
    if (size > limits.maxEntryBytes) {
      throw new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `tar entry ${JSON.stringify(path)} is ${size} bytes; the limit is ${limits.maxEntryBytes}`);
    }

    let remaining = size;
    const body: AsyncIterable<Buffer> = {
      async *[Symbol.asyncIterator]() {
        while (remaining > 0) {
          const chunk = await reader.chunk(remaining);
          if (chunk.length === 0) throw invalid('archive ends inside a file');
          remaining -= chunk.length;
          yield chunk;
        }
      },
    };
    yield {
      path,
      type,
      size,
      mode,
      mtime: Number.isFinite(mtimeSeconds) ? new Date(mtimeSeconds * 1000) : undefined,
      linkpath,
      body,
    };
    // Skip whatever of the body the consumer did not read, then the padding.
    while (remaining > 0) {
      const chunk = await reader.chunk(remaining);
      if (chunk.length === 0) throw invalid('archive ends inside a file');
      remaining -= chunk.length;
    }
    const pad = await reader.read(padding(size));
    if (pad.length < padding(size)) throw invalid('archive ends inside padding');
  }
}
