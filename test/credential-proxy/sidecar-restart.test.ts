// The sidecar survives its own restart. A workspace process loads the per-pod CA once (the
// bundle SSL_CERT_FILE names, read at its start) and keeps it; the kubelet restarts a crashed
// sidecar in place. With PROXY_STATE_DIR (the webhook mounts a memory-backed volume there, into the
// sidecar alone) the restarted proxy reuses the kept CA, so the process's next intercepted request
// still verifies. Real `workspace-sandbox proxy` processes, killed with SIGKILL mid-session; a
// real TLS upstream on loopback. Without a state dir, the same restart breaks the client (so this
// test can fail).
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect as tlsConnect } from 'node:tls';
import { CA_BUNDLE_FILE } from '../../lib/constants.ts';
import { CA_STATE_CERT, CA_STATE_KEY } from '../../credential-proxy/ca-state.ts';
import { createCA, createKeyPair } from '../../lib/certs.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { startUpstream } from './fixtures/intercept-upstream.ts';

const BIN = new URL('../../bin/workspace-sandbox.ts', import.meta.url).pathname;
const API = 'api.example.test';
const SECRET = 'sk-restart-test-0123456789abcdef';

interface Sidecar { child: ChildProcess; proxyPort: number; adminPort: number }

async function startSidecar(t: Test, env: Record<string, string>): Promise<Sidecar> {
  const child = spawn(process.execPath, [BIN, 'proxy'], {
    env: { PATH: process.env.PATH, PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', POD_NAME: 'ws-restart', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => { child.kill('SIGKILL'); });
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => { try { lines.push(JSON.parse(l) as Record<string, unknown>); } catch { /* not a log line */ } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  for (let i = 0; i < 2000; i++) {
    if (child.exitCode !== null) throw new Error(`the proxy exited ${child.exitCode}: ${stderr}`);
    const listening = lines.find((l) => l.msg === 'credential proxy listening');
    if (listening) {
      const port = (a: unknown) => Number(String(a).split(':').pop());
      const s = { child, proxyPort: port(listening.proxy), adminPort: port(listening.admin) };
      for (let j = 0; j < 1000; j++) {
        if ((await fetch(`http://127.0.0.1:${s.adminPort}/readyz`)).status === 200) return s;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error('the proxy never turned ready');
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the proxy never listened');
}

async function kill(s: Sidecar): Promise<void> {
  s.child.kill('SIGKILL');
  if (s.child.exitCode === null && s.child.signalCode === null) await once(s.child, 'exit');
}

/** One intercepted request, as a workspace process makes it: CONNECT, then TLS verified with the CA it loaded at its start. */
function get(proxyPort: number, upstreamPort: number, trusted: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: proxyPort, method: 'CONNECT', path: `${API}:${upstreamPort}` });
    req.on('error', reject);
    req.on('connect', (res, socket) => {
      if (res.statusCode !== 200) return reject(new Error(`CONNECT answered ${res.statusCode}`));
      const tls = tlsConnect({ socket, servername: API, ca: trusted });
      let raw = '';
      tls.on('secureConnect', () => tls.write(`GET /v1/ping HTTP/1.1\r\nHost: ${API}:${upstreamPort}\r\nConnection: close\r\n\r\n`));
      tls.on('data', (d: Buffer) => { raw += d.toString(); });
      tls.on('error', reject);
      tls.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(raw)?.[1] ?? 0), body: raw.slice(raw.indexOf('\r\n\r\n') + 4) }));
    });
    req.end();
  });
}

async function setup(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'ws-restart-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makeTestPki([API, '127.0.0.1']);
  const upstream = await startUpstream(pki);
  t.teardown(() => upstream.close());
  writeFileSync(join(dir, 'upstream-ca.pem'), pki.caPem);
  writeFileSync(join(dir, 'secret'), SECRET);
  writeFileSync(join(dir, 'credentials.json'), JSON.stringify({ credentials: {
    api: { hosts: [API], type: 'header', header: 'authorization', value: { file: join(dir, 'secret') }, format: 'Bearer {value}' } } }));
  writeFileSync(join(dir, 'rules.json'), JSON.stringify([{ id: 'api', hosts: [API], ports: [upstream.port], allowPrivate: true, credential: 'api' }]));
  const env = {
    CA_DIR: join(dir, 'shared'), RULES_FILE: join(dir, 'rules.json'), CREDENTIALS_FILE: join(dir, 'credentials.json'), UPSTREAM_CA_FILE: join(dir, 'upstream-ca.pem'),
    STATIC_HOSTS: `${API}=127.0.0.1`, CA_VALIDITY_SECONDS: '16200',
  };
  return { dir, upstream, env };
}

t.test('a sidecar killed mid-session comes back with the CA the workspace already trusts', async (t) => {
  const { dir, upstream, env } = await setup(t);
  const state = join(dir, 'state');
  const first = await startSidecar(t, { ...env, PROXY_STATE_DIR: state });
  // The workspace process starts: it reads the bundle once and keeps it.
  const trusted = readFileSync(join(env.CA_DIR, CA_BUNDLE_FILE), 'utf8');
  const before = await get(first.proxyPort, upstream.port, trusted);
  t.equal(before.status, 200);
  t.match(JSON.parse(before.body).headers.authorization, `Bearer ${SECRET}`, 'the credential was injected');
  t.equal(statSync(join(state, CA_STATE_KEY)).mode & 0o777, 0o600, 'the kept key is readable by the sidecar user alone');
  const keptCert = readFileSync(join(state, CA_STATE_CERT), 'utf8');

  await kill(first);
  const second = await startSidecar(t, { ...env, PROXY_STATE_DIR: state });
  t.equal(readFileSync(join(state, CA_STATE_CERT), 'utf8'), keptCert, 'the same CA');
  const after = await get(second.proxyPort, upstream.port, trusted);
  t.equal(after.status, 200, 'the process that loaded the CA before the restart still verifies the new proxy\'s leaves');
  t.match(JSON.parse(after.body).headers.authorization, `Bearer ${SECRET}`);
  await kill(second);
});

t.test('an RSA CA kept by an earlier version (before ECDSA CAs) is reused after an upgrade in place', async (t) => {
  const { dir, upstream, env } = await setup(t);
  const state = join(dir, 'state');
  mkdirSync(state, { mode: 0o700 });
  const old = createCA({ commonName: 'workspace-sandbox proxy CA ws-restart', organization: 'workspace-sandbox', validityMs: 4 * 3600_000, keyPair: createKeyPair() });
  writeFileSync(join(state, CA_STATE_KEY), old.keyPair.privateKeyPem, { mode: 0o600 });
  writeFileSync(join(state, CA_STATE_CERT), old.certPem, { mode: 0o600 });
  const s = await startSidecar(t, { ...env, PROXY_STATE_DIR: state });
  t.equal(readFileSync(join(state, CA_STATE_CERT), 'utf8'), old.certPem, 'the kept RSA CA, not a new one');
  const trusted = readFileSync(join(env.CA_DIR, CA_BUNDLE_FILE), 'utf8');
  t.ok(trusted.includes(old.certPem.trimEnd()), 'the workspace bundle holds it');
  const res = await get(s.proxyPort, upstream.port, old.certPem);
  t.equal(res.status, 200, 'leaves signed with the RSA key (sha256WithRSAEncryption) verify against it');
  await kill(s);
});

t.test('the CA lives as long as CA_VALIDITY_SECONDS says (the webhook sets the Pod deadline plus a margin)', async (t) => {
  const { dir, env } = await setup(t);
  const s = await startSidecar(t, { ...env, PROXY_STATE_DIR: join(dir, 'state'), CA_VALIDITY_SECONDS: '7200' });
  const { X509Certificate } = await import('node:crypto');
  const cert = new X509Certificate(readFileSync(join(dir, 'state', CA_STATE_CERT)));
  const lifetime = (Date.parse(cert.validTo) - Date.now()) / 1000;
  t.ok(lifetime > 7200 - 120 && lifetime <= 7200 + 60, `notAfter about 2 h ahead (${Math.round(lifetime)} s)`);
  await kill(s);
});

t.test('without a state dir a restart makes a new CA and the workspace process fails TLS (what the state dir prevents)', async (t) => {
  const { upstream, env } = await setup(t);
  const first = await startSidecar(t, env);
  const trusted = readFileSync(join(env.CA_DIR, CA_BUNDLE_FILE), 'utf8');
  t.equal((await get(first.proxyPort, upstream.port, trusted)).status, 200);
  await kill(first);
  const second = await startSidecar(t, env);
  await t.rejects(get(second.proxyPort, upstream.port, trusted), /certificate|self.signed|issuer/i);
  await kill(second);
});
