// Header credentials: where their values come from and how they are formatted.
//
// A value from a file is re-read when the file changes, because Kubernetes rotates a mounted
// Secret in place (a new `..data` directory swapped in by symlink, so the visible path keeps its
// name but resolves to a new inode). Every value read is registered with the logger's SecretSet
// before it is used, so no log line can carry it, whatever field it slips into.
import { readFileSync, statSync } from 'node:fs';
import type { SecretSet } from '../lib/log.ts';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import type { CredentialSpec, SecretSource } from './credential-spec.ts';

type HeaderCredential = Extract<CredentialSpec, { type: 'header' }>;

/** How often a credential file is checked for a change at most (a stat, no read unless it changed). */
export const FILE_RECHECK_MS = 1000;

export interface SecretReaderOptions {
  /** The environment `{ env }` sources read (config.ts hands over the process's). */
  env: Readonly<Record<string, string | undefined>>;
  secrets: SecretSet;
  fileRecheckMs?: number;
  now?: () => number;
}

interface FileEntry {
  value: string;
  stamp: string;
  checkedAt: number;
}

export class SecretReader {
  readonly #env: Readonly<Record<string, string | undefined>>;
  readonly #secrets: SecretSet;
  readonly #recheckMs: number;
  readonly #now: () => number;
  readonly #files = new Map<string, FileEntry>();

  constructor(options: SecretReaderOptions) {
    this.#env = options.env;
    this.#secrets = options.secrets;
    this.#recheckMs = options.fileRecheckMs ?? FILE_RECHECK_MS;
    this.#now = options.now ?? Date.now;
  }

  /** The current value; throws WS_ERR_UNAVAILABLE (naming the source, never a value) when there is none. */
  read(source: SecretSource): string {
    let value: string;
    if ('env' in source) {
      const v = this.#env[source.env]?.trim();
      if (!v) throw unavailable(`environment variable ${source.env} is not set`);
      if (/[\r\n\0]/.test(v)) throw unavailable(`environment variable ${source.env} holds more than one line`);
      value = v;
    } else value = this.#readFile(source.file);
    this.#secrets.add(value);
    return value;
  }

  #readFile(path: string): string {
    const now = this.#now();
    const cached = this.#files.get(path);
    if (cached && now - cached.checkedAt < this.#recheckMs) return cached.value;
    let stamp: string;
    try {
      const st = statSync(path);
      stamp = `${st.ino}:${st.mtimeMs}:${st.size}`;
    } catch (err) {
      // A file that vanished mid-rotation: keep serving the last value rather than failing requests.
      if (cached) return cached.value;
      throw unavailable(`credential file ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (cached && cached.stamp === stamp) {
      cached.checkedAt = now;
      return cached.value;
    }
    let value: string;
    try {
      value = readFileSync(path, 'utf8').trim();
    } catch (err) {
      if (cached) return cached.value;
      throw unavailable(`credential file ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!value) {
      if (cached) return cached.value;
      throw unavailable(`credential file ${path} is empty`);
    }
    if (/[\r\n\0]/.test(value)) throw unavailable(`credential file ${path} holds more than one line`);
    this.#files.set(path, { value, stamp, checkedAt: now });
    return value;
  }
}

function unavailable(message: string): WorkspaceSandboxError {
  return new WorkspaceSandboxError('WS_ERR_UNAVAILABLE', `credential unavailable: ${message}`);
}

/** `format` with `{value}` replaced; the header value the upstream receives. */
export function formatHeaderValue(spec: HeaderCredential, value: string): string {
  return spec.format ? spec.format.split('{value}').join(value) : value;
}

/** The header to add for a `header` credential. */
export function headerCredential(spec: HeaderCredential, reader: SecretReader): { name: string; value: string } {
  const value = formatHeaderValue(spec, reader.read(spec.value));
  if (/[\r\n\0]/.test(value)) throw unavailable(`the ${spec.name} value contains a line break`);
  return { name: spec.name, value };
}
