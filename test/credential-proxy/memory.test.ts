// The proxy's memory is bounded by its configuration whatever clients do. The proxy runs as the
// image runs it, inside a cgroup v1 memory cgroup of its configured limit, and a crowd of clients
// opens tunnels to a fast upstream and never reads: before the fix ~1,300 such tunnels got the
// proxy OOM-killed at 256 MiB; now the cap derived from the limit sheds the rest with 429 and the
// proxy keeps serving.
import t from 'tap';
import { connect } from 'node:net';
import { HEADER_DENY_REASON } from '../../lib/constants.ts';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import { ByteBudget, createMemoryPressure, maxTunnelsFor, memoryBudget, TUNNEL_WORST_CASE_BYTES } from '../../credential-proxy/memory.ts';
import { ConfigError } from '../../lib/config.ts';
import { stillServing } from '../helpers/fuzz.ts';
import { createMemoryCgroup, memoryCgroupSkipReason, openNonReadingTunnels, spawnProxy, startFastUpstream } from './fixtures/memory-harness.ts';
import { headerOf, rawExchange, startProxy, startUpstreams, statusOf } from './fixtures/proxy-harness.ts';

const MiB = 1024 * 1024;

t.test('non-reading clients against a fast upstream: the proxy survives in a memory cgroup of its limit and keeps serving', { skip: memoryCgroupSkipReason() }, async (t) => {
  const limit = 192 * MiB;
  const up = await startFastUpstream();
  t.teardown(() => up.close());
  const cgroup = createMemoryCgroup(`ws-proxy-memory-${process.pid}`, limit);
  const proxy = await spawnProxy({ upstreamPort: up.port, cgroup, env: { MEMORY_LIMIT_BYTES: String(limit) } });
  t.teardown(async () => {
    await proxy.stop();
    cgroup.remove();
  });
  const cap = maxTunnelsFor(limit);
  const crowd = await openNonReadingTunnels(proxy.port, `fast.test:${up.port}`, 1000);
  t.teardown(() => crowd.closeAll());
  // Let the upstream fill every buffer the proxy lets it fill.
  await new Promise((r) => setTimeout(r, 3000));
  const counts: Record<number, number> = {};
  for (const s of crowd.statuses) counts[s] = (counts[s] ?? 0) + 1;
  t.equal(proxy.ended(), undefined, `the proxy is alive (${JSON.stringify(counts)})`);
  const stats = cgroup.stats();
  t.equal(stats.oomKills, 0, 'no OOM kill in the cgroup');
  t.ok(stats.maxUsageBytes < limit, `peak usage ${Math.round(stats.maxUsageBytes / MiB)} MiB stays under the ${limit / MiB} MiB limit`);
  t.equal(counts[200], cap, `exactly the derived cap (${cap}) of tunnels opened`);
  t.equal(counts[429], 1000 - cap, 'the rest shed with 429');
  t.comment(`RSS with ${cap} non-reading tunnels: ${Math.round(proxy.rss() / MiB)} MiB; cgroup peak ${Math.round(stats.maxUsageBytes / MiB)} MiB`);
  t.ok(await stillServing({ port: proxy.adminPort }), 'admin /healthz answers');

  // Once the crowd leaves, a reading client gets its tunnel and its bytes.
  crowd.closeAll();
  await new Promise((r) => setTimeout(r, 500));
  const got = await new Promise<number>((resolve) => {
    const s = connect(proxy.port, '127.0.0.1');
    let n = 0;
    s.on('data', (c: Buffer) => {
      n += c.length;
      if (n > 4 * MiB) { s.destroy(); resolve(n); }
    });
    s.on('error', () => resolve(n));
    s.write(`CONNECT fast.test:${up.port} HTTP/1.1\r\nHost: fast.test:${up.port}\r\n\r\n`);
  });
  t.ok(got > 4 * MiB, 'a new tunnel relays megabytes again');
});

t.test('the tunnel cap and the signing budget derive from MEMORY_LIMIT_BYTES; a cap the limit cannot hold is refused', async (t) => {
  const config = loadProxyConfig({});
  t.equal(config.MEMORY_LIMIT_BYTES, 256 * MiB, 'default: the sidecar limit');
  t.equal(config.memory.maxTunnels, maxTunnelsFor(256 * MiB));
  t.equal(config.memory.maxTunnels, 256, '256 tunnels at 256 MiB');
  t.ok(config.memory.maxTunnels * TUNNEL_WORST_CASE_BYTES + config.memory.signingBudgetBytes <= 256 * MiB - 128 * MiB, 'tunnels and signing fit above the reserve');
  t.ok(config.SIGNING_BODY_CAP_BYTES <= config.memory.signingBudgetBytes);
  t.equal(loadProxyConfig({ MEMORY_LIMIT_BYTES: String(1024 * MiB) }).memory.maxTunnels, 1792, 'more memory, more tunnels');
  t.equal(loadProxyConfig({ MAX_TUNNELS: '10' }).memory.maxTunnels, 10, 'a lower cap is kept');
  const tooMany = (() => { try { loadProxyConfig({ MAX_TUNNELS: '4096' }); } catch (err) { return err; } })();
  t.ok(tooMany instanceof ConfigError);
  t.match((tooMany as ConfigError).message, /MAX_TUNNELS.*at most 256 with MEMORY_LIMIT_BYTES=268435456/s);
  const bigBodies = (() => { try { loadProxyConfig({ SIGNING_BODY_CAP_BYTES: String(64 * MiB) }); } catch (err) { return err; } })();
  t.match((bigBodies as ConfigError).message, /SIGNING_BODY_CAP_BYTES.*at most/s);
  t.throws(() => memoryBudget(100 * MiB), /reserve/);
  const budget = new ByteBudget(10);
  t.ok(budget.tryTake(6));
  t.notOk(budget.tryTake(5), 'over the budget: nothing taken');
  budget.give(6);
  t.ok(budget.tryTake(10));
});

t.test('near the memory limit new tunnels and requests are shed with 503 and a reason, and counted', async (t) => {
  let rss = 10 * MiB;
  const up = await startUpstreams(t);
  const p = await startProxy(t, {
    rules: [{ id: 'plain', hosts: ['upstream.test'], ports: [up.httpPort], allowPrivate: true }],
    // The resident set is read through this seam; the rest of the proxy is the real one.
    deps: { memoryPressure: createMemoryPressure(200 * MiB, { sampleMs: 0, rss: () => rss }) },
  });
  const connectReq = `CONNECT upstream.test:${up.httpPort} HTTP/1.1\r\nHost: upstream.test:${up.httpPort}\r\n\r\n`;
  const getReq = `GET http://upstream.test:${up.httpPort}/ HTTP/1.1\r\nHost: upstream.test:${up.httpPort}\r\nConnection: close\r\n\r\n`;
  t.equal(statusOf(await rawExchange(p.port, getReq)), 200, 'under the watermark: served');
  rss = 230 * MiB;
  for (const req of [connectReq, getReq]) {
    const raw = await rawExchange(p.port, req);
    t.equal(statusOf(raw), 503);
    t.match(headerOf(raw, HEADER_DENY_REASON)!, /near its memory limit \(230 of 222 MiB\)/);
  }
  const metrics = await (await fetch(`${p.adminUrl}/metrics`)).text();
  t.match(metrics, /proxy_shed_total\{reason="memory"[^}]*\} 2/);
  t.ok(await stillServing({ port: p.adminPort }), 'the admin port still answers');
  rss = 10 * MiB;
  t.equal(statusOf(await rawExchange(p.port, getReq)), 200, 'served again once memory is back');
});
