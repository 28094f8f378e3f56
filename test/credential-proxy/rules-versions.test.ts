// Acknowledged rule changes never roll back and survive a sidecar restart: real proxies, a real
// redis-server killed and restarted empty, the backend's publisher, and the sidecar's state directory.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import { publishRuleSet } from '../../credential-proxy/rules-publisher.ts';
import { createRulesStore } from '../../credential-proxy/rules-store-factory.ts';
import { createLogger } from '../../lib/log.ts';
import { redisSkipReason } from '../helpers/redis.ts';
import { startProxy, type StartedProxy } from './fixtures/proxy-harness.ts';
import { connectOutcome, podProxy, startLockedRedis, until } from './fixtures/redis-rules.ts';

const HOUR = 3600_000;
const TRIES = 300;

function put(p: StartedProxy, token: string, rules: unknown[]) {
  return fetch(`${p.adminUrl}/rules`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(rules) });
}
async function view(p: StartedProxy, token: string) {
  return await (await fetch(`${p.adminUrl}/rules`, { headers: { authorization: `Bearer ${token}` } })).json() as { version: number; rules: { id: string }[] };
}

t.test('revoke then immediate CONNECT through a real proxy is refused in every try (Redis-backed, with the backend publishing)', { skip: redisSkipReason(true) }, async (t) => {
  const locked = await startLockedRedis(t);
  const p = await podProxy(t, locked, 'pod-revoke');
  const token = await locked.token('pod-revoke');
  const writer = locked.writer();
  // Another pod's sets keep being published meanwhile, so the Redis path is busy during the test.
  let publishing = true;
  const noise = (async () => {
    while (publishing) await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-other', rules: [{ id: 'n', hosts: ['noise.test'] }], expiresAt: new Date(Date.now() + HOUR) });
  })();
  let leaked = 0;
  let lastVersion = 0;
  for (let i = 0; i < TRIES; i++) {
    const granted = await put(p, token, [{ id: 'target', hosts: ['revoked.test'] }]);
    t.equal(granted.status, 200);
    if (await connectOutcome(p, 'revoked.test') !== 'allowed') t.fail(`try ${i}: the grant was not in force after its 200`);
    const revoked = await put(p, token, []);
    const version = (await revoked.json() as { version: number }).version;
    if (revoked.status !== 200 || version <= lastVersion) t.fail(`try ${i}: revoke answered ${revoked.status} v${version}`);
    lastVersion = version;
    if (await connectOutcome(p, 'revoked.test') !== 'denied') leaked++;
  }
  publishing = false;
  await noise;
  t.equal(leaked, 0, `a revoked host was reachable after the 200 in ${leaked} of ${TRIES} tries`);
  t.equal(lastVersion, 2 * TRIES, 'one version per write, none skipped or reused');
});

t.test('Redis killed during a write storm, then restarted empty: no acknowledged write is lost, no version reused, nothing older resurrected', { skip: redisSkipReason(true) }, async (t) => {
  const locked = await startLockedRedis(t);
  const p = await podProxy(t, locked, 'pod-storm');
  const token = await locked.token('pod-storm');
  const writer = locked.writer();
  const acked = new Map<number, string>();
  const seen: number[] = [];
  let stop = false;
  let n = 0;
  const writers = Array.from({ length: 4 }, async () => {
    while (!stop) {
      const id = `w${n++}`;
      const res = await put(p, token, [{ id, hosts: [`${id}.test`] }]);
      if (res.status !== 200) continue;
      const { version } = await res.json() as { version: number };
      if (acked.has(version)) t.fail(`version ${version} acknowledged twice`);
      acked.set(version, id);
    }
  });
  const sampler = (async () => {
    while (!stop) {
      seen.push((await view(p, token)).version);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  // The backend publishes too, so Redis holds this pod's set when it dies.
  const before = await publishRuleSet(writer, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-storm', rules: [{ id: 'published', hosts: ['published.test'] }], expiresAt: new Date(Date.now() + HOUR) });
  const oldDoc = (await writer.hget(before.key, 'doc'))!;
  await new Promise((r) => setTimeout(r, 300));
  await locked.redis.kill();
  await new Promise((r) => setTimeout(r, 400));
  await locked.redis.start();
  await until('the proxy is back on Redis', () => p.proxy.store.status().up);
  await new Promise((r) => setTimeout(r, 300));
  stop = true;
  await Promise.all([...writers, sampler]);

  t.ok(acked.size > 20, `${acked.size} writes acknowledged during the storm`);
  for (let i = 1; i < seen.length; i++) if (seen[i]! < seen[i - 1]!) t.fail(`the version went back from ${seen[i - 1]} to ${seen[i]}`);
  const last = Math.max(...acked.keys());
  const final = await view(p, token);
  t.equal(final.version, last, 'the last acknowledged version is the one in force');
  t.same(final.rules.map((r) => r.id), [acked.get(last)], 'with its content');
  t.equal(await connectOutcome(p, `${acked.get(last)}.test`), 'allowed');

  // Replaying the backend's older set into the empty Redis changes nothing.
  const fresh = locked.writer();
  await fresh.hset(before.key, 'version', 1, 'doc', oldDoc);
  await fresh.publish(before.key, '1');
  await until('the replay was looked at', () => p.storeLogs.text().includes('not newer'));
  t.equal((await view(p, token)).version, last, 'an older set is never resurrected');
  t.equal(await connectOutcome(p, 'published.test'), 'denied');

  // A new publication on the empty Redis gets a version above everything acknowledged.
  await fresh.del(before.key).catch(() => undefined);
  const after = await publishRuleSet(fresh, { signingKeyPem: locked.keys.privateKeyPem, scope: 'pod-storm', rules: [{ id: 'after', hosts: ['after.test'] }], expiresAt: new Date(Date.now() + HOUR) });
  t.ok(after.version > last && after.version > before.version, 'no version is handed out twice across a Redis restart');
  await until('applied', async () => (await view(p, token)).version === after.version);
  t.equal(await connectOutcome(p, 'after.test'), 'allowed');
});

t.test('concurrent writes: all applied one at a time, none lost; with If-Match all but one answer 412; no status outside the spec', async (t) => {
  const token = 'concurrent-token-0123456789';
  const p = await startProxy(t, { tokens: [token] });
  const plain = await Promise.all(Array.from({ length: 40 }, (_, i) => put(p, token, [{ id: `c${i}`, hosts: [`c${i}.test`] }])));
  t.same([...new Set(plain.map((r) => r.status))], [200], 'every concurrent write succeeds (no 409)');
  const versions = await Promise.all(plain.map(async (r) => (await r.json() as { version: number }).version));
  t.same([...versions].sort((a, b) => a - b), Array.from({ length: 40 }, (_, i) => i + 1), 'each got its own version');
  const guarded = await Promise.all(Array.from({ length: 40 }, (_, i) => fetch(`${p.adminUrl}/rules`, {
    method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'if-match': '"40"' }, body: JSON.stringify([{ id: `g${i}`, hosts: [`g${i}.test`] }]),
  })));
  const statuses = guarded.map((r) => r.status).sort();
  t.equal(statuses.filter((s) => s === 200).length, 1, 'one If-Match write wins');
  t.equal(statuses.filter((s) => s === 412).length, 39, 'the others are told the set moved');
  t.equal((await view(p, token)).version, 41);
});

t.test('the sidecar restarts: its rule set and version come back from RULES_STATE_DIR; another pod\'s state is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'tokens'), 'backend:state-token-0123456789\n');
  const env = { PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', RULES_SCOPE: 'pod-state', RULES_STATE_DIR: join(dir, 'state'), RULES_TOKEN_FILE: join(dir, 'tokens') };
  const token = 'state-token-0123456789';
  const boot = async () => {
    const config = loadProxyConfig(env);
    const store = createRulesStore(config, createLogger({ name: 'store', level: 'silent' }));
    return startProxy(t, { env, deps: { store } });
  };
  const first = await boot();
  for (const id of ['one', 'two', 'three']) t.equal((await put(first, token, [{ id, hosts: [`${id}.test`] }])).status, 200);
  t.equal(await connectOutcome(first, 'three.test'), 'allowed');
  await first.proxy.close();

  const second = await boot();
  const v = await view(second, token);
  t.equal(v.version, 3, 'same version after the restart');
  t.same(v.rules.map((r) => r.id), ['three']);
  t.equal(await connectOutcome(second, 'three.test'), 'allowed', 'enforced from the first request');
  t.equal((await (await put(second, token, [])).json() as { version: number }).version, 4, 'the next write continues the sequence');
  const saved = JSON.parse(readFileSync(join(dir, 'state', 'rules.json'), 'utf8'));
  t.equal(saved.scope, 'pod-state');
  await second.proxy.close();

  const foreign = { ...env, RULES_SCOPE: 'pod-other' };
  const store = createRulesStore(loadProxyConfig(foreign), createLogger({ name: 'store', level: 'silent' }));
  await t.rejects(store.start(), /belongs to scope "pod-state"/, 'a state file of another pod is never loaded');
  // The sidecar comes back with a CREDENTIALS_FILE that no longer declares what a saved rule names.
  const saved2 = JSON.parse(readFileSync(join(dir, 'state', 'rules.json'), 'utf8'));
  writeFileSync(join(dir, 'state', 'rules.json'), JSON.stringify({ ...saved2, scoped: { version: 9, rules: [{ id: 'gone', hosts: ['gone.test'], credential: 'removed' }] } }));
  const third = await boot();
  const after = await view(third, token);
  t.same([after.version, after.rules], [9, []], 'the unacceptable set is dropped (fail closed), its version kept');
  t.equal(await connectOutcome(third, 'gone.test'), 'denied');
  t.equal((await (await put(third, token, [])).json() as { version: number }).version, 10, 'no version is handed out twice');
  await third.proxy.close();
  writeFileSync(join(dir, 'state', 'rules.json'), '{"format":1,');
  await t.rejects(createRulesStore(loadProxyConfig(env), createLogger({ name: 'store', level: 'silent' })).start(), /is not a saved rule state/, 'nor a torn one');
});
