// The per-pod CA across sidecar restarts. A restarted sidecar that made a new CA would break every
// workspace process that loaded the old one (it trusts ca.crt as read at its start), so with a
// state dir (PROXY_STATE_DIR: a memory-backed volume mounted into the sidecar alone, which lives
// exactly as long as the Pod) the CA's certificate and key are kept there and reused while valid.
// The key never leaves the sidecar's own volume: the workspace cannot read it, and it is gone
// with the Pod. Without a state dir the CA is made per process, as before.
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { keyMatchesCertificate, loadCA, type CertificateAuthority } from '../lib/certs.ts';

export const CA_STATE_CERT = 'ca.crt';
export const CA_STATE_KEY = 'ca.key';
/** A kept CA with less than this left is replaced: leaves minted now must not outlive it. */
export const CA_MIN_REMAINING_MS = 10 * 60_000;

export type CAOrigin = 'created' | 'reused';

async function writePrivate(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** The CA kept in `dir` when it is whole, matches its key and has time left; undefined otherwise. */
export async function readKeptCA(dir: string, now = Date.now()): Promise<CertificateAuthority | undefined> {
  let certPem: string;
  let keyPem: string;
  try {
    [certPem, keyPem] = await Promise.all([readFile(join(dir, CA_STATE_CERT), 'utf8'), readFile(join(dir, CA_STATE_KEY), 'utf8')]);
  } catch {
    return undefined;
  }
  try {
    if (!keyMatchesCertificate(certPem, keyPem)) return undefined;
    const ca = loadCA(certPem, keyPem);
    return ca.notAfter.getTime() - now > CA_MIN_REMAINING_MS ? ca : undefined;
  } catch {
    return undefined; // unreadable: replaced below
  }
}

/**
 * The CA to use: the one kept in `dir` if any is usable, else a new one from `create`, kept there
 * (key first, mode 0600; each file appears whole, by rename) before it is used.
 */
export async function loadOrCreateCA(dir: string, create: () => CertificateAuthority | Promise<CertificateAuthority>): Promise<{ ca: CertificateAuthority; origin: CAOrigin }> {
  const kept = await readKeptCA(dir);
  if (kept) return { ca: kept, origin: 'reused' };
  const ca = await create();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await rm(join(dir, CA_STATE_CERT), { force: true });
  await writePrivate(join(dir, CA_STATE_KEY), ca.keyPair.privateKeyPem);
  await writePrivate(join(dir, CA_STATE_CERT), ca.certPem);
  return { ca, origin: 'created' };
}
