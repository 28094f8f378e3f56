import t from 'tap';
import { Redis } from 'ioredis';
import { redisSkipReason, startRedis } from './redis.ts';

t.test('the harness starts a real redis-server, kills and restarts it', { skip: redisSkipReason(true) }, async (t) => {
  const redis = await startRedis(t, { needsControl: true });
  t.ok(redis.owned);
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1, retryStrategy: () => 50 });
  t.teardown(() => client.disconnect());
  await client.set('k', 'v');
  t.equal(await client.get('k'), 'v');
  await redis.kill();
  await t.rejects(client.get('k'));
  await redis.start();
  t.equal(await client.ping(), 'PONG');
  t.equal(await client.get('k'), null, 'a restarted Redis is empty (nothing kept on disk)');
});
