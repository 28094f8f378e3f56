import t from 'tap';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { KeyPairWatcher, loadKeyPairSync } from '../../lib/tls.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';
import { writeSecretVolume } from '../helpers/secret-volume.ts';

const pki = makeTestPki();

function fingerprintOf(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** One fresh TLS handshake; resolves with the served certificate's fingerprint. */
function handshake(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ port, host: '127.0.0.1', servername: 'localhost', ca: pki.caPem }, () => {
      const fp = sock.getPeerX509Certificate()?.fingerprint256 ?? '';
      sock.end();
      resolve(fp);
    });
    sock.once('error', reject);
  });
}

t.test('a client looping through a Kubernetes-style Secret swap sees the new certificate and no failed handshake', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-tls-'));
  writeSecretVolume(dir, { 'tls.crt': pki.certPem, 'tls.key': pki.keyPem });
  const watcher = new KeyPairWatcher({ certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') }, { pollIntervalMs: 200, debounceMs: 10 });
  t.teardown(() => watcher.close());
  const server = createServer((_req, res) => res.end('ok'));
  watcher.attach(server);
  const { port } = await listenLocal(server, 'https');
  t.teardown(() => closeServer(server));

  const oldFp = fingerprintOf(pki.certPem);
  const next = pki.issue(['localhost', '127.0.0.1'], 'rotated');
  const newFp = fingerprintOf(next.certPem);
  const reloaded = once(watcher, 'reload');

  const seen = new Map<string, number>();
  let failures = 0;
  let swapped = false;
  let afterSwapNew = 0;
  const loop = async () => {
    // Bounded: stops after seeing the new certificate a number of times, or after 2000 handshakes.
    for (let i = 0; i < 2000 && afterSwapNew < 50; i++) {
      try {
        const fp = await handshake(port);
        seen.set(fp, (seen.get(fp) ?? 0) + 1);
        if (swapped && fp === newFp) afterSwapNew++;
      } catch {
        failures++;
      }
      if (i === 30 && !swapped) {
        swapped = true;
        writeSecretVolume(dir, { 'tls.crt': next.certPem, 'tls.key': next.keyPem });
      }
    }
  };
  await Promise.all([loop(), loop(), loop()]);
  await reloaded;
  t.equal(failures, 0, 'zero failed handshakes');
  t.ok((seen.get(oldFp) ?? 0) > 0, 'old certificate served before the swap');
  t.ok(afterSwapNew >= 50, 'new certificate served after the swap');
  t.same([...seen.keys()].sort(), [oldFp, newFp].sort(), 'only the two real certificates were ever served');
  t.equal(watcher.notAfter.getTime(), new Date(new X509Certificate(next.certPem).validTo).getTime(), 'expiry of the current certificate');
});

t.test('a mismatched or broken pair is reported and the old one keeps serving', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-tls-'));
  writeSecretVolume(dir, { 'tls.crt': pki.certPem, 'tls.key': pki.keyPem });
  const watcher = new KeyPairWatcher({ certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') }, { pollIntervalMs: 60_000, debounceMs: 10 });
  t.teardown(() => watcher.close());
  const server = createServer((_req, res) => res.end('ok'));
  watcher.attach(server);
  const { port } = await listenLocal(server, 'https');
  t.teardown(() => closeServer(server));

  const other = pki.issue();
  const errored = once(watcher, 'reloadFailed');
  writeSecretVolume(dir, { 'tls.crt': other.certPem, 'tls.key': pki.keyPem });
  const [err] = await errored as [Error & { code: string }];
  t.equal(err.code, 'WS_ERR_TLS');
  t.match(err.message, /is not the private key of/);
  t.equal(await handshake(port), fingerprintOf(pki.certPem), 'old pair still served');

  const garbage = once(watcher, 'reloadFailed');
  writeSecretVolume(dir, { 'tls.crt': 'not a certificate', 'tls.key': pki.keyPem });
  const [err2] = await garbage as [Error];
  t.match(err2.message, /not a PEM certificate/);
  t.equal(await handshake(port), fingerprintOf(pki.certPem));
});

t.test('an in-place write (not the Kubernetes way) is picked up too', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-tls-'));
  const certFile = join(dir, 'tls.crt');
  const keyFile = join(dir, 'tls.key');
  writeFileSync(certFile, pki.certPem);
  writeFileSync(keyFile, pki.keyPem);
  const watcher = new KeyPairWatcher({ certFile, keyFile }, { pollIntervalMs: 100, debounceMs: 10 });
  // The watcher's timers never hold the process open (a server does); this test has no server.
  const keepAlive = setInterval(() => {}, 1000);
  t.teardown(() => { watcher.close(); clearInterval(keepAlive); });
  const next = pki.issue();
  const reloaded = once(watcher, 'reload');
  writeFileSync(keyFile, next.keyPem);
  writeFileSync(certFile, next.certPem);
  await reloaded;
  t.equal(fingerprintOf(watcher.current.cert.toString()), fingerprintOf(next.certPem));
});

t.test('start-up load errors are clear', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-tls-'));
  t.throws(() => loadKeyPairSync({ certFile: join(dir, 'none.crt'), keyFile: join(dir, 'none.key') }), { code: 'WS_ERR_TLS', message: /cannot read TLS key pair/ });
  t.throws(() => new KeyPairWatcher({ certFile: join(dir, 'none.crt'), keyFile: join(dir, 'none.key') }), { code: 'WS_ERR_TLS' });
});
