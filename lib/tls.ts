// Serving key pair from files, reloaded on change without a restart.
//
// Kubernetes updates a mounted Secret by writing a new timestamped directory and atomically
// swapping the `..data` symlink (see kubernetes pkg/volume/util/atomic_writer.go); the visible
// `tls.crt` is a symlink through `..data`. So we watch the *directory* (the file's inode never
// changes, a watch on it would miss the swap), re-read both files, and only switch when the pair is
// complete and the key matches the certificate. A periodic poll backs up fs.watch, which can drop
// events on some filesystems.
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import { certificateNotAfter, keyMatchesCertificate } from './certs.ts';
import { WorkspaceSandboxError } from './errors.ts';
import { ReloadSchedule, type ReloadScheduleOptions } from './watch.ts';

export interface KeyPairFiles {
  certFile: string;
  keyFile: string;
}

export interface LoadedKeyPair {
  cert: Buffer;
  key: Buffer;
  notAfter: Date;
}

function checkPair(cert: Buffer, key: Buffer, files: KeyPairFiles): LoadedKeyPair {
  let notAfter: Date;
  try {
    notAfter = certificateNotAfter(cert);
  } catch (err) {
    throw new WorkspaceSandboxError('WS_ERR_TLS', `${files.certFile} is not a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
  if (!keyMatchesCertificate(cert, key)) {
    throw new WorkspaceSandboxError('WS_ERR_TLS', `${files.keyFile} is not the private key of ${files.certFile}`);
  }
  return { cert, key, notAfter };
}

function readError(err: unknown, files: KeyPairFiles): WorkspaceSandboxError {
  return new WorkspaceSandboxError('WS_ERR_TLS', `cannot read TLS key pair ${files.certFile}, ${files.keyFile}: ${(err as Error).message}`, { cause: err });
}

/** Reads and checks a key pair synchronously (start-up). */
export function loadKeyPairSync(files: KeyPairFiles): LoadedKeyPair {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = readFileSync(files.certFile);
    key = readFileSync(files.keyFile);
  } catch (err) {
    throw readError(err, files);
  }
  return checkPair(cert, key, files);
}

export async function loadKeyPair(files: KeyPairFiles): Promise<LoadedKeyPair> {
  let cert: Buffer;
  let key: Buffer;
  try {
    [cert, key] = await Promise.all([readFile(files.certFile), readFile(files.keyFile)]);
  } catch (err) {
    throw readError(err, files);
  }
  return checkPair(cert, key, files);
}

export interface KeyPairWatcherEvents {
  reload: [LoadedKeyPair];
  reloadFailed: [Error];
}

/**
 * Holds the current pair, re-reads it on change and pushes it into attached TLS servers.
 * Emits `reload` after a switch and `reloadFailed` when a changed pair is unusable (the old pair stays).
 */
export class KeyPairWatcher extends EventEmitter<KeyPairWatcherEvents> {
  readonly files: KeyPairFiles;
  #current: LoadedKeyPair;
  #servers = new Set<TlsServer>();
  readonly #schedule: ReloadSchedule;

  constructor(files: KeyPairFiles, options: ReloadScheduleOptions = {}) {
    super();
    this.files = files;
    this.#current = loadKeyPairSync(files);
    this.#schedule = new ReloadSchedule([dirname(files.certFile), dirname(files.keyFile)], () => this.#reloadNow(), options);
  }

  get current(): LoadedKeyPair {
    return this.#current;
  }

  get notAfter(): Date {
    return this.#current.notAfter;
  }

  /** Serves the current pair on `server` and every future one. */
  attach(server: TlsServer): void {
    this.#servers.add(server);
    server.setSecureContext({ cert: this.#current.cert, key: this.#current.key });
    server.once('close', () => this.#servers.delete(server));
  }

  /** Re-reads the files now, after any reload in progress; resolves once done (a no-op when nothing changed). */
  reload(): Promise<void> {
    return this.#schedule.run();
  }

  async #reloadNow(): Promise<void> {
    let next: LoadedKeyPair;
    try {
      next = await loadKeyPair(this.files);
    } catch (err) {
      if (!this.#schedule.closed) this.emit('reloadFailed', err as Error);
      return;
    }
    if (next.cert.equals(this.#current.cert) && next.key.equals(this.#current.key)) return;
    this.#current = next;
    for (const s of this.#servers) s.setSecureContext({ cert: next.cert, key: next.key });
    this.emit('reload', next);
  }

  close(): void {
    this.#schedule.close();
    this.#servers.clear();
  }
}
