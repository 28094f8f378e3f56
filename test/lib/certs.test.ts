import t from 'tap';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCA, createDevPair, createEcKeyPair, createKeyPair, issueCertificate, keyMatchesCertificate, certificateNotAfter, loadCA } from '../../lib/certs.ts';

const HOUR = 3600_000;

t.test('a CA and a leaf chain, carry SAN, SKI/AKI and the right usages', async (t) => {
  const ca = createCA({ commonName: 'pod abc CA', organization: 'workspace-sandbox', validityMs: 5 * HOUR });
  const leaf = issueCertificate(ca, { hosts: ['api.example.com', '10.0.0.1'], validityMs: HOUR });
  const caX = new X509Certificate(ca.certPem);
  const leafX = new X509Certificate(leaf.certPem);
  t.ok(caX.ca, 'CA flag');
  t.ok(caX.verify(caX.publicKey), 'CA self-signed');
  t.ok(leafX.checkIssued(caX), 'leaf issued by CA');
  t.ok(leafX.verify(caX.publicKey), 'leaf signature verifies with the CA key');
  t.notOk(leafX.ca);
  t.equal(leafX.subjectAltName, 'DNS:api.example.com, IP Address:10.0.0.1');
  t.equal(leafX.checkHost('api.example.com'), 'api.example.com');
  t.ok(keyMatchesCertificate(leaf.certPem, leaf.keyPem));
  t.notOk(keyMatchesCertificate(leaf.certPem, ca.keyPair.privateKeyPem));

  // openssl verify with X509_STRICT: what Python 3.13 applies (it rejects leaves without AKI).
  const dir = mkdtempSync(join(tmpdir(), 'ws-certs-'));
  writeFileSync(join(dir, 'ca.pem'), ca.certPem);
  writeFileSync(join(dir, 'leaf.pem'), leaf.certPem);
  const out = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', join(dir, 'ca.pem'), join(dir, 'leaf.pem')]).toString();
  t.match(out, /leaf.pem: OK/);
  const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'leaf.pem')]).toString();
  const caText = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'ca.pem')]).toString();
  const ski = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(caText)?.[1];
  t.ok(ski, 'CA has an SKI');
  t.match(text, new RegExp(`Authority Key Identifier:\\s*\\n\\s*(keyid:)?${ski}`), 'leaf AKI is the CA SKI');
  t.match(text, /Subject Key Identifier/);
  t.match(text, /TLS Web Server Authentication/);
});

t.test('a leaf never outlives its CA and tolerates clock skew', async (t) => {
  const ca = createCA({ commonName: 'short CA', validityMs: HOUR });
  const leaf = issueCertificate(ca, { hosts: ['x.example'], validityMs: 100 * HOUR });
  t.equal(leaf.notAfter.getTime(), ca.notAfter.getTime());
  t.equal(certificateNotAfter(leaf.certPem).getTime(), Math.floor(ca.notAfter.getTime() / 1000) * 1000);
  const notBefore = new Date(new X509Certificate(leaf.certPem).validFrom).getTime();
  t.ok(notBefore < Date.now() - 60_000, 'notBefore is in the past');
});

t.test('one key pair serves many leaves; serials are unique', async (t) => {
  const ca = createCA({ commonName: 'CA', validityMs: HOUR });
  const key = createKeyPair();
  const a = issueCertificate(ca, { hosts: ['a.example'], validityMs: HOUR, keyPair: key });
  const b = issueCertificate(ca, { hosts: ['b.example'], validityMs: HOUR, keyPair: key });
  t.equal(a.keyPem, b.keyPem);
  t.not(new X509Certificate(a.certPem).serialNumber, new X509Certificate(b.certPem).serialNumber);
});

t.test('the dev pair serves localhost', async (t) => {
  const pair = createDevPair();
  const x = new X509Certificate(pair.certPem);
  t.equal(x.checkHost('localhost'), 'localhost');
  t.equal(x.checkIP('127.0.0.1'), '127.0.0.1');
  t.ok(x.checkIssued(new X509Certificate(pair.caPem)));
});

t.test('a CA loaded from PEM issues leaves that chain to it', async (t) => {
  const original = createCA({ commonName: 'kept CA', validityMs: HOUR });
  const loaded = loadCA(original.certPem, original.keyPair.privateKeyPem);
  t.equal(loaded.notAfter.getTime(), Math.floor(original.notAfter.getTime() / 1000) * 1000, 'expiry read from the certificate (second precision)');
  const leaf = issueCertificate(loaded, { hosts: ['api.demo.localhost'], validityMs: HOUR });
  const caX = new X509Certificate(original.certPem);
  const leafX = new X509Certificate(leaf.certPem);
  t.ok(leafX.checkIssued(caX));
  t.ok(leafX.verify(caX.publicKey));
  t.equal(leafX.issuer, caX.subject);
});

t.test('leaves of either key type, IPv6 names and dates past 2049 are well-formed DER', async (t) => {
  const YEAR = 365 * 24 * HOUR;
  const ca = createCA({ commonName: 'long-lived CA', validityMs: 40 * YEAR });
  const dir = mkdtempSync(join(tmpdir(), 'ws-certs-'));
  writeFileSync(join(dir, 'ca.pem'), ca.certPem);
  const cases = [
    { name: 'ec', keyPair: createEcKeyPair(), usage: 'Digital Signature\n' },
    { name: 'rsa', keyPair: createKeyPair(), usage: 'Digital Signature, Key Encipherment\n' },
  ];
  for (const { name, keyPair, usage } of cases) {
    // 30 years: notAfter is in the 2050s, so it is a GeneralizedTime (RFC 5280 §4.1.2.5).
    const leaf = issueCertificate(ca, { hosts: ['xn--bcher-kva.example', '::ffff:10.1.2.3', 'fd00:ec2::23'], validityMs: 30 * YEAR, keyPair, clientAuth: true });
    const file = join(dir, `${name}.pem`);
    writeFileSync(file, leaf.certPem);
    t.match(execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', join(dir, 'ca.pem'), file]).toString(), /: OK/, `${name}: verifies strictly`);
    execFileSync('openssl', ['asn1parse', '-in', file, '-strictpem']); // throws on malformed DER
    const x = new X509Certificate(leaf.certPem);
    t.equal(x.subjectAltName, 'DNS:xn--bcher-kva.example, IP Address:0:0:0:0:0:FFFF:A01:203, IP Address:FD00:EC2:0:0:0:0:0:23');
    t.equal(new Date(x.validTo).getTime(), leaf.notAfter.getTime(), `${name}: notAfter ${x.validTo} as returned`);
    t.ok(leaf.notAfter.getUTCFullYear() >= 2050);
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', file]).toString();
    t.ok(text.includes(`Key Usage: critical\n                ${usage}`), `${name}: key usage`);
    t.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
    t.match(text, /Basic Constraints: critical\n\s+CA:FALSE/);
  }
});
