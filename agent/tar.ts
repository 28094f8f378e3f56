// The batch upload of /files reads its tar stream with tar-stream (ustar, pax extended headers as
// Python's tarfile writes them, GNU long names as GNU tar writes them). This module only adapts it
// to the upload's rules: the size and count limits, the entry types a workspace takes, and errors
// that say what was wrong. Nothing here touches the filesystem: entries come out with their raw
// path, and files.ts decides where (and whether) they land.
//
// Memory stays bounded: the input is written with backpressure (tar-stream keeps at most one chunk
// ahead of the entry being read), and a pax header or GNU long name is held whole only up to
// tar-stream's own cap of 4 MiB (`MAX_HEADER_SIZE` in its extract.js).
import tarStream from 'tar-stream';
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
  /** Largest path or link target taken from a pax header or GNU long name. */
  maxMetaBytes?: number;
}

function invalid(message: string): WorkspaceSandboxError {
  return new WorkspaceSandboxError('WS_ERR_INVALID_TAR', `invalid tar upload: ${message}`);
}

/** tar-stream throws plain Errors ("Invalid tar header...", "Unexpected end of data"): a 400 with its words. */
function asTarError(err: unknown): unknown {
  if (err instanceof WorkspaceSandboxError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return invalid(message.replace(/^Invalid tar header\. Maybe the tar is corrupted or it needs to be gunzipped\?$/, 'header checksum mismatch (not a tar stream, or corrupted)')
    .replace(/^Invalid tar header: unknown format\.$/, 'not a ustar/pax/GNU archive (old v7 headers are not accepted)')
    .replace(/^Unexpected end of data$/, 'archive ends inside an entry'));
}

const TYPES: Record<string, TarEntryType | undefined> = {
  'file': 'file',
  'contiguous-file': 'file',
  'directory': 'directory',
  'symlink': 'symlink',
  'link': 'hardlink',
};

/** Resolves once the extractor takes more input, or is gone. */
function drained(w: tarStream.Extract): Promise<void> {
  return new Promise((resolve) => {
    const go = () => {
      w.off('drain', go);
      w.off('close', go);
      resolve();
    };
    w.on('drain', go);
    w.on('close', go);
  });
}

const isZero = (buf: Buffer) => buf.every((b) => b === 0);
const padded = (size: number) => Math.ceil(size / BLOCK) * BLOCK;

/**
 * Yields the archive's entries. Every limit is checked from the header before any data is read,
 * and the total again on the bytes actually read.
 */
export async function* readTar(input: AsyncIterable<Buffer>, limits: TarLimits): AsyncGenerator<TarEntry> {
  const maxMeta = limits.maxMetaBytes ?? 1024 * 1024;
  const extract = tarStream.extract();
  const source = input[Symbol.asyncIterator]();
  let total = 0;
  let tail: Buffer = Buffer.alloc(0); // the input's last block: the end-of-archive marker, if any
  let done = false;

  // Feeds the input with backpressure; a limit or an input error destroys the extractor, which
  // ends the iteration below with that error.
  const pump = (async () => {
    try {
      while (!done) {
        const next = await source.next();
        if (next.done || done) break;
        const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
        total += chunk.length;
        if (total > limits.maxTotalBytes) {
          throw new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `tar upload exceeds ${limits.maxTotalBytes} bytes`);
        }
        tail = chunk.length >= BLOCK ? chunk.subarray(chunk.length - BLOCK) : Buffer.concat([tail, chunk]).subarray(-BLOCK);
        if (!extract.write(chunk)) await drained(extract);
      }
      if (!done) extract.end(undefined); // (streamx types want an argument; undefined writes nothing)
    } catch (err) {
      extract.destroy(err as Error);
    }
  })();

  let entries = 0;
  let end = 0; // where the last entry (with its padding) ends
  const iterator = extract[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: Awaited<ReturnType<typeof iterator.next>>;
      try {
        next = await iterator.next();
      } catch (err) {
        throw asTarError(err);
      }
      if (next.done) break;
      const stream = next.value;
      const h = stream.header;
      const pax = (h.pax ?? {}) as Record<string, string>;
      let path = h.name;
      const linkpath = h.linkname ?? '';
      const type = TYPES[h.type ?? ''];
      if (!type) {
        throw invalid(`entry ${JSON.stringify(path)} has type ${h.type ? `'${h.type}'` : 'unknown'} (devices, FIFOs and sparse files are not accepted)`);
      }
      if (++entries > limits.maxEntries) throw invalid(`more than ${limits.maxEntries} entries`);
      if (Buffer.byteLength(path) > maxMeta || Buffer.byteLength(linkpath) > maxMeta) throw invalid(`a name of more than ${maxMeta} bytes`);
      if (pax.size !== undefined && !/^\d+$/.test(pax.size)) throw invalid('pax size is not a number');
      let size = h.size;
      end = stream.offset + BLOCK + padded(size);
      if (type === 'directory') path = path.replace(/\/+$/, '');
      if (path === '') throw invalid('entry with an empty name');
      if (type !== 'file') {
        if (size !== 0 && type !== 'directory') throw invalid(`${type} entry ${JSON.stringify(path)} carries data`);
        size = 0;
      }
      if (size > limits.maxEntryBytes) {
        throw new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `tar entry ${JSON.stringify(path)} is ${size} bytes; the limit is ${limits.maxEntryBytes}`);
      }
      const mtimeSeconds = pax.mtime !== undefined ? Number(pax.mtime) : h.mtime.getTime() / 1000;

      // The body is read through its own iterator, never returned early: returning a tar-stream
      // entry destroys the whole extractor, and the rest of the archive must still be read.
      const chunks = stream[Symbol.asyncIterator]();
      const read = async (): Promise<Buffer | undefined> => {
        try {
          const r = await chunks.next();
          return r.done ? undefined : r.value as Buffer;
        } catch (err) {
          throw asTarError(err);
        }
      };
      yield {
        path,
        type,
        size,
        mode: h.mode & 0o7777,
        mtime: Number.isFinite(mtimeSeconds) ? new Date(mtimeSeconds * 1000) : undefined,
        linkpath,
        body: { async *[Symbol.asyncIterator]() { for (let c = await read(); c; c = await read()) yield c; } },
      };
      // Skip whatever of the body the consumer did not read.
      while (await read()) { /* discard */ }
    }
    // tar-stream takes an archive that stops at an entry's end; a truncated upload must not pass
    // as complete, so the input has to end with a zero block after the last entry.
    if (total === 0 || total <= end || !isZero(tail)) throw invalid('archive ends without an end-of-archive marker');
  } finally {
    done = true;
    extract.destroy();
    await pump;
    // Lets go of the input when reading stops early: an iterator left suspended keeps the request
    // body paused, and the server's drain before the error answer would wait for its timeout.
    await source.return?.();
  }
}
