// X.509 building for the dev TLS pair, test CAs and (later) the proxy's per-pod CA.
// node-forge builds the certificate structure; node:crypto makes keys and signs the TBS bytes,
// because forge's pure-JS RSA signing is ~80x slower (see shared TOOLCHAIN notes).
import { createHash, createPrivateKey, createPublicKey, generateKeyPair, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
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

function signWith(cert: forge.pki.Certificate, signer: KeyObject, spkiDer?: Buffer): string {
  cert.signatureOid = pki.oids.sha256WithRSAEncryption!;
  cert.siginfo.algorithmOid = pki.oids.sha256WithRSAEncryption!;
  const tbs = getTBSCertificate(cert);
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo.
  if (spkiDer) (tbs.value as forge.asn1.Asn1[])[6] = asn1.fromDer(forge.util.createBuffer(spkiDer.toString('binary')));
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  const der = Buffer.from(asn1.toDer(tbs).getBytes(), 'binary');
  cert.signature = sign('sha256', der, signer).toString('binary');
  return spkiDer ? derToPem(Buffer.from(asn1.toDer(certificateAsn1(cert, tbs)).getBytes(), 'binary')) : pki.certificateToPem(cert);
}

/** The signed certificate around a TBS forge did not build (its SPKI replaced). */
function certificateAsn1(cert: forge.pki.Certificate, tbs: forge.asn1.Asn1): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(cert.signatureOid!).getBytes()),
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ''),
    ]),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, String.fromCharCode(0x00) + cert.signature),
  ]);
}

function derToPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\r\n').replace(/\r\n$/, '');
  return `-----BEGIN CERTIFICATE-----\r\n${b64}\r\n-----END CERTIFICATE-----\r\n`;
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits, for an EC key the point 04‖x‖y. */
function keyIdentifierOf(spkiDer: Buffer): string {
  const jwk = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' }).export({ format: 'jwk' });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  return createHash('sha1').update(point).digest('hex');
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

/** A CA from its PEM certificate and key (e.g. one kept on disk by the local stack). */
export function loadCA(certPem: string, keyPem: string): CertificateAuthority {
  const cert = pki.certificateFromPem(certPem);
  const privateKey = createPrivateKey(keyPem);
  return {
    certPem,
    keyPair: { privateKey, privateKeyPem: keyPem, forgePublicKey: cert.publicKey as forge.pki.PublicKey },
    notAfter: cert.validity.notAfter,
    subject: cert.subject.attributes,
    keyIdentifier: cert.generateSubjectKeyIdentifier().getBytes(),
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

export function issueCertificate(ca: CertificateAuthority, options: LeafOptions): IssuedCertificate {
  const keyPair = options.keyPair ?? createKeyPair();
  const spkiDer = 'spkiDer' in keyPair ? keyPair.spkiDer : undefined;
  const cert = pki.createCertificate();
  const now = Date.now();
  // A non-RSA key: forge serialises the CA's key as a placeholder, replaced by the real SPKI when signing.
  cert.publicKey = 'forgePublicKey' in keyPair ? keyPair.forgePublicKey : ca.keyPair.forgePublicKey;
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
    // keyEncipherment is RSA key transport: an EC key only signs.
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: spkiDer === undefined, critical: true },
    extKeyUsage,
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
    // Python 3.13's default verification (VERIFY_X509_STRICT) rejects leaves without an AKI.
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.keyIdentifier },
  ]);
  if (spkiDer) {
    // forge derives the SKI from cert.publicKey (the placeholder): put the real key's in.
    const ski = cert.getExtension('subjectKeyIdentifier') as { value: unknown; subjectKeyIdentifier: string };
    ski.subjectKeyIdentifier = keyIdentifierOf(spkiDer);
    ski.value = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, forge.util.hexToBytes(ski.subjectKeyIdentifier));
  }
  const certPem = signWith(cert, ca.keyPair.privateKey, spkiDer);
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
