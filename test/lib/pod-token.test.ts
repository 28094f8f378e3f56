import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { SignJWT } from 'jose';
import { MAX_POD_TOKEN_TTL_SECONDS, PodTokenVerifier, generatePodTokenKeys, signPodToken } from '../../lib/pod-token.ts';

const POD_A = '0f1c2d3e-0000-4000-8000-00000000000a';
const POD_B = '0f1c2d3e-0000-4000-8000-00000000000b';

function keysFile(t: { teardown: (fn: () => void) => void }, ...pems: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'pod-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'public.pem');
  writeFileSync(path, pems.join('\n'));
  return path;
}

t.test('a token opens only its own pod and purpose', async (t) => {
  const keys = generatePodTokenKeys();
  const verifier = new PodTokenVerifier(keysFile(t, keys.publicKeyPem));
  const token = await signPodToken(keys.privateKeyPem, { purpose: 'agent', podUid: POD_A, ttlSeconds: 300 });
  t.match(await verifier.verify(token, { purpose: 'agent', podUid: POD_A }), { ok: true });
  // twice: the second answer comes from the cache and must apply the same checks
  for (let i = 0; i < 2; i++) {
    t.same(await verifier.verify(token, { purpose: 'agent', podUid: POD_B }), { ok: false, reason: 'token is for another pod' });
    t.same(await verifier.verify(token, { purpose: 'rules', podUid: POD_A }), { ok: false, reason: 'token is for agent, not rules' });
  }
  t.same(await verifier.verify(undefined, { purpose: 'agent', podUid: POD_A }), { ok: false, reason: 'no token' });
});

t.test('forged, tampered, expired and foreign tokens are refused with a reason', async (t) => {
  const keys = generatePodTokenKeys();
  const other = generatePodTokenKeys();
  const verifier = new PodTokenVerifier(keysFile(t, keys.publicKeyPem));
  const expect = { purpose: 'rules', podUid: POD_A } as const;

  const forged = await signPodToken(other.privateKeyPem, { purpose: 'rules', podUid: POD_A, ttlSeconds: 300 });
  t.same(await verifier.verify(forged, expect), { ok: false, reason: 'token signed by an unknown key' });

  const good = await signPodToken(keys.privateKeyPem, { purpose: 'rules', podUid: POD_B, ttlSeconds: 300 });
  const [h, p, s] = good.split('.');
  const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
  const swapped = `${h}.${Buffer.from(JSON.stringify({ ...payload, sub: POD_A })).toString('base64url')}.${s}`;
  t.same(await verifier.verify(swapped, expect), { ok: false, reason: 'bad signature' }, 'changing the pod breaks the signature');

  const privateKey = createPrivateKey(keys.privateKeyPem);
  const now = Math.floor(Date.now() / 1000);
  const expired = await new SignJWT({}).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('workspace-sandbox')
    .setAudience('workspace-sandbox/rules').setSubject(POD_A).setIssuedAt(now - 600).setExpirationTime(now - 300).sign(privateKey);
  t.same(await verifier.verify(expired, expect), { ok: false, reason: 'token expired' });

  const noExp = await new SignJWT({}).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('workspace-sandbox')
    .setAudience('workspace-sandbox/rules').setSubject(POD_A).sign(privateKey);
  t.same(await verifier.verify(noExp, expect), { ok: false, reason: 'token claim exp missing' });

  const forever = await new SignJWT({}).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('workspace-sandbox')
    .setAudience('workspace-sandbox/rules').setSubject(POD_A).setIssuedAt(now).setExpirationTime(now + MAX_POD_TOKEN_TTL_SECONDS + 60).sign(privateKey);
  t.same(await verifier.verify(forever, expect), { ok: false, reason: 'token claim exp invalid' });

  const wrongIssuer = await new SignJWT({}).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('someone-else')
    .setAudience('workspace-sandbox/rules').setSubject(POD_A).setExpirationTime(now + 60).sign(privateKey);
  t.same(await verifier.verify(wrongIssuer, expect), { ok: false, reason: 'token claim iss invalid' });

  // alg "none" and HMAC with the public key as secret (the classic JWT confusions)
  const none = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify({ ...payload, sub: POD_A, aud: 'workspace-sandbox/rules' })).toString('base64url')}.`;
  t.same(await verifier.verify(none, expect), { ok: false, reason: 'token algorithm not allowed' });
  const hs = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setIssuer('workspace-sandbox')
    .setAudience('workspace-sandbox/rules').setSubject(POD_A).setExpirationTime(now + 60).sign(Buffer.from(keys.publicKeyPem));
  t.same(await verifier.verify(hs, expect), { ok: false, reason: 'token algorithm not allowed' });

  for (const junk of ['x', 'a.b.c', '...', '%%%.%%%.%%%', 'e30.e30.', 'x'.repeat(5000)]) {
    const r = await verifier.verify(junk, expect);
    t.equal(r.ok, false, `junk ${junk.slice(0, 20)} refused`);
  }
});

t.test('rotation: both keys verify while listed, a dropped key stops verifying', async (t) => {
  const oldKeys = generatePodTokenKeys();
  const newKeys = generatePodTokenKeys();
  const path = keysFile(t, oldKeys.publicKeyPem, newKeys.publicKeyPem);
  const verifier = new PodTokenVerifier(path);
  const expect = { purpose: 'agent', podUid: POD_A } as const;
  const oldToken = await signPodToken(oldKeys.privateKeyPem, { purpose: 'agent', podUid: POD_A, ttlSeconds: 300 });
  const newToken = await signPodToken(newKeys.privateKeyPem, { purpose: 'agent', podUid: POD_A, ttlSeconds: 300 });
  t.match(await verifier.verify(oldToken, expect), { ok: true });
  t.match(await verifier.verify(newToken, expect), { ok: true });

  writeFileSync(path, newKeys.publicKeyPem);
  const later = new Date(Date.now() + 5000);
  utimesSync(path, later, later);
  t.same(await verifier.verify(oldToken, expect), { ok: false, reason: 'token signed by an unknown key' }, 'the cache is dropped with the key');
  t.match(await verifier.verify(newToken, expect), { ok: true });

  writeFileSync(path, 'garbage');
  const evenLater = new Date(Date.now() + 10000);
  utimesSync(path, evenLater, evenLater);
  t.match(await verifier.verify(newToken, expect), { ok: true }, 'an unreadable rotation keeps the last good keys');
});

t.test('bad key material is a configuration error that says what is wrong', async (t) => {
  t.throws(() => new PodTokenVerifier('/nonexistent/public.pem'), { code: 'WS_ERR_CONFIG_INVALID', message: /cannot read/ });
  t.throws(() => new PodTokenVerifier(keysFile(t, 'not a pem')), { code: 'WS_ERR_CONFIG_INVALID', message: /no PEM public key/ });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
  t.throws(() => new PodTokenVerifier(keysFile(t, rsa)), { code: 'WS_ERR_CONFIG_INVALID', message: /rsa key; pod tokens are Ed25519/ });
  await t.rejects(signPodToken('nope', { purpose: 'agent', podUid: POD_A, ttlSeconds: 60 }), { code: 'WS_ERR_CONFIG_INVALID' });
  const keys = generatePodTokenKeys();
  await t.rejects(signPodToken(keys.privateKeyPem, { purpose: 'agent', podUid: '', ttlSeconds: 60 }), { code: 'WS_ERR_VALIDATION' });
  await t.rejects(signPodToken(keys.privateKeyPem, { purpose: 'agent', podUid: POD_A, ttlSeconds: MAX_POD_TOKEN_TTL_SECONDS + 1 }), { code: 'WS_ERR_VALIDATION' });
  await t.rejects(signPodToken(keys.privateKeyPem, { purpose: 'other' as 'agent', podUid: POD_A, ttlSeconds: 60 }), { code: 'WS_ERR_VALIDATION' });
});
