// X.509 for the dev TLS pair, test CAs, the proxy's per-pod CA and its leaves: one path for all of
// them. lib/der.ts writes the TBSCertificate directly and node:crypto makes the keys and signs it
// (ECDSA P-256 by default: a key in well under 1 ms where RSA-2048 took 100-200 ms, and a handshake
// signature that costs the server a fraction of an RSA one). RSA keys are still accepted, so a CA
// kept on disk by an older version of the proxy keeps signing leaves.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { ipBytes } from './ip.ts';
import { bitString, children, contextTag, oid, sequence, tlv, time, unsignedInteger, TAG } from './der.ts';

/** A private key, its PKCS#8 PEM (what TLS and the state dir take) and its DER SubjectPublicKeyInfo. */
export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly privateKeyPem: string;
  readonly spkiDer: Buffer;
}

function keyPairOf(privateKey: KeyObject, publicKey: KeyObject = createPublicKey(privateKey)): KeyPair {
  return {
    privateKey,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    spkiDer: publicKey.export({ type: 'spki', format: 'der' }),
  };
}

/** An RSA key pair (leaves for clients that want one; tests of RSA CAs kept by older versions). */
export function createKeyPair(bits = 2048): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return keyPairOf(privateKey, publicKey);
}

/** An ECDSA key pair (P-256 unless told): the default for CAs. */
export function createEcKeyPair(namedCurve = 'prime256v1'): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
  return keyPairOf(privateKey, publicKey);
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
  /** Default: a new ECDSA P-256 key. */
  keyPair?: KeyPair;
}

/**
 * A self-signed CA for issuing server leaves (RFC 5280): basicConstraints critical with CA and
 * pathLen 0 (it signs leaves only), keyUsage critical keyCertSign + cRLSign + digitalSignature,
 * and its key identifier as both SKI and AKI.
 */
export function createCA(options: CAOptions): CertificateAuthority {
  const keyPair = options.keyPair ?? createEcKeyPair();
  const now = Date.now();
  // Whole seconds, as encoded: a leaf capped at the CA's end then ends at exactly the same time.
  const notAfter = wholeSeconds(now + options.validityMs);
  const subjectDer = sequence(
    rdn('2.5.4.3', options.commonName),
    ...(options.organization ? [rdn('2.5.4.10', options.organization)] : []),
  );
  const keyIdentifier = keyIdentifierOf(keyPair.spkiDer);
  const extensions = [
    extension('2.5.29.19', true, sequence(tlv(TAG.BOOLEAN, Buffer.from([0xff])), tlv(TAG.INTEGER, Buffer.from([0])))),
    extension('2.5.29.15', true, keyUsage(DIGITAL_SIGNATURE | KEY_CERT_SIGN | CRL_SIGN)),
    extension('2.5.29.14', false, tlv(TAG.OCTET_STRING, keyIdentifier)),
    extension('2.5.29.35', false, sequence(tlv(contextTag(0, false), keyIdentifier))),
  ];
  const algorithm = signatureAlgorithm(keyPair.privateKey);
  const tbs = sequence(
    V3,
    unsignedInteger(serialNumber()),
    algorithm,
    subjectDer,
    sequence(time(wholeSeconds(now - SKEW_MS)), time(notAfter)),
    subjectDer,
    keyPair.spkiDer,
    tlv(contextTag(3, true), sequence(...extensions)),
  );
  const certPem = derToPem(sequence(tbs, algorithm, bitString(sign('sha256', tbs, keyPair.privateKey))));
  return { certPem, keyPair, notAfter, subjectDer, keyIdentifier };
}

/** A CA from its PEM certificate and key (one kept on disk: ECDSA, or RSA from older versions). */
export function loadCA(certPem: string, keyPem: string): CertificateAuthority {
  return { certPem, keyPair: keyPairOf(createPrivateKey(keyPem)), notAfter: certificateNotAfter(certPem), ...issuerOf(certPem) };
}

export interface LeafOptions {
  commonName?: string;
  /** DNS names and IP addresses for the SAN; IPs are detected. */
  hosts: string[];
  validityMs: number;
  /** Reuse a key (the proxy mints many leaves with one key); default: a new ECDSA P-256 one. */
  keyPair?: KeyPair;
  serverAuth?: boolean;
  clientAuth?: boolean;
}

const SHA256_WITH_RSA = sequence(oid('1.2.840.113549.1.1.11'), tlv(TAG.NULL));
/** RFC 5758 §3.2: the parameters are absent, not NULL. */
const ECDSA_WITH_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));

/** The AlgorithmIdentifier of a SHA-256 signature by `key` (node:crypto writes ECDSA ones as DER). */
function signatureAlgorithm(key: KeyObject): Buffer {
  if (key.asymmetricKeyType === 'ec') return ECDSA_WITH_SHA256;
  if (key.asymmetricKeyType === 'rsa') return SHA256_WITH_RSA;
  throw new Error(`unsupported CA key type ${key.asymmetricKeyType}`);
}

/** A Name's RelativeDistinguishedName of one attribute, as UTF8String. */
const rdn = (type: string, value: string): Buffer => tlv(TAG.SET, sequence(oid(type), tlv(TAG.UTF8_STRING, Buffer.from(value, 'utf8'))));
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
const KEY_CERT_SIGN = 0x04;
const CRL_SIGN = 0x02;

/**
 * A leaf signed by `ca`, its DER written directly (lib/der.ts): the proxy mints one for every new
 * intercepted host, on that connection's path.
 */
export function issueCertificate(ca: CertificateAuthority, options: LeafOptions): IssuedCertificate {
  const keyPair = options.keyPair ?? createEcKeyPair();
  const spkiDer = keyPair.spkiDer;
  const algorithm = signatureAlgorithm(ca.keyPair.privateKey);
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
    algorithm,
    ca.subjectDer,
    sequence(time(notBefore), time(notAfter)),
    sequence(rdn('2.5.4.3', commonName)),
    spkiDer,
    tlv(contextTag(3, true), sequence(...extensions)),
  );
  const signature = sign('sha256', tbs, ca.keyPair.privateKey);
  return { certPem: derToPem(sequence(tbs, algorithm, bitString(signature))), keyPem: keyPair.privateKeyPem, notAfter };
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
