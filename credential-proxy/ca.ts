// The per-pod ephemeral CA that signs the leaves of intercepted hosts.
//
// Made at start; the key stays in this process and in the sidecar's own state volume (so a restarted
// sidecar keeps the CA the workspace trusts; ca-state.ts), never in the volume the workspace
// shares, so a leaked `ca.crt` lets nobody impersonate a host to this pod, and no other pod trusts it. The workspace
// trusts it through the files written into the shared volume (the webhook points SSL_CERT_FILE,
// REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, AWS_CA_BUNDLE, GIT_SSL_CAINFO at the bundle and
// NODE_EXTRA_CA_CERTS at ca.crt).
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CA_BUNDLE_FILE, CA_CERT_FILE, PRODUCT } from '../lib/constants.ts';
import { createCA, type CertificateAuthority } from '../lib/certs.ts';

/** The webhook's pod deadline is 4 h; the CA outlives it a little so no leaf expires in a live pod. */
export const CA_VALIDITY_MS = 4.5 * 3600_000;

/** Where Linux distributions keep the system trust bundle (Debian/Alpine, RHEL/AL2023, others). */
export const SYSTEM_BUNDLE_CANDIDATES = Object.freeze([
  '/etc/ssl/certs/ca-certificates.crt',
  '/etc/pki/tls/certs/ca-bundle.crt',
  '/etc/ssl/cert.pem',
]);

export interface PodCAOptions {
  /** Names the pod in the subject, so a person inspecting a chain sees whose CA it is. */
  podName: string;
  validityMs?: number;
}

/** An ECDSA P-256 CA: its key is made in well under a millisecond, so the CA is ready as the listeners are. */
export function createPodCA(options: PodCAOptions): CertificateAuthority {
  // CN is limited to 64 characters (RFC 5280 ub-common-name); pod names can be 253.
  const commonName = `${PRODUCT} proxy CA ${options.podName}`.slice(0, 64);
  return createCA({ commonName, organization: PRODUCT, validityMs: options.validityMs ?? CA_VALIDITY_MS });
}

/**
 * The trust bundle the workspace's tools use in place of the system one: the image's system bundle
 * when there is one, else Node's bundled Mozilla roots (distroless images have no bundle).
 */
export function systemTrustBundle(candidates: readonly string[] = SYSTEM_BUNDLE_CANDIDATES): string {
  for (const path of candidates) {
    if (!existsSync(path)) continue;
    try {
      const text = readFileSync(path, 'utf8');
      if (text.includes('-----BEGIN CERTIFICATE-----')) return text;
    } catch {
      // unreadable: try the next one
    }
  }
  return process.getBuiltinModule('node:tls').rootCertificates.join('\n') + '\n';
}

export interface CAFiles {
  readonly certFile: string;
  readonly bundleFile: string;
}

/** The PEM certificate blocks of `text`, and nothing else (never a key that shares the file). */
export function certificateBlocks(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Writes `ca.crt` and `ca-bundle.crt` into `dir`. Each appears whole or not at all (temp file in the
 * same directory, then rename): a workspace process starting while the proxy restarts never reads
 * half a bundle. `upstreamCAs` (the certificates of UPSTREAM_CA_FILE: a private corporate CA the
 * proxy trusts for upstreams) go into the bundle too, because the workspace's own clients need them
 * for plain tunnels to the same upstreams.
 */
export async function writeCAFiles(dir: string, caPem: string, systemBundle: string, upstreamCAs = ''): Promise<CAFiles> {
  await mkdir(dir, { recursive: true });
  const certFile = join(dir, CA_CERT_FILE);
  const bundleFile = join(dir, CA_BUNDLE_FILE);
  const upstream = certificateBlocks(upstreamCAs);
  const bundle = [
    `${systemBundle.trimEnd()}\n`,
    ...(upstream.length > 0 ? [`# ${PRODUCT}: upstream CAs (UPSTREAM_CA_FILE)\n${upstream.join('\n')}\n`] : []),
    `# ${PRODUCT} per-pod proxy CA\n${caPem.trimEnd()}\n`,
  ].join('\n');
  await writeAtomically(certFile, caPem.trimEnd() + '\n');
  await writeAtomically(bundleFile, bundle);
  return { certFile, bundleFile };
}

async function writeAtomically(path: string, content: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeFile(tmp, content, { mode: 0o644 });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
