// The workspace's files as the backend sees them: every path is relative to the workspace root and
// must stay inside it after every symlink on the way is resolved. The walk goes one component at a
// time from the (real) root, resolving each symlink and checking where it lands, so a symlink in a
// parent directory cannot carry a write outside. Commands run as the same user in the same
// container and could swap a directory for a symlink between the check and the use; the
// confinement guards the API (paths chosen by a model or a user), not a hostile concurrent process.
import { constants as fsc, realpathSync } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, realpath, rename, rm, rmdir, stat, symlink, unlink, chmod, utimes, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { readTar, type TarLimits } from './tar.ts';

export interface FileEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  /** Permission bits as four octal digits, e.g. "0644". */
  mode: string;
  mtime: string;
}

export interface UploadSummary {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
}

const escape = (path: string, why: string) => new WorkspaceSandboxError('WS_ERR_PATH_ESCAPE', `path ${JSON.stringify(path)} ${why}`);
const notFound = (path: string) => new WorkspaceSandboxError('WS_ERR_NOT_FOUND', `${JSON.stringify(path)} does not exist`);
const conflict = (path: string, why: string) => new WorkspaceSandboxError('WS_ERR_CONFLICT', `${JSON.stringify(path)} ${why}`);

export const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');

function typeOf(st: Stats): FileEntry['type'] {
  return st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** Linux's limits (limits.h): bytes in one name, bytes in a path handed to a system call. */
export const NAME_MAX = 255;
export const PATH_MAX = 4096;

/**
 * Splits a request path into components: absolute paths and `..` are refused, `.` and empty ones
 * dropped; a name or path longer than the kernel takes is a 400 here rather than an
 * ENAMETOOLONG from deep inside a file operation.
 */
export function pathSegments(path: string): string[] {
  if (path.includes('\0')) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'path must not contain NUL characters');
  if (path.startsWith('/')) throw escape(path, 'is absolute; paths are relative to the workspace root');
  if (Buffer.byteLength(path) > PATH_MAX) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', `path is longer than ${PATH_MAX} bytes`);
  const segments = path.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw escape(path, 'contains ".."; paths must stay inside the workspace');
  if (segments.some((s) => Buffer.byteLength(s) > NAME_MAX)) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', `path has a name longer than ${NAME_MAX} bytes`);
  return segments;
}

/**
 * The API's answer for a file-system error that reached the HTTP layer: what the request asked for
 * cannot be done (the path's or the permissions' fault, not a bug), so only errors nobody expected
 * (a full disk among them) stay 500.
 */
export function fileSystemError(err: unknown, path: string): unknown {
  switch (errno(err)) {
    case 'ENAMETOOLONG': return new WorkspaceSandboxError('WS_ERR_VALIDATION', `${JSON.stringify(path)} is too long for the file system`);
    case 'ENOENT': return notFound(path);
    case 'ENOTDIR': return conflict(path, 'has a parent that is not a directory');
    case 'EISDIR': return conflict(path, 'is a directory');
    case 'EEXIST': case 'ENOTEMPTY': return conflict(path, 'already exists');
    case 'ELOOP': return escape(path, 'goes through a symlink');
    case 'EACCES': case 'EPERM': case 'EROFS': return new WorkspaceSandboxError('WS_ERR_FORBIDDEN', `${JSON.stringify(path)}: ${errno(err) === 'EROFS' ? 'read-only file system' : 'permission denied'}`);
    default: return err;
  }
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let off = 0;
  while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
}

export class Workspace {
  /** The root with its own symlinks resolved: every real path below must start with it. */
  readonly root: string;

  constructor(root: string) {
    this.root = realpathSync(root);
  }

  inside(real: string): boolean {
    return this.root === '/' || real === this.root || real.startsWith(`${this.root}/`);
  }

  /**
   * Walks `segments` as directories from the root, following (and checking) symlinks; with
   * `create`, missing directories are made. Returns the real path of the last directory.
   */
  async #walkDirs(shown: string, segments: readonly string[], create: boolean): Promise<string> {
    let cur = this.root;
    for (const seg of segments) {
      const next = `${cur === '/' ? '' : cur}/${seg}`;
      let st: Stats;
      try {
        st = await lstat(next);
      } catch (err) {
        if (errno(err) !== 'ENOENT' || !create) throw errno(err) === 'ENOENT' ? notFound(shown) : err;
        try {
          await mkdir(next, { mode: 0o755 });
        } catch (e) {
          if (errno(e) !== 'EEXIST') throw e;
        }
        st = await lstat(next);
      }
      if (st.isSymbolicLink()) {
        const real = await this.#realpathInside(shown, next);
        if (!(await stat(real)).isDirectory()) throw conflict(shown, 'has a parent that is not a directory');
        cur = real;
      } else if (st.isDirectory()) {
        cur = next;
      } else {
        throw conflict(shown, 'has a parent that is not a directory');
      }
    }
    return cur;
  }

  async #realpathInside(shown: string, path: string): Promise<string> {
    let real: string;
    try {
      real = await realpath(path);
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ELOOP') throw escape(shown, 'goes through a dangling or looping symlink');
      throw err;
    }
    if (!this.inside(real)) throw escape(shown, 'resolves outside the workspace through a symlink');
    return real;
  }

  /**
   * Where an opened file really is, from the kernel (/proc/self/fd): a directory swapped for a
   * symlink between the checks and the open shows here as a path outside the root, and the
   * operation is refused (`cleanup` first) instead of reading or writing outside.
   */
  async #openedInside(shown: string, handle: FileHandle, cleanup?: (outside: string) => Promise<unknown>): Promise<void> {
    let real: string;
    try {
      real = await readlink(`/proc/self/fd/${handle.fd}`);
    } catch {
      return; // no /proc: the walk's checks are all there is
    }
    if (this.inside(real)) return;
    await cleanup?.(real);
    await handle.close();
    throw escape(shown, 'was swapped for a path outside the workspace while it was opened');
  }

  /** The last segment's own path and lstat (a final symlink is not followed); absent → 404. */
  async #lstatLast(path: string, segs: string[]): Promise<{ full: string; st: Stats }> {
    const dir = await this.#walkDirs(path, segs.slice(0, -1), false);
    const full = `${dir === '/' ? '' : dir}/${segs.at(-1)!}`;
    try {
      return { full, st: await lstat(full) };
    } catch (err) {
      if (errno(err) === 'ENOENT') throw notFound(path);
      throw err;
    }
  }

  /** The real path of an existing file or directory (following a final symlink, checked). */
  async resolveExisting(path: string): Promise<{ real: string; stats: Stats }> {
    const segs = pathSegments(path);
    if (segs.length === 0) return { real: this.root, stats: await stat(this.root) };
    const { full, st } = await this.#lstatLast(path, segs);
    if (!st.isSymbolicLink()) return { real: full, stats: st };
    const real = await this.#realpathInside(path, full);
    return { real, stats: await stat(real) };
  }

  /** Opens a regular file for streaming; refuses directories, devices and FIFOs (which could block). */
  async openForRead(path: string): Promise<{ handle: FileHandle; size: number; mode: number; mtime: Date }> {
    const { real, stats } = await this.resolveExisting(path);
    if (stats.isDirectory()) throw conflict(path, 'is a directory; list it with ?list');
    if (!stats.isFile()) throw conflict(path, 'is not a regular file');
    const handle = await open(real, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    await this.#openedInside(path, handle);
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      throw conflict(path, 'is not a regular file');
    }
    return { handle, size: st.size, mode: st.mode & 0o7777, mtime: st.mtime };
  }

  async list(path: string): Promise<FileEntry[]> {
    const { real, stats } = await this.resolveExisting(path);
    if (!stats.isDirectory()) throw conflict(path, 'is not a directory');
    const names = await readdir(real);
    const entries: FileEntry[] = [];
    await Promise.all(names.map(async (name) => {
      try {
        const st = await lstat(`${real === '/' ? '' : real}/${name}`);
        entries.push({ name, type: typeOf(st), size: st.size, mode: octal(st.mode), mtime: st.mtime.toISOString() });
      } catch {
        // Removed while listing.
      }
    }));
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Writes a file atomically: the body goes to a temporary file in the target's directory, which
   * is renamed over the target only once complete, so readers never see half a file. Missing
   * parent directories are created. An existing symlink inside the workspace is written through.
   */
  async writeFile(path: string, body: AsyncIterable<Buffer | Uint8Array>, options: { mode?: number; maxBytes: number; mtime?: Date }): Promise<{ created: boolean; size: number; mode: number }> {
    const segs = pathSegments(path);
    if (segs.length === 0) throw conflict(path || '.', 'is the workspace root');
    const dir = await this.#walkDirs(path, segs.slice(0, -1), true);
    let target = `${dir === '/' ? '' : dir}/${segs.at(-1)!}`;
    let existing: Stats | undefined;
    try {
      existing = await lstat(target);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
    if (existing?.isSymbolicLink()) {
      target = await this.#realpathInside(path, target);
      existing = await stat(target);
    }
    if (existing?.isDirectory()) throw conflict(path, 'is a directory');
    const mode = (options.mode ?? (existing ? existing.mode : 0o644)) & 0o777;
    const tmp = `${dirname(target)}/.ws-upload-${randomBytes(6).toString('hex')}.tmp`;
    const handle = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    let size = 0;
    try {
      // The rename below names the temporary file through the same directory: if a swap carried
      // the open outside, that name does not exist inside and the rename fails.
      await this.#openedInside(path, handle, (outside) => unlink(outside).catch(() => {}));
      for await (const chunk of body) {
        size += chunk.length;
        if (size > options.maxBytes) {
          throw new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `${JSON.stringify(path)} exceeds the file size limit of ${options.maxBytes} bytes`);
        }
        await writeAll(handle, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
      }
      await handle.chmod(mode); // explicit: the open mode is filtered by the umask
      if (options.mtime) await handle.utimes(options.mtime, options.mtime);
      await handle.close();
      await rename(tmp, target);
    } catch (err) {
      await handle.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw err;
    }
    return { created: existing === undefined, size, mode };
  }

  /** Removes a file or symlink (the link itself, never its target); directories need `recursive`. */
  async remove(path: string, recursive: boolean): Promise<void> {
    const segs = pathSegments(path);
    if (segs.length === 0) throw conflict('.', 'is the workspace root and cannot be deleted');
    const { full, st } = await this.#lstatLast(path, segs);
    if (!st.isDirectory()) return unlink(full);
    // rm does not follow symlinks inside the tree: it removes the links.
    if (recursive) return rm(full, { recursive: true, force: false });
    try {
      await rmdir(full);
    } catch (err) {
      if (errno(err) === 'ENOTEMPTY' || errno(err) === 'EEXIST') throw conflict(path, 'is a non-empty directory; use ?recursive');
      throw err;
    }
  }

  /**
   * Extracts a tar stream below `path` (created when missing). Every entry is confined like a
   * single upload; files are written atomically one by one, so a failure part-way leaves complete
   * files only (those before the bad entry). Symlinks are created only when their target stays
   * inside the workspace; hard links are refused.
   */
  async extractTar(path: string, input: AsyncIterable<Buffer>, limits: TarLimits): Promise<UploadSummary> {
    const base = pathSegments(path);
    await this.#walkDirs(path || '.', base, true);
    const summary: UploadSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
    const dirModes: { dir: string; mode: number; mtime?: Date }[] = [];
    for await (const entry of readTar(input, limits)) {
      const rel = [...base, ...pathSegments(entry.path)];
      const shown = entry.path;
      if (rel.length === base.length) {
        if (entry.type === 'directory') continue; // "./" entry: the base itself
        throw escape(shown, 'names the upload directory itself');
      }
      switch (entry.type) {
        case 'file': {
          const r = await this.writeFile(rel.join('/'), entry.body, { mode: entry.mode, maxBytes: limits.maxEntryBytes, mtime: entry.mtime });
          summary.files++;
          summary.bytes += r.size;
          break;
        }
        case 'directory': {
          const dir = await this.#walkDirs(shown, rel, true);
          // Applied at the end, like tar does: a read-only directory must not block its own files.
          dirModes.push({ dir, mode: entry.mode & 0o777, mtime: entry.mtime });
          summary.directories++;
          break;
        }
        case 'symlink':
          await this.#createSymlink(shown, rel, entry.linkpath);
          summary.symlinks++;
          break;
        case 'hardlink':
          throw new WorkspaceSandboxError('WS_ERR_INVALID_TAR', `invalid tar upload: hard link entry ${JSON.stringify(shown)} is not accepted`);
      }
    }
    for (const d of dirModes.reverse()) {
      await chmod(d.dir, d.mode | 0o700).catch(() => {});
      if (d.mtime) await utimes(d.dir, d.mtime, d.mtime).catch(() => {});
    }
    return summary;
  }

  async #createSymlink(shown: string, rel: string[], linkpath: string): Promise<void> {
    if (linkpath === '' || linkpath.includes('\0')) throw new WorkspaceSandboxError('WS_ERR_INVALID_TAR', `invalid tar upload: symlink ${JSON.stringify(shown)} has no target`);
    if (linkpath.startsWith('/')) throw escape(shown, `is a symlink to the absolute path ${JSON.stringify(linkpath)}`);
    // `..` only at the start: after a name it climbs out of whatever that name resolves to, which a
    // link (`k/up -> ..`, then `k/esc -> up/..`) makes a different place than the text says.
    const parts = linkpath.split('/').filter((p) => p !== '' && p !== '.');
    const firstName = parts.findIndex((p) => p !== '..');
    if (firstName !== -1 && parts.lastIndexOf('..') > firstName) {
      throw escape(shown, `is a symlink to ${JSON.stringify(linkpath)}: ".." after a name could climb out through another link`);
    }
    const dir = await this.#walkDirs(shown, rel.slice(0, -1), true);
    // The target, resolved from where the link lives, must stay inside (lexically here; every
    // later use of the link is resolved and checked again).
    if (!this.inside(resolvePath(dir, linkpath))) throw escape(shown, `is a symlink to ${JSON.stringify(linkpath)}, outside the workspace`);
    const full = `${dir === '/' ? '' : dir}/${rel.at(-1)!}`;
    let existing: Stats | undefined;
    try {
      existing = await lstat(full);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
    if (existing?.isDirectory()) throw conflict(shown, 'is a directory and cannot become a symlink');
    if (existing?.isSymbolicLink() && (await readlink(full)) === linkpath) return;
    const tmp = `${dir === '/' ? '' : dir}/.ws-link-${randomBytes(6).toString('hex')}.tmp`;
    await symlink(linkpath, tmp);
    try {
      await rename(tmp, full);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }
}
