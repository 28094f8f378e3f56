import t from 'tap';
import { createServer } from 'node:http';
import { Counter } from 'prom-client';
import { createMetricsRegistry, metricsHandler } from '../../lib/metrics.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';

t.test('registry serves program-labelled custom and default process metrics', async (t) => {
  const registry = createMetricsRegistry({ program: 'webhook' });
  const c = new Counter({ name: 'things_total', help: 'things', registers: [registry] });
  c.inc(3);
  const server = createServer(metricsHandler(registry));
  const { url } = await listenLocal(server);
  t.teardown(() => closeServer(server));
  const res = await fetch(`${url}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /text\/plain/);
  const body = await res.text();
  t.match(body, /things_total\{program="webhook"\} 3/);
  t.match(body, /process_resident_memory_bytes\{program="webhook"\}/);
  t.match(body, /nodejs_eventloop_lag_seconds/);
});

t.test('registries are independent', async (t) => {
  const a = createMetricsRegistry({ program: 'a', defaultMetrics: false });
  const b = createMetricsRegistry({ program: 'b', defaultMetrics: false });
  new Counter({ name: 'only_in_a', help: 'x', registers: [a] }).inc();
  t.match(await a.metrics(), /only_in_a/);
  t.notMatch(await b.metrics(), /only_in_a/);
});
