import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, env, parseConfig, pickEnv, readConfigFile } from '../../lib/config.ts';

const schema = z.object({
  PORT: env.port().default(8080),
  HOST: env.string().default('127.0.0.1'),
  LOG_LEVEL: env.logLevel().default('info'),
  DRAIN_TIMEOUT_MS: env.int(0, 600_000).default(10_000),
  DEV: env.bool().default(false),
  DOMAINS: env.list().default([]),
});

t.test('defaults fill absent and empty values; the result is deep-frozen', async (t) => {
  const input = pickEnv(schema, { PORT: '', HOST: '  ', DOMAINS: 'a.example, b.example,,', UNRELATED: 'x' });
  t.same(input, { DOMAINS: 'a.example, b.example,,' });
  const cfg = parseConfig(schema, input);
  t.same(cfg, { PORT: 8080, HOST: '127.0.0.1', LOG_LEVEL: 'info', DRAIN_TIMEOUT_MS: 10_000, DEV: false, DOMAINS: ['a.example', 'b.example'] });
  t.ok(Object.isFrozen(cfg));
  t.ok(Object.isFrozen(cfg.DOMAINS));
  t.throws(() => { (cfg as { PORT: number }).PORT = 1; }, TypeError);
});

t.test('env strings are coerced', async (t) => {
  const cfg = parseConfig(schema, { PORT: '9090', DEV: 'yes', DRAIN_TIMEOUT_MS: '250' });
  t.equal(cfg.PORT, 9090);
  t.equal(cfg.DEV, true);
  t.equal(cfg.DRAIN_TIMEOUT_MS, 250);
});

t.test('three bad fields are all reported in one error with field, value and why', async (t) => {
  let err: unknown;
  try {
    parseConfig(schema, { PORT: '70000', LOG_LEVEL: 'verbose', DEV: 'maybe' }, 'proxy environment');
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof ConfigError);
  const ce = err as ConfigError;
  t.equal(ce.code, 'WS_ERR_CONFIG_INVALID');
  t.same(ce.problems.map((p) => p.field).sort(), ['DEV', 'LOG_LEVEL', 'PORT']);
  t.same(ce.problems.find((p) => p.field === 'PORT')?.value, '70000');
  t.match(ce.message, /invalid proxy environment: 3 problems/);
  t.match(ce.message, /PORT: must be 0-65535 \(got "70000"\)/);
  t.match(ce.message, /LOG_LEVEL: must be one of fatal/);
  t.match(ce.message, /DEV: must be true or false \(got "maybe"\)/);
});

t.test('nested file fields are named by path', async (t) => {
  const fileSchema = z.object({ sidecar: z.object({ image: z.string().min(1), ports: z.array(z.number().int()) }) }).strict();
  const err = t.throws(() => parseConfig(fileSchema, { sidecar: { image: '', ports: [1, 'x'] }, extra: true })) as ConfigError;
  t.same(err.problems.map((p) => p.field).sort(), ['(root)', 'sidecar.image', 'sidecar.ports[1]']);
});

t.test('config files: YAML parsed, unreadable and malformed files are config errors', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-config-'));
  const good = join(dir, 'good.yaml');
  writeFileSync(good, 'a: 1\nb: [x, y]\n');
  t.same(readConfigFile(good), { a: 1, b: ['x', 'y'] });
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'a: [1, 2\n');
  t.throws(() => readConfigFile(bad), { code: 'WS_ERR_CONFIG_INVALID', message: /not valid YAML/ });
  const dup = join(dir, 'dup.yaml');
  writeFileSync(dup, 'a: 1\na: 2\n');
  t.throws(() => readConfigFile(dup), { code: 'WS_ERR_CONFIG_INVALID' });
  t.throws(() => readConfigFile(join(dir, 'missing.yaml')), { code: 'WS_ERR_CONFIG_INVALID', message: /cannot read/ });
  const empty = join(dir, 'empty.yaml');
  writeFileSync(empty, '');
  t.same(readConfigFile(empty), {});
});

t.test('long values are shortened in messages', async (t) => {
  const err = t.throws(() => parseConfig(schema, { HOST: 5, LOG_LEVEL: 'x'.repeat(500) })) as ConfigError;
  t.ok(err.message.length < 600);
  t.match(err.message, /…/);
});
