import t from 'tap';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../lib/config.ts';
import { PORTS } from '../../lib/constants.ts';
import { loadProxyConfig } from '../../credential-proxy/config.ts';

t.test('defaults: loopback proxy, documented ports, memory store', async (t) => {
  const c = loadProxyConfig({});
  t.equal(c.PROXY_HOST, '127.0.0.1');
  t.equal(c.PROXY_PORT, PORTS.proxy);
  t.equal(c.ADMIN_PORT, PORTS.proxyAdmin);
  t.equal(c.ADMIN_HOST, '0.0.0.0');
  t.equal(c.RULES_ALLOW_UNAUTHENTICATED, false);
  t.equal(c.REDIS_URL, undefined);
  t.ok(Object.isFrozen(c));
});

t.test('every problem is listed at once', async (t) => {
  const err = t.throws(() => loadProxyConfig({
    PROXY_HOST: '0.0.0.0', PROXY_PORT: 'eighty', REDIS_URL: 'http://redis', MAX_TUNNELS: '0', LOG_LEVEL: 'loud', RULES_ALLOW_UNAUTHENTICATED: 'maybe',
  })) as ConfigError;
  t.ok(err instanceof ConfigError);
  t.same(err.problems.map((p) => p.field).sort(), ['LOG_LEVEL', 'MAX_TUNNELS', 'PROXY_PORT', 'REDIS_URL', 'RULES_ALLOW_UNAUTHENTICATED'].sort());
  const loop = t.throws(() => loadProxyConfig({ PROXY_HOST: '0.0.0.0' })) as ConfigError;
  t.match(loop.message, /PROXY_HOST: must be a loopback address/);
  const scope = t.throws(() => loadProxyConfig({ REDIS_URL: 'redis://127.0.0.1:6379' })) as ConfigError;
  t.match(scope.message, /RULES_SCOPE: is required with REDIS_URL/);
  t.throws(() => loadProxyConfig({ ALLOWED_DOMAINS: 'ok.example.com,login.*.example.com,10.0.0.1' }), /ALLOWED_DOMAINS: .*"\*" is only allowed[\s\S]*IP addresses are not allowed/);
});

t.test('rules file: YAML or JSON, list or { rules }, problems listed with their place', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-proxy-cfg-'));
  writeFileSync(join(dir, 'rules.yaml'), 'rules:\n  - id: api\n    hosts: ["api.example.com", "*.api.example.com"]\n    ports: [443]\n');
  const c = loadProxyConfig({ RULES_FILE: join(dir, 'rules.yaml'), ALLOWED_DOMAINS: 'a.example.com' });
  t.same(c.staticRules.file.map((r) => r.id), ['api']);
  t.same(c.staticRules.env.map((r) => r.id), ['env:a.example.com']);
  writeFileSync(join(dir, 'bad.json'), JSON.stringify([{ id: 'x', hosts: [] }, { id: 'env:a.example.com', hosts: ['b.example.com'], extra: 1 }]));
  const err = t.throws(() => loadProxyConfig({ RULES_FILE: join(dir, 'bad.json'), ALLOWED_DOMAINS: 'a.example.com' })) as ConfigError;
  t.same(err.problems.map((p) => p.field).sort(), ['rules[0].hosts', 'rules[1]', 'rules[1].id'].sort());
  t.throws(() => loadProxyConfig({ RULES_FILE: join(dir, 'missing.yaml') }), /cannot read/);
});

t.test('`workspace-sandbox proxy --help` prints usage and the environment', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, [fileURLToPath(new URL('../../bin/workspace-sandbox.ts', import.meta.url)), 'proxy', '--help'], { encoding: 'utf8' });
  t.match(stdout, /workspace-sandbox proxy/);
  for (const v of ['PROXY_HOST', 'PROXY_PORT', 'ADMIN_HOST', 'ADMIN_PORT', 'ALLOWED_DOMAINS', 'RULES_FILE', 'RULES_TOKEN_FILE', 'RULES_SCOPE', 'REDIS_URL', 'CA_DIR', 'UPSTREAM_CA_FILE', 'LOG_LEVEL']) t.match(stdout, v);
});

t.test('the env names lib/constants.ts gives the webhook are the ones the proxy reads', async (t) => {
  const { PROXY_ENV } = await import('../../lib/constants.ts');
  const { proxyEnvSchema } = await import('../../credential-proxy/config.ts');
  const keys = Object.keys(proxyEnvSchema.shape);
  for (const name of Object.values(PROXY_ENV)) t.ok(keys.includes(name), name);
});
