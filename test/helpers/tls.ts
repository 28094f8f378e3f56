// Test PKI made at test time (never committed keys): a CA and a leaf for localhost.
import { createCA, issueCertificate, type CertificateAuthority } from '../../lib/certs.ts';

export interface TestPki {
  ca: CertificateAuthority;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** Another leaf from the same CA: what a rotation swaps in. */
  issue(hosts?: string[], commonName?: string): { certPem: string; keyPem: string };
}

export function makeTestPki(hosts: string[] = ['localhost', '127.0.0.1', '::1']): TestPki {
  const ca = createCA({ commonName: 'workspace-sandbox test CA', validityMs: 24 * 3600_000 });
  const issue = (h: string[] = hosts, commonName?: string) => {
    const leaf = issueCertificate(ca, { hosts: h, validityMs: 3600_000, ...(commonName ? { commonName } : {}) });
    return { certPem: leaf.certPem, keyPem: leaf.keyPem };
  };
  const first = issue();
  return { ca, caPem: ca.certPem, certPem: first.certPem, keyPem: first.keyPem, issue };
}
