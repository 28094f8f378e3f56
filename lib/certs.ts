// X.509 building for the dev TLS pair, test CAs and (later) the proxy's per-pod CA.
// node-forge builds the certificate structure; node:crypto makes keys and signs the TBS bytes,
// because forge's pure-JS RSA signing is ~80x slower (see shared TOOLCHAIN notes).
import { createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';

const { pki, asn1 } = forge;
// Public in node-forge, missing from @types/node-forge.
const getTBSCertificate = (pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate;

/** A key pair usable by node:crypto (signing, TLS) and by forge (certificate building). */
export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly privateKeyPem: string;
  readonly forgePublicKey: forge.pki.PublicKey;
}

export function createKeyPair(bits = 2048): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return {
    privateKey,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    forgePublicKey: pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString()),
  };
}

export interface CertificateAuthority {
  readonly certPem: string;
  readonly keyPair: KeyPair;
  readonly notAfter: Date;
  /** Subject attributes and key identifier, reused as issuer/AKI of every leaf. */
  readonly subject: forge.pki.CertificateField[];
  readonly keyIdentifier: string;
}

export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  readonly notAfter: Date;
}

const SKEW_MS = 5 * 60_000; // notBefore in the past tolerates clock skew between pod and client

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // positive INTEGER
  return bytes.toString('hex');
}

function signWith(cert: forge.pki.Certificate, signer: KeyObject): string {
  cert.signatureOid = pki.oids.sha256WithRSAEncryption!;
  cert.siginfo.algorithmOid = pki.oids.sha256WithRSAEncryption!;
  const tbs = getTBSCertificate(cert);
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  const der = Buffer.from(asn1.toDer(tbs).getBytes(), 'binary');
  cert.signature = sign('sha256', der, signer).toString('binary');
  return pki.certificateToPem(cert);
}

export interface CAOptions {
  commonName: string;
  organization?: string;
  validityMs: number;
  keyPair?: KeyPair;
}

export function createCA(options: CAOptions): CertificateAuthority {
  const keyPair = options.keyPair ?? createKeyPair();
  const cert = pki.createCertificate();
  const now = Date.now();
  cert.publicKey = keyPair.forgePublicKey;
  cert.serialNumber = serialNumber();
  cert.validity.notBefore = new Date(now - SKEW_MS);
  cert.validity.notAfter = new Date(now + options.validityMs);
  const subject: forge.pki.CertificateField[] = [{ name: 'commonName', value: options.commonName }];
  if (options.organization) subject.push({ name: 'organizationName', value: options.organization });
  cert.setSubject(subject);
  cert.setIssuer(subject);
  const keyIdentifier = cert.generateSubjectKeyIdentifier().getBytes();
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier', subjectKeyIdentifier: forge.util.bytesToHex(keyIdentifier) },
  ]);
  const certPem = signWith(cert, keyPair.privateKey);
  return { certPem, keyPair, notAfter: cert.validity.notAfter, subject, keyIdentifier };
}

export interface LeafOptions {
  commonName?: string;
  /** DNS names and IP addresses for the SAN; IPs are detected. */
  hosts: string[];
  validityMs: number;
  /** Reuse a key (the proxy mints many leaves with one key); default: a new one. */
  keyPair?: KeyPair;
  serverAuth?: boolean;
  clientAuth?: boolean;
}

export function issueCertificate(ca: CertificateAuthority, options: LeafOptions): IssuedCertificate {
  const keyPair = options.keyPair ?? createKeyPair();
  const cert = pki.createCertificate();
  const now = Date.now();
  cert.publicKey = keyPair.forgePublicKey;
  cert.serialNumber = serialNumber();
  cert.validity.notBefore = new Date(now - SKEW_MS);
  // A leaf never outlives its CA: clients reject such chains.
  cert.validity.notAfter = new Date(Math.min(now + options.validityMs, ca.notAfter.getTime()));
  cert.setSubject([{ name: 'commonName', value: options.commonName ?? options.hosts[0] ?? 'localhost' }]);
  cert.setIssuer(ca.subject);
  const altNames = options.hosts.map((h) => (isIP(h) ? { type: 7, ip: h } : { type: 2, value: h }));
  const extKeyUsage = { name: 'extKeyUsage', serverAuth: options.serverAuth ?? true, clientAuth: options.clientAuth ?? false };
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    extKeyUsage,
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
    // Python 3.13's default verification (VERIFY_X509_STRICT) rejects leaves without an AKI.
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.keyIdentifier },
  ]);
  const certPem = signWith(cert, ca.keyPair.privateKey);
  return { certPem, keyPem: keyPair.privateKeyPem, notAfter: cert.validity.notAfter };
}

/** A CA plus a leaf for `hosts`: the dev-mode serving pair and the test harness's TLS. */
export function createDevPair(hosts: string[] = ['localhost', '127.0.0.1', '::1'], validityMs = 365 * 24 * 3600_000) {
  const ca = createCA({ commonName: 'workspace-sandbox dev CA', organization: 'workspace-sandbox', validityMs });
  const leaf = issueCertificate(ca, { hosts, validityMs });
  return { ca, caPem: ca.certPem, certPem: leaf.certPem, keyPem: leaf.keyPem, notAfter: leaf.notAfter };
}

/** Expiry of the first certificate in a PEM bundle. */
export function certificateNotAfter(certPem: string | Buffer): Date {
  return new Date(new X509Certificate(certPem).validTo);
}

/** True when the key is the private half of the certificate's public key. */
export function keyMatchesCertificate(certPem: string | Buffer, keyPem: string | Buffer): boolean {
  try {
    return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}
