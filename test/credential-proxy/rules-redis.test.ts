// The Redis rules store against a real redis-server: sharing, outage, resync, concurrency.
import t from 'tap';
import { createLogger } from '../../lib/log.ts';
import { RedisRulesStore } from '../../credential-proxy/rules-store-redis.ts';
import { redisSkipReason, startRedis, type RedisServer } from '../helpers/redis.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { rawExchange, startProxy, statusOf, type StartedProxy, type TeardownHost } from './fixtures/proxy-harness.ts';

const TOKEN = 'redis-rules-token-0a9b8c7d6e';
const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

async function proxyOn(t: TeardownHost, redis: RedisServer, scope: string, extra: Record<string, string> = {}): Promise<StartedProxy> {
  const logs = captureLogs();
  const store = new RedisRulesStore({ url: redis.url, scope, prefix: `test:${process.pid}`, logger: createLogger({ name: 'store', destination: logs.destination }), startTimeoutMs: 1000 });
  return startProxy(t, { tokens: [`backend:${TOKEN}`], env: { REDIS_URL: redis.url, RULES_SCOPE: scope, ...extra }, deps: { store } });
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const rulesOf = async (p: StartedProxy) => (await (await fetch(`${p.adminUrl}/rules`, { headers: auth })).json()) as { version: number; rules: { id: string }[] };
const put = (p: StartedProxy, rules: unknown[], ifMatch?: number) =>
  fetch(`${p.adminUrl}/rules`, { method: 'PUT', headers: { ...auth, ...(ifMatch === undefined ? {} : { 'if-match': `"${ifMatch}"` }) }, body: JSON.stringify(rules) });
const decision = async (p: StartedProxy, host: string) => statusOf(await rawExchange(p.port, `CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`));

t.test('two proxies share a scope through Redis; outage keeps rules, refuses writes; restart resyncs', { skip: redisSkipReason(true) }, async (t) => {
  const redis = await startRedis(t, { needsControl: true });
  const a = await proxyOn(t, redis, 'pod-uid-1');
  const b = await proxyOn(t, redis, 'pod-uid-1');
  const other = await proxyOn(t, redis, 'pod-uid-2');

  // The names resolve to loopback, so an allowed CONNECT ends as a 403 from the SSRF guard with
  // "non-public address", while a host without a rule is "not in the allowlist".
  const allowed = async (p: StartedProxy, host: string) => /non-public address/.test(await rawExchange(p.port, `CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`));

  t.equal((await put(a, [{ id: 'shared', hosts: ['shared.test'] }], 0)).status, 200);
  await until('b sees the rule', async () => (await rulesOf(b)).version === 1);
  t.same((await rulesOf(b)).rules.map((r) => r.id), ['shared']);
  t.ok(await allowed(b, 'shared.test'), 'the rule is in force on the other replica');
  t.equal((await rulesOf(other)).version, 0, 'another scope is untouched');
  t.notOk(await allowed(other, 'shared.test'));

  // Concurrent writers with the same If-Match: exactly one wins.
  const [r1, r2] = await Promise.all([put(a, [{ id: 'x1', hosts: ['x1.test'] }], 1), put(b, [{ id: 'x2', hosts: ['x2.test'] }], 1)]);
  t.same([r1.status, r2.status].sort(), [200, 412], 'stale If-Match → 412');
  await until('both at version 2', async () => (await rulesOf(a)).version === 2 && (await rulesOf(b)).version === 2);
  const winner = (await rulesOf(a)).rules[0]!.id;
  t.equal((await rulesOf(b)).rules[0]!.id, winner);

  // Redis dies: last known rules keep serving, the outage is visible, writes are refused.
  await redis.kill();
  await until('a notices the outage', async () => (await (await fetch(`${a.adminUrl}/readyz`)).json() as { store: { up: boolean } }).store.up === false);
  t.ok(await allowed(a, `${winner}.test`), 'last known rules still served');
  const ready = await (await fetch(`${a.adminUrl}/readyz`)).json() as { status: string; store: { up: boolean; kind: string } };
  t.match(ready, { status: 'ready', store: { kind: 'redis', up: false } }, 'readyz details report the store down');
  t.match(await (await fetch(`${a.adminUrl}/metrics`)).text(), /rules_store_up\{program="credential-proxy"\} 0/);
  const during = await put(a, [{ id: 'lost', hosts: ['lost.test'] }]);
  t.equal(during.status, 503, 'a write while Redis is down is refused');
  t.match((await during.json() as { error: { message: string } }).error.message, /NOT applied/);
  t.equal((await rulesOf(a)).version, 2, 'and nothing changed locally');

  // Redis comes back empty: the proxies reconnect, re-seed, and sharing works again.
  await redis.start();
  await until('a reconnects', async () => (await (await fetch(`${a.adminUrl}/readyz`)).json() as { store: { up: boolean } }).store.up);
  await until('b reconnects', async () => (await (await fetch(`${b.adminUrl}/readyz`)).json() as { store: { up: boolean } }).store.up);
  t.match(await (await fetch(`${a.adminUrl}/metrics`)).text(), /rules_store_up\{program="credential-proxy"\} 1/);
  const resynced = await until('re-seeded at version 2', async () => { const r = await rulesOf(a); return r.version === 2 && r; });
  t.equal(resynced.rules[0]!.id, winner, 'the rule set survived a Redis restart without persistence');
  t.equal((await put(b, [{ id: 'after', hosts: ['after.test'] }], 2)).status, 200, 'version continues monotonically');
  await until('a resyncs from b', async () => (await rulesOf(a)).version === 3);
  t.ok(await allowed(a, 'after.test'));
  t.equal(await decision(a, `${winner}.test`), 403);
});

t.test('Redis unreachable at start: static rules serve, the store is retried in the background', { skip: redisSkipReason(true) }, async (t) => {
  const redis = await startRedis(t, { needsControl: true });
  await redis.kill();
  const p = await proxyOn(t, redis, 'pod-uid-late', { ALLOWED_DOMAINS: 'static.test' });
  const ready = await fetch(`${p.adminUrl}/readyz`);
  t.equal(ready.status, 200, 'ready with file/env rules');
  t.match(await ready.json(), { store: { up: false, synced: false } });
  t.match(await rawExchange(p.port, 'CONNECT static.test:443 HTTP/1.1\r\nHost: x\r\n\r\n'), /non-public address/, 'env rule served');
  t.equal((await put(p, [])).status, 503);
  await redis.start();
  await until('store up and synced', async () => {
    const r = await (await fetch(`${p.adminUrl}/readyz`)).json() as { store: { up: boolean; synced: boolean } };
    return r.store.up && r.store.synced;
  });
  t.equal((await put(p, [{ id: 'late', hosts: ['late.test'] }], 0)).status, 200);
});
