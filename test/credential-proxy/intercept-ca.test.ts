import t from 'tap';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEcKeyPair, createKeyPair } from '../../lib/certs.ts';
import { CA_VALIDITY_MS, certificateBlocks, createPodCA, systemTrustBundle, writeCAFiles } from '../../credential-proxy/ca.ts';
import { createInterceptor } from '../../credential-proxy/intercept.ts';
import { createLogger } from '../../lib/log.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { LeafCache } from '../../credential-proxy/leaf-cache.ts';

const HOUR = 3600_000;

function openssl(args: string[]): string {
  return execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

t.test('the per-pod CA: ECDSA P-256, RFC 5280 CA extensions, names the pod, lives a little over 4 h', async (t) => {
  const ca = createPodCA({ podName: 'ws-abc-123' });
  const x = new X509Certificate(ca.certPem);
  t.ok(x.ca, 'basicConstraints CA');
  t.match(x.subject, /CN=workspace-sandbox proxy CA ws-abc-123/);
  t.equal(x.subject, x.issuer, 'self-signed');
  t.ok(x.verify(x.publicKey));
  t.equal(x.publicKey.asymmetricKeyType, 'ec');
  t.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  const life = new Date(x.validTo).getTime() - Date.now();
  t.ok(life > 4 * HOUR && life <= CA_VALIDITY_MS, `valid for ${(life / HOUR).toFixed(2)} h`);
  t.ok(CA_VALIDITY_MS < 5 * HOUR);
  const dir = mkdtempSync(join(tmpdir(), 'ws-ca-'));
  writeFileSync(join(dir, 'ca.pem'), ca.certPem);
  const caText = openssl(['x509', '-noout', '-text', '-in', join(dir, 'ca.pem')]);
  t.match(caText, /Signature Algorithm: ecdsa-with-SHA256/);
  t.match(caText, /Basic Constraints: critical\n\s+CA:TRUE, pathlen:0/);
  t.match(caText, /Key Usage: critical\n\s+Digital Signature, Certificate Sign, CRL Sign/);
  const ski = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(caText)?.[1];
  t.ok(ski, 'SKI');
  t.match(caText, new RegExp(`Authority Key Identifier:\\s*\\n\\s*(keyid:)?${ski}`), 'AKI = SKI (self-signed)');
  // A self-signed certificate that openssl's strict checks accept as a trust anchor.
  t.match(openssl(['verify', '-x509_strict', '-check_ss_sig', '-CAfile', join(dir, 'ca.pem'), join(dir, 'ca.pem')]), /: OK/);
  openssl(['asn1parse', '-in', join(dir, 'ca.pem'), '-strictpem']); // throws on malformed DER
});

t.test('a long pod name still yields a valid subject (CN ≤ 64 characters)', async (t) => {
  const ca = createPodCA({ podName: 'p'.repeat(200) });
  const cn = /CN=([^\n]+)/.exec(new X509Certificate(ca.certPem).subject)![1]!;
  t.equal(cn.length, 64);
});

t.test('CA files: ca.crt and ca-bundle.crt (system bundle + CA), written whole, no key on disk', async (t) => {
  const ca = createPodCA({ podName: 'pod-files' });
  const dir = join(mkdtempSync(join(tmpdir(), 'ws-cadir-')), 'nested', 'dir');
  const system = systemTrustBundle();
  t.match(system, /BEGIN CERTIFICATE/);
  const files = await writeCAFiles(dir, ca.certPem, system);
  t.equal(readFileSync(files.certFile, 'utf8').trim(), ca.certPem.trim());
  const bundle = readFileSync(files.bundleFile, 'utf8');
  t.ok(bundle.startsWith(system.trimEnd()), 'starts with the system bundle');
  t.ok(bundle.trimEnd().endsWith(ca.certPem.trimEnd()), 'ends with the pod CA');
  t.same(readdirSync(dir).sort(), ['ca-bundle.crt', 'ca.crt'], 'no temp files left behind');
  for (const name of readdirSync(dir)) t.notMatch(readFileSync(join(dir, name), 'utf8'), /PRIVATE KEY/, `${name} holds no key`);
  // openssl trusts the bundle for a leaf of the CA (what curl with CURL_CA_BUNDLE does).
  const leaves = new LeafCache({ ca, keyPair: createKeyPair() });
  const leafFile = join(dir, '..', 'leaf.pem');
  writeFileSync(leafFile, leaves.get('api.example.com').certPem);
  t.match(openssl(['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', files.bundleFile, leafFile]), /OK/);

  // Rewriting replaces both files (a restarted sidecar makes a new CA).
  const ca2 = createPodCA({ podName: 'pod-files' });
  await writeCAFiles(dir, ca2.certPem, system);
  t.equal(readFileSync(files.certFile, 'utf8').trim(), ca2.certPem.trim());
});

t.test('UPSTREAM_CA_FILE: its certificates (never a key) join ca-bundle.crt, so plain tunnels to the same upstreams verify', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-upca-'));
  const corporate = makeTestPki(['internal.corp.example']);
  const second = makeTestPki(['other.corp.example']);
  const keyText = createKeyPair().privateKeyPem;
  // A file as people make them: two CAs, a comment, and (carelessly) a key.
  writeFileSync(join(dir, 'upstream-ca.pem'), `# corporate roots\n${corporate.caPem}\n${keyText}\n${second.caPem}`);
  writeFileSync(join(dir, 'corp-leaf.pem'), corporate.certPem);
  writeFileSync(join(dir, 'other-leaf.pem'), second.certPem);
  const system = systemTrustBundle();
  const logs = captureLogs();
  const interceptor = createInterceptor(
    { CA_DIR: join(dir, 'shared'), UPSTREAM_CA_FILE: join(dir, 'upstream-ca.pem'), POD_NAME: 'pod-upca' },
    { logger: createLogger({ name: 'proxy', level: 'warn', destination: logs.destination }), env: {} },
  );
  t.teardown(() => interceptor.close());
  await interceptor.ready;
  const bundleFile = interceptor.caFiles!.bundleFile;
  const bundle = readFileSync(bundleFile, 'utf8');
  t.ok(bundle.startsWith(system.trimEnd()), 'starts with the system bundle');
  t.ok(bundle.includes(corporate.caPem.trim()) && bundle.includes(second.caPem.trim()), 'holds every upstream CA');
  t.ok(bundle.trimEnd().endsWith(interceptor.ca!.certPem.trimEnd()), 'still ends with the pod CA');
  t.notMatch(bundle, /PRIVATE KEY/, 'a key in UPSTREAM_CA_FILE is never copied');
  t.notMatch(readFileSync(interceptor.caFiles!.certFile, 'utf8'), /corp|BEGIN CERTIFICATE-----[\s\S]*BEGIN CERTIFICATE/, 'ca.crt is the pod CA alone');
  for (const leaf of ['corp-leaf.pem', 'other-leaf.pem']) {
    t.match(openssl(['verify', '-purpose', 'sslserver', '-CAfile', bundleFile, join(dir, leaf)]), /OK/, `${leaf} verifies against the bundle`);
  }
  // Without UPSTREAM_CA_FILE the same leaf does not verify: the check above can fail.
  const plain = await writeCAFiles(join(dir, 'plain'), interceptor.ca!.certPem, system);
  t.throws(() => openssl(['verify', '-purpose', 'sslserver', '-CAfile', plain.bundleFile, join(dir, 'corp-leaf.pem')]));
  t.same(certificateBlocks(`x\n${corporate.caPem}\n${keyText}`), [corporate.caPem.trim()]);
});

t.test('the system bundle falls back to Node\'s roots when the image has none', async (t) => {
  const bundle = systemTrustBundle(['/nonexistent/bundle.pem']);
  t.ok((bundle.match(/BEGIN CERTIFICATE/g) ?? []).length > 50);
});

t.test('leaves: SAN = host, SKI and AKI (= CA SKI), chain to the CA, within the CA validity, one key', async (t) => {
  const ca = createPodCA({ podName: 'pod-leaf' });
  const key = createEcKeyPair();
  const cache = new LeafCache({ ca, keyPair: key });
  const a = cache.get('bedrock-runtime.us-east-1.amazonaws.com');
  const b = cache.get('api.example.com');
  const caX = new X509Certificate(ca.certPem);
  for (const [leaf, host] of [[a, 'bedrock-runtime.us-east-1.amazonaws.com'], [b, 'api.example.com']] as const) {
    const x = new X509Certificate(leaf.certPem);
    t.equal(x.subjectAltName, `DNS:${host}`);
    t.equal(x.checkHost(host), host);
    t.equal(x.checkHost(`evil.${host}`), undefined);
    t.ok(x.checkIssued(caX), 'issued by the pod CA');
    t.ok(x.verify(caX.publicKey), 'signed by the pod CA key');
    t.notOk(x.ca);
    t.ok(new Date(x.validTo) <= new Date(caX.validTo), 'ends no later than the CA');
    t.ok(x.checkPrivateKey(key.privateKey), 'the process leaf key');
    t.equal(x.publicKey.asymmetricKeyType, 'ec');
    const dir = mkdtempSync(join(tmpdir(), 'ws-leaf-'));
    writeFileSync(join(dir, 'leaf.pem'), leaf.certPem);
    writeFileSync(join(dir, 'ca.pem'), ca.certPem);
    const text = openssl(['x509', '-noout', '-text', '-in', join(dir, 'leaf.pem')]);
    const caText = openssl(['x509', '-noout', '-text', '-in', join(dir, 'ca.pem')]);
    const ski = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(caText)![1]!;
    t.match(text, new RegExp(`Authority Key Identifier:\\s*\\n\\s*(keyid:)?${ski}`), 'AKI is the CA SKI');
    const leafSki = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(text)![1]!;
    t.not(leafSki, ski, 'the leaf SKI is its own');
    const point = openssl(['x509', '-noout', '-pubkey', '-in', join(dir, 'leaf.pem')]);
    const jwk = (await import('node:crypto')).createPublicKey(point).export({ format: 'jwk' });
    const expected = (await import('node:crypto')).createHash('sha1')
      .update(Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')])).digest('hex');
    t.equal(leafSki.replace(/:/g, '').toLowerCase(), expected, 'SKI = SHA-1 of the leaf public key (RFC 5280 method 1)');
    t.match(text, /Digital Signature/);
    t.notMatch(text, /Key Encipherment/, 'an EC key only signs');
    t.match(openssl(['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', join(dir, 'ca.pem'), join(dir, 'leaf.pem')]), /OK/);
  }
  t.equal(cache.get('api.example.com'), b, 'cached');
  t.equal(cache.minted, 2);
});

t.test('the leaf cache is an LRU bounded by its size', async (t) => {
  const ca = createPodCA({ podName: 'pod-lru' });
  const cache = new LeafCache({ ca, keyPair: createKeyPair(), max: 3 });
  for (const h of ['a.example', 'b.example', 'c.example']) cache.get(h);
  cache.get('a.example'); // a is now the most recent
  cache.get('d.example'); // evicts b, the least recent
  t.equal(cache.size, 3);
  t.ok(cache.has('a.example'));
  t.notOk(cache.has('b.example'));
  t.ok(cache.has('c.example'));
  t.ok(cache.has('d.example'));
  t.equal(cache.minted, 4);
  cache.get('b.example');
  t.equal(cache.minted, 5, 'an evicted host is minted again');
});

t.test('a leaf close to its end is re-minted; one ending with the CA is not', async (t) => {
  const ca = createPodCA({ podName: 'pod-renew' });
  let now = Date.now();
  const cache = new LeafCache({ ca, keyPair: createKeyPair(), validityMs: HOUR, now: () => now });
  const first = cache.get('a.example');
  now += HOUR - 5 * 60_000;
  const second = cache.get('a.example');
  t.not(second, first, 're-minted near its end');
  t.equal(cache.minted, 2);
  const short = new LeafCache({ ca, keyPair: createKeyPair(), validityMs: 24 * HOUR, now: () => now });
  const leaf = short.get('b.example');
  t.equal(leaf.notAfter.getTime(), ca.notAfter.getTime(), 'capped at the CA');
  now = ca.notAfter.getTime() - 60_000;
  t.equal(short.get('b.example'), leaf, 'no renewal loop when the CA itself is ending');
});
