// Redis as an attacker in the workspace meets it: a real redis-server locked down
// with the shipped ACL, real proxies reading signed rule sets with the read-only user, the backend's
// publisher as the only writer; and TLS to Redis (rediss://) with a CA file.
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { signRuleSet } from '../../credential-proxy/rule-set-signature.ts';
import { publishRuleSet } from '../../credential-proxy/rules-publisher.ts';
import { REDIS_RULES_READER_USER } from '../../lib/constants.ts';
import { generatePodTokenKeys } from '../../lib/pod-token.ts';
import { redisSkipReason } from '../helpers/redis.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { connectOutcome, podProxy, startLockedRedis, until, type PodProxy } from './fixtures/redis-rules.ts';

const PREFIX = 'workspace-sandbox:rules';
const HOUR = 3600_000;
const deadline = () => new Date(Date.now() + HOUR);
/** `redis-cli` as a workspace runs it: stdout and stderr together (errors print there, exit code 0). */
const redisCli = (args: string[]) => new Promise<string>((resolve) => {
  execFile('redis-cli', args, { timeout: 5000 }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`));
});
const versionOf = async (p: PodProxy, token: string) => {
  const res = await fetch(`${p.adminUrl}/rules`, { headers: { authorization: `Bearer ${token}` } });
  return (await res.json() as { version: number; global: { version: number } });
};

t.test('a workspace with network access to Redis and no password reads nothing and writes nothing', { skip: redisSkipReason(true) }, async (t) => {
  const locked = await startLockedRedis(t);
  const writer = locked.writer();
  await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-a', rules: [{ id: 'a', hosts: ['a.test'] }], expiresAt: deadline() });
  const key = `${PREFIX}:scope:pod-a`;

  // No password at all: what `redis-cli` run through /execute in the workspace has.
  const port = String(locked.redis.port);
  const cli = (...args: string[]) => redisCli(['-h', '127.0.0.1', '-p', port, '--no-auth-warning', ...args]);
  for (const args of [['--scan'], ['KEYS', '*'], ['HGETALL', key], ['HGET', key, 'doc'], ['HSET', key, 'doc', 'x'], ['PUBLISH', key, '1'],
    ['EVAL', 'return 1', '0'], ['FLUSHALL'], ['CONFIG', 'GET', '*'], ['ACL', 'LIST'], ['SUBSCRIBE', key]]) {
    t.match(await cli(...args), /NOAUTH/, `no password: ${args.join(' ')} refused`);
  }
  t.match(await cli('AUTH', 'default', ''), /WRONGPASS|disabled/, 'the default user is disabled');
  t.match(await cli('--user', REDIS_RULES_READER_USER, '--pass', 'guessed-password', 'HGET', key, 'doc'), /WRONGPASS|AUTH failed/, 'a wrong password is refused');
  t.match(await cli('--user', 'ws-rules-writer', '--pass', locked.readerPassword, 'HSET', key, 'doc', 'x'), /WRONGPASS|AUTH failed/, 'the reader password is not the writer\'s');

  // The sidecar's read-only user: its keys, read-only; nothing else.
  const reader = locked.client({ username: REDIS_RULES_READER_USER, password: locked.readerPassword });
  t.ok(await reader.hget(key, 'doc'), 'the reader reads a rule set');
  for (const [name, run] of [
    ['HSET', () => reader.hset(key, 'doc', 'x')], ['DEL', () => reader.del(key)], ['PUBLISH', () => reader.publish(key, '1')],
    ['EVAL', () => reader.eval(`redis.call('HSET', KEYS[1], 'doc', 'x')`, 1, key)], ['SCAN', () => reader.scan('0')], ['KEYS', () => reader.keys('*')],
    ['HGETALL', () => reader.hgetall(key)], ['SET elsewhere', () => reader.set('other', '1')], ['HGET elsewhere', () => reader.hget('other', 'x')],
    ['FLUSHALL', () => reader.flushall()], ['CONFIG', () => reader.config('GET', '*')], ['ACL', () => reader.acl('LIST')],
  ] as const) {
    await t.rejects((run as () => Promise<unknown>)(), /NOPERM/, `reader: ${name} refused`);
  }
  t.equal(await writer.hget(key, 'version').then(Number) > 0, true, 'the set is intact');
});

t.test('a tampered, foreign, replayed or unsigned rule set in Redis is ignored by the proxy', { skip: redisSkipReason(true) }, async (t) => {
  const locked = await startLockedRedis(t);
  const writer = locked.writer();
  const p = await podProxy(t, locked, 'pod-a');
  const token = await locked.token('pod-a');
  const key = `${PREFIX}:scope:pod-a`;

  const v1 = await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-a', rules: [{ id: 'ok', hosts: ['ok.test'] }], expiresAt: deadline() });
  await until('the proxy applies the signed set', async () => (await versionOf(p, token)).version === v1.version);
  t.equal(await connectOutcome(p, 'ok.test'), 'allowed');
  const signedV1 = (await writer.hget(key, 'doc'))!;
  const v2 = await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-a', rules: [{ id: 'ok2', hosts: ['ok2.test'] }], expiresAt: deadline() });
  await until('v2 applied', async () => (await versionOf(p, token)).version === v2.version);

  // Whoever can write Redis (the ACL is the first fence; here it is assumed broken) tries:
  const other = generatePodTokenKeys();
  const [header, payload, sig] = signedV1.split('.');
  const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
  const evil = { ...claims, version: v2.version + 10, rules: [{ id: 'evil', hosts: ['evil.test'], allowPrivate: true }] };
  const forged = [
    ['rules edited under the backend\'s signature', `${header}.${Buffer.from(JSON.stringify(evil)).toString('base64url')}.${sig}`],
    ['signed with a key the proxy does not trust', await signRuleSet(other.privateKeyPem, { set: 'scope', scope: 'pod-a', version: v2.version + 10, rules: evil.rules })],
    ['signed for another pod', await signRuleSet(locked.keys.privateKeyPem, { set: 'scope', scope: 'pod-b', version: v2.version + 10, expiresAt: Date.now() + HOUR, rules: evil.rules })],
    ['the global set passed off as the pod\'s', await signRuleSet(locked.keys.privateKeyPem, { set: 'global', scope: 'global', version: v2.version + 10, rules: evil.rules })],
    ['an expired set', await signRuleSet(locked.keys.privateKeyPem, { set: 'scope', scope: 'pod-a', version: v2.version + 10, expiresAt: Date.now() - 1, rules: evil.rules })],
    ['a per-pod /rules token instead of a set', await locked.token('pod-a')],
    ['an older set replayed', signedV1],
    ['plain JSON', JSON.stringify({ version: v2.version + 10, rules: evil.rules })],
  ] as const;
  let rejected = 0;
  for (const [what, doc] of forged) {
    await writer.hset(key, 'version', v2.version + 10, 'doc', doc);
    await writer.publish(key, 'x');
    if (what !== 'an older set replayed') rejected++;
    await until(`${what}: seen`, () => (what === 'an older set replayed' ? p.storeLogs.text().includes('not newer') : (p.proxy.store.status() as { rejectedSets?: number }).rejectedSets === rejected));
    t.equal(await connectOutcome(p, 'evil.test'), 'denied', `${what}: not enforced`);
    t.equal((await versionOf(p, token)).version, v2.version, `${what}: the version in force is unchanged`);
  }
  t.equal(await connectOutcome(p, 'ok2.test'), 'allowed', 'the backend\'s set is still in force');
  t.match(await (await fetch(`${p.adminUrl}/metrics`)).text(), new RegExp(`rules_sets_rejected_total\\{[^}]*set="scope"[^}]*\\} ${rejected}`), 'counted for alerting');
  t.match(p.storeLogs.text(), /bad signature/);
  t.match(p.storeLogs.text(), /signed by an unknown key/);
  t.match(p.storeLogs.text(), /signed for scope pod-b/);

  // A signed set naming a credential this sidecar does not declare (or beyond its hosts) is refused whole.
  await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-a', rules: [{ id: 'c', hosts: ['c.test'], credential: 'undeclared' }], expiresAt: deadline() });
  await until('refused', () => (p.proxy.store.status() as { rejectedSets?: number }).rejectedSets === rejected + 1);
  t.equal(await connectOutcome(p, 'c.test'), 'denied');
});

t.test('one channel and one key per pod; keys expire at the pod deadline; the global set reaches every pod', { skip: redisSkipReason(true) }, async (t) => {
  const locked = await startLockedRedis(t);
  const writer = locked.writer();
  const a = await podProxy(t, locked, 'pod-a');
  const b = await podProxy(t, locked, 'pod-b');
  const expiresAt = deadline();
  const pub = await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-a', rules: [{ id: 'a', hosts: ['a.test'] }], expiresAt });
  t.equal(pub.key, `${PREFIX}:scope:pod-a`);
  const pexpire = await writer.eval(`return redis.call('PEXPIRETIME', KEYS[1])`, 1, pub.key).catch(() => undefined);
  if (pexpire !== undefined) t.equal(Number(pexpire), expiresAt.getTime(), 'the key expires at the pod deadline');
  await until('a applies', async () => (await versionOf(a, await locked.token('pod-a'))).version === pub.version);
  t.equal(await connectOutcome(a, 'a.test'), 'allowed');
  t.equal(await connectOutcome(b, 'a.test'), 'denied', 'another pod is untouched');
  t.match(a.storeLogs.text(), /applied a published rule set/);
  t.notMatch(b.storeLogs.text(), /applied a published rule set/, 'and was not even woken: its channel is its own');
  await t.rejects(publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-a', rules: [] }), /needs expiresAt/);

  const g = await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, rules: [{ id: 'pypi', hosts: ['pypi.test'] }] });
  for (const p of [a, b]) await until('global applied', async () => (await versionOf(p, await locked.token(p === a ? 'pod-a' : 'pod-b'))).global.version === g.version);
  t.equal(await connectOutcome(b, 'pypi.test'), 'allowed', 'the global set is in force everywhere');
});

t.test('rediss://: the proxy reads signed sets over TLS with REDIS_CA_FILE; without that CA it never trusts the server', { skip: redisSkipReason(true) }, async (t) => {
  const pki = makeTestPki(['localhost']);
  const dir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'ws-redis-tls-'));
  t.teardown(() => import('node:fs').then((fs) => fs.rmSync(dir, { recursive: true, force: true })));
  for (const [name, text] of [['ca.pem', pki.caPem], ['cert.pem', pki.certPem], ['key.pem', pki.keyPem]] as const) writeFileSync(join(dir, name), text);
  const locked = await startLockedRedis(t, { tls: { certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), caFile: join(dir, 'ca.pem') }, tlsCaFile: join(dir, 'ca.pem') });
  t.match(locked.redis.url, /^rediss:\/\//);
  const writer = locked.writer();
  const pub = await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-tls', rules: [{ id: 'tls', hosts: ['tls.test'] }], expiresAt: deadline() });
  const p = await podProxy(t, locked, 'pod-tls', { env: { REDIS_CA_FILE: join(dir, 'ca.pem') } });
  await until('applied over TLS', async () => (await versionOf(p, await locked.token('pod-tls'))).version === pub.version);
  t.equal(await connectOutcome(p, 'tls.test'), 'allowed');

  // The same proxy without the CA (system trust only) refuses the server's certificate.
  const blind = await podProxy(t, locked, 'pod-tls-2');
  await new Promise((r) => setTimeout(r, 500));
  const status = blind.proxy.store.status();
  t.equal(status.up, false, 'no connection to a server it cannot verify');
  t.match(status.lastError ?? '', /certificate|self.signed|unable to verify/i);
});
