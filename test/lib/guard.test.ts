// The handler guard and the process safety net: an unexpected error is logged with the stable
// code, counted, and recovered from; nothing is swallowed silently.
import t from 'tap';
import { EventEmitter } from 'node:events';
import { createGuard, installProcessSafetyNet, UNCAUGHT_ERROR_MSG, UNCAUGHT_ERRORS_METRIC, UNEXPECTED_ERROR_CODE, UNEXPECTED_ERROR_MSG, UNEXPECTED_ERRORS_METRIC } from '../../lib/guard.ts';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { captureLogs } from '../helpers/log-capture.ts';

async function counterValues(registry: ReturnType<typeof createMetricsRegistry>, name: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await registry.getSingleMetric(name)!.get()).values) out[String(Object.values(v.labels).find((l) => l !== 'test') ?? '')] = v.value;
  return out;
}

t.test('a throw, a rejection and a throwing recovery are each logged with the code, counted and recovered', async (t) => {
  const logs = captureLogs();
  const registry = createMetricsRegistry({ program: 'test', defaultMetrics: false });
  const guard = createGuard({ logger: createLogger({ name: 'test', destination: logs.destination }), registry });
  const recovered: string[] = [];
  guard.run('sync', () => { throw new TypeError('Invalid URL'); }, () => recovered.push('sync'));
  guard.run('async', async () => { throw new Error('later'); }, () => recovered.push('async'));
  guard.run('bad-recover', () => { throw new Error('first'); }, () => { throw new Error('second'); });
  const wrapped = guard.wrap('wrapped', (n: number) => { if (n > 1) throw new Error('big'); }, (_err, n) => recovered.push(`wrapped ${n}`));
  wrapped(1);
  wrapped(2);
  await new Promise((r) => setImmediate(r));
  t.same(recovered.sort(), ['async', 'sync', 'wrapped 2']);
  t.same(await counterValues(registry, UNEXPECTED_ERRORS_METRIC), { sync: 1, async: 1, 'bad-recover': 1, 'bad-recover.recover': 1, wrapped: 1 });
  const lines = logs.find(UNEXPECTED_ERROR_MSG);
  t.equal(lines.length, 5);
  t.ok(lines.every((l) => l.code === UNEXPECTED_ERROR_CODE && l.level === 'error'), 'error level, stable code');
  t.match(lines.find((l) => l.where === 'sync'), { err: { type: 'TypeError', message: 'Invalid URL' } });
  // A second guard on the same registry shares the counter (the proxy and its interceptor).
  createGuard({ logger: createLogger({ name: 'test', destination: logs.destination }), registry }).report('other', new Error('x'));
  t.equal((await counterValues(registry, UNEXPECTED_ERRORS_METRIC)).other, 1);
});

t.test('the process safety net logs and counts uncaught exceptions and unhandled rejections, and can be removed', async (t) => {
  const logs = captureLogs();
  const registry = createMetricsRegistry({ program: 'test', defaultMetrics: false });
  // A stand-in for `process`: emitting on the real one would hand tap's own handlers our test errors.
  const emitter = new EventEmitter();
  const remove = installProcessSafetyNet({ logger: createLogger({ name: 'test', destination: logs.destination }), registry, target: emitter as unknown as NodeJS.Process });
  emitter.emit('uncaughtException', new Error('boom'));
  emitter.emit('unhandledRejection', new Error('nobody caught me'));
  emitter.emit('unhandledRejection', 'a string');
  t.same(await counterValues(registry, UNCAUGHT_ERRORS_METRIC), { exception: 1, rejection: 2 });
  t.equal(logs.find(UNCAUGHT_ERROR_MSG).length, 3);
  t.ok(logs.find(UNCAUGHT_ERROR_MSG).every((l) => l.code === UNEXPECTED_ERROR_CODE));
  remove();
  t.equal(emitter.listenerCount('uncaughtException'), 0);
  t.equal(emitter.listenerCount('unhandledRejection'), 0);
});
