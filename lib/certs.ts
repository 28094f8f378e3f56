// X.509 for the dev TLS pair, test CAs, the proxy's per-pod CA and its leaves.
// node-forge builds a CA's structure and lib/der.ts a leaf's; node:crypto makes keys and signs the
// TBS bytes, because forge's pure-JS RSA signing is ~80x slower (see shared TOOLCHAIN notes).
import { createHash, createPrivateKey, createPublicKey, generateKeyPair, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';
import { ipBytes } from './ip.ts';
import { bitString, children, contextTag, oid, sequence, tlv, time, unsignedInteger, TAG } from './der.ts';

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

/** As createKeyPair, generated on the libuv thread pool: two keys made at start take one key's time. */
export async function createKeyPairAsync(bits = 2048): Promise<KeyPair> {
  const { privateKey, publicKey } = await new Promise<{ privateKey: KeyObject; publicKey: KeyObject }>((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: bits }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ privateKey, publicKey })));
  });
  return keyPairFromKeyObjects(privateKey, publicKey);
}

/** A KeyPair from an RSA key made elsewhere with node:crypto (e.g. started before this module loaded). */
export function keyPairFromKeyObjects(privateKey: KeyObject, publicKey: KeyObject): KeyPair {
  return {
    privateKey,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    forgePublicKey: pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString()),
  };
}

/**
 * A key node-forge cannot represent (it knows RSA only): certificates embed its public key as the
 * DER SubjectPublicKeyInfo node:crypto exports. Used for ECDSA P-256 leaves, whose handshakes cost
 * the server a small fraction of an RSA-2048 signature and whose key is made in well under 1 ms.
 */
export interface SpkiKeyPair {
  readonly privateKey: KeyObject;
  readonly privateKeyPem: string;
  readonly spkiDer: Buffer;
}

export function createEcKeyPair(namedCurve = 'prime256v1'): SpkiKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
  return {
    privateKey,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    spkiDer: publicKey.export({ type: 'spki', format: 'der' }),
  };
}

export interface CertificateAuthority {
  readonly certPem: string;
  readonly keyPair: KeyPair;
  readonly notAfter: Date;
  /** The CA's subject as DER: the issuer of every leaf. */
  readonly subjectDer: Buffer;
  /** The CA's key identifier: the authority key identifier of every leaf. */
  readonly keyIdentifier: Buffer;
}

export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  readonly notAfter: Date;
}

const SKEW_MS = 5 * 60_000; // notBefore in the past tolerates clock skew between pod and client

/** Certificates encode times to the second. */
const wholeSeconds = (ms: number): Date => new Date(Math.floor(ms / 1000) * 1000);

function serialNumber(): Buffer {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f; // positive INTEGER
  return bytes;
}

function derToPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\r\n').replace(/\r\n$/, '');
  return `-----BEGIN CERTIFICATE-----\r\n${b64}\r\n-----END CERTIFICATE-----\r\n`;
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits of a DER SubjectPublicKeyInfo. */
function keyIdentifierOf(spkiDer: Buffer): Buffer {
  const [, bits] = children(children(spkiDer)[0]!.content);
  return createHash('sha1').update(bits!.content.subarray(1)).digest();
}

/** What leaves take from their CA's certificate: its subject and its key identifier, as DER. */
function issuerOf(certPem: string): { subjectDer: Buffer; keyIdentifier: Buffer } {
  const tbs = children(children(children(new X509Certificate(certPem).raw)[0]!.content)[0]!.content);
  // TBSCertificate: [0] version (absent in v1), serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
  const fields = tbs[0]!.tag === contextTag(0, true) ? tbs.slice(1) : tbs;
  return { subjectDer: fields[4]!.der, keyIdentifier: keyIdentifierOf(fields[5]!.der) };
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
  cert.serialNumber = serialNumber().toString('hex');
  // Whole seconds, as encoded: a leaf capped at the CA's end then ends at exactly the same time.
  cert.validity.notBefore = wholeSeconds(now - SKEW_MS);
  cert.validity.notAfter = wholeSeconds(now + options.validityMs);
  const subject: forge.pki.CertificateField[] = [{ name: 'commonName', value: options.commonName }];
  if (options.organization) subject.push({ name: 'organizationName', value: options.organization });
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.signatureOid = pki.oids.sha256WithRSAEncryption!;
  cert.siginfo.algorithmOid = pki.oids.sha256WithRSAEncryption!;
  const tbs = getTBSCertificate(cert);
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  cert.signature = sign('sha256', Buffer.from(asn1.toDer(tbs).getBytes(), 'binary'), keyPair.privateKey).toString('binary');
  const certPem = pki.certificateToPem(cert);
  return { certPem, keyPair, notAfter: cert.validity.notAfter, ...issuerOf(certPem) };
}

/** A CA from its PEM certificate and key (e.g. one kept on disk by the local stack). */
export function loadCA(certPem: string, keyPem: string): CertificateAuthority {
  const privateKey = createPrivateKey(keyPem);
  return {
    certPem,
    keyPair: { privateKey, privateKeyPem: keyPem, forgePublicKey: pki.certificateFromPem(certPem).publicKey as forge.pki.PublicKey },
    notAfter: certificateNotAfter(certPem),
    ...issuerOf(certPem),
  };
}

export interface LeafOptions {
  commonName?: string;
  /** DNS names and IP addresses for the SAN; IPs are detected. */
  hosts: string[];
  validityMs: number;
  /** Reuse a key (the proxy mints many leaves with one key); default: a new RSA one. */
  keyPair?: KeyPair | SpkiKeyPair;
  serverAuth?: boolean;
  clientAuth?: boolean;
}

const SHA256_WITH_RSA = sequence(oid('1.2.840.113549.1.1.11'), tlv(TAG.NULL));
const CRITICAL = tlv(TAG.BOOLEAN, Buffer.from([0xff]));
const V3 = tlv(contextTag(0, true), tlv(TAG.INTEGER, Buffer.from([2])));

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(oid(id), CRITICAL, tlv(TAG.OCTET_STRING, value)) : sequence(oid(id), tlv(TAG.OCTET_STRING, value));
}

/** KeyUsage bits 0-7 as a DER BIT STRING (trailing zero bits dropped, as DER requires). */
function keyUsage(bits: number): Buffer {
  let unused = 0;
  while (unused < 7 && ((bits >> unused) & 1) === 0) unused++;
  return tlv(TAG.BIT_STRING, Buffer.from([unused, bits]));
}
const DIGITAL_SIGNATURE = 0x80;
const KEY_ENCIPHERMENT = 0x20;

/**
 * A leaf signed by `ca`, its DER written directly (lib/der.ts): the proxy mints one for every new
 * intercepted host, on that connection's path.
 */
export function issueCertificate(ca: CertificateAuthority, options: LeafOptions): IssuedCertificate {
  const keyPair = options.keyPair ?? createKeyPair();
  const spkiDer = 'spkiDer' in keyPair ? keyPair.spkiDer : createPublicKey(keyPair.privateKey).export({ type: 'spki', format: 'der' });
  const now = Date.now();
  const notBefore = wholeSeconds(now - SKEW_MS);
  // A leaf never outlives its CA: clients reject such chains.
  const notAfter = wholeSeconds(Math.min(now + options.validityMs, ca.notAfter.getTime()));
  const commonName = options.commonName ?? options.hosts[0] ?? 'localhost';
  const altNames = options.hosts.map((h) => (isIP(h)
    ? tlv(contextTag(7, false), ipBytes(h))
    : tlv(contextTag(2, false), Buffer.from(h, 'latin1'))));
  const purposes = [
    ...(options.serverAuth ?? true ? [oid('1.3.6.1.5.5.7.3.1')] : []),
    ...(options.clientAuth ?? false ? [oid('1.3.6.1.5.5.7.3.2')] : []),
  ];
  const extensions = [
    extension('2.5.29.19', true, sequence()), // basicConstraints: not a CA
    // keyEncipherment is RSA key transport: an EC key only signs.
    extension('2.5.29.15', true, keyUsage(keyPair.privateKey.asymmetricKeyType === 'rsa' ? DIGITAL_SIGNATURE | KEY_ENCIPHERMENT : DIGITAL_SIGNATURE)),
    ...(purposes.length > 0 ? [extension('2.5.29.37', false, sequence(...purposes))] : []),
    extension('2.5.29.17', false, sequence(...altNames)),
    extension('2.5.29.14', false, tlv(TAG.OCTET_STRING, keyIdentifierOf(spkiDer))),
    // Python 3.13's default verification (VERIFY_X509_STRICT) rejects leaves without an AKI.
    extension('2.5.29.35', false, sequence(tlv(contextTag(0, false), ca.keyIdentifier))),
  ];
  const tbs = sequence(
    V3,
    unsignedInteger(serialNumber()),
    SHA256_WITH_RSA,
    ca.subjectDer,
    sequence(time(notBefore), time(notAfter)),
    sequence(tlv(TAG.SET, sequence(oid('2.5.4.3'), tlv(TAG.UTF8_STRING, Buffer.from(commonName, 'utf8'))))),
    spkiDer,
    tlv(contextTag(3, true), sequence(...extensions)),
  );
  const signature = sign('sha256', tbs, ca.keyPair.privateKey);
  return { certPem: derToPem(sequence(tbs, SHA256_WITH_RSA, bitString(signature))), keyPem: keyPair.privateKeyPem, notAfter };
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
