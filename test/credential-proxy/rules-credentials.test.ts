// /rules as a careless or compromised backend (or a leaked token) uses it:
// credentials are declared by the sidecar and only named by rules; per-pod tokens; the rule schema
// refuses wildcards over public suffixes and header injection.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import { parseCredentialCatalog } from '../../credential-proxy/credential-catalog.ts';
import type { RuleSetError } from '../../credential-proxy/rules.ts';
import { parseHostPattern, validateRules } from '../../credential-proxy/rules.ts';
import type { ConfigError } from '../../lib/config.ts';
import { generatePodTokenKeys, signPodToken } from '../../lib/pod-token.ts';
import { startProxy } from './fixtures/proxy-harness.ts';

const TOKEN = 'rules-token-for-credential-tests-77';
const GITHUB = { github: { hosts: ['api.github.test'], type: 'header', header: 'authorization', value: { env: 'GITHUB_TOKEN' }, format: 'Bearer {value}' } };

function send(adminUrl: string, method: string, body: unknown, token = TOKEN) {
  return fetch(`${adminUrl}/rules`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
}
const problems = async (res: Response) => ((await res.json()) as { error: { details?: { field: string; message: string }[] } }).error.details ?? [];

t.test('a rule naming a sidecar secret as its credential source (file, env, literal) is refused', async (t) => {
  const p = await startProxy(t, { tokens: [TOKEN], credentials: GITHUB });
  for (const [what, credentials] of [
    ['the rules token file', { type: 'header', name: 'authorization', value: { file: '/var/run/secrets/workspace-sandbox/rules-token/token' } }],
    ['a sidecar env variable', { type: 'header', name: 'x-leak', value: { env: 'SECRET_TOKEN' } }],
    ['/etc/shadow', { type: 'header', name: 'x-leak', value: { file: '/etc/shadow' } }],
    ['AWS_SECRET_ACCESS_KEY', { type: 'header', name: 'x-leak', value: { env: 'AWS_SECRET_ACCESS_KEY' } }],
    ['a literal', { type: 'header', name: 'x-api-key', value: { literal: 'sk-1234' } }],
    ['a literal with CR/LF (header injection)', { type: 'header', name: 'x-api-key', value: { literal: 'k\r\nX-Injected: 1' } }],
  ] as const) {
    for (const method of ['PUT', 'POST']) {
      const rule = { id: 'leak', hosts: ['collector.attacker.test'], credentials };
      const res = await send(p.adminUrl, method, method === 'PUT' ? [rule] : rule);
      t.equal(res.status, 400, `${method} ${what}`);
      t.ok((await problems(res)).some((d) => /credentials$/.test(d.field) && /CREDENTIALS_FILE/.test(d.message)), `${method} ${what}: the reason names CREDENTIALS_FILE`);
    }
  }
  t.equal((await (await fetch(`${p.adminUrl}/rules`, { headers: { authorization: `Bearer ${TOKEN}` } })).json() as { version: number }).version, 0, 'nothing was stored');
  t.notMatch(p.logs.text(), /sk-1234/, 'the refused literal is in no log line');
});

t.test('a rule cannot send a declared credential to a host outside its declaration', async (t) => {
  const p = await startProxy(t, { tokens: [TOKEN], credentials: { ...GITHUB, wild: { hosts: ['*.eu.corp.test'], type: 'aws-sigv4', service: 'bedrock', region: 'us-east-1' } } });
  for (const [hosts, credential] of [
    [['collector.attacker.test'], 'github'],
    [['api.github.test', 'collector.attacker.test'], 'github'],
    [['*.github.test'], 'github'],
    [['*.corp.test'], 'wild'],
    [['eu.corp.test'], 'wild'],
  ] as const) {
    const res = await send(p.adminUrl, 'PUT', [{ id: 'r', hosts, credential }]);
    t.equal(res.status, 400, `${credential} → ${hosts.join(',')}`);
    t.match((await problems(res))[0]?.message, /may only be sent to/);
  }
  const unknown = await send(p.adminUrl, 'PUT', [{ id: 'r', hosts: ['api.github.test'], credential: 'aws' }]);
  t.equal(unknown.status, 400);
  t.match((await problems(unknown))[0]?.message, /not declared in this sidecar's CREDENTIALS_FILE \(declared: github, wild\)/);
  for (const [hosts, credential] of [[['api.github.test'], 'github'], [['a.eu.corp.test', '*.x.eu.corp.test', '*.eu.corp.test'], 'wild']] as const) {
    t.equal((await send(p.adminUrl, 'PUT', [{ id: 'r', hosts, credential }])).status, 200, `${credential} within its hosts`);
  }
  // The rules file obeys the same table.
  const dir = mkdtempSync(join(tmpdir(), 'ws-cred-cfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'credentials.yaml'), 'credentials:\n  github: { hosts: [api.github.test], type: header, header: authorization, value: { env: GITHUB_TOKEN } }\n');
  writeFileSync(join(dir, 'rules.yaml'), '- { id: r, hosts: [evil.test], credential: github }\n');
  const err = t.throws(() => loadProxyConfig({ CREDENTIALS_FILE: join(dir, 'credentials.yaml'), RULES_FILE: join(dir, 'rules.yaml') })) as ConfigError;
  t.match(err.message, /rules\[0\]\.credential: credential "github" may only be sent to api\.github\.test/);
});

t.test('credential declarations: every problem listed; header templates with CR/LF refused', async (t) => {
  const err = t.throws(() => parseCredentialCatalog({
    credentials: {
      'Bad Name': { hosts: ['a.test'], type: 'header', header: 'x', value: { env: 'X' } },
      split: { hosts: ['a.test'], type: 'header', header: 'authorization', value: { env: 'X' }, format: 'Bearer {value}\r\nX-Injected: 1' },
      lit: { hosts: ['a.test'], type: 'header', header: 'x', value: { literal: 'sk' } },
      nohosts: { hosts: [], type: 'aws-sigv4', service: 'bedrock', region: 'us-east-1' },
      suffix: { hosts: ['*.co.uk'], type: 'aws-sigv4', service: 'bedrock', region: 'us-east-1' },
    },
  }, 'test')) as ConfigError;
  const fields = err.problems.map((p) => p.field);
  for (const f of ['credentials.Bad Name', 'credentials.split.format', 'credentials.lit.value', 'credentials.nohosts.hosts', 'credentials.suffix.hosts[0]']) {
    t.ok(fields.some((x) => x.startsWith(f)), `problem at ${f} (got ${fields.join(', ')})`);
  }
  t.match(err.message, /CR, LF or NUL/);
});

t.test('wildcards over public suffixes (*.co.uk, *.github.io) are refused with the Public Suffix List', async (t) => {
  for (const suffix of ['*.co.uk', '*.github.io', '*.s3.amazonaws.com', '*.com', '*.herokuapp.com', '*.kawasaki.jp', '*.test']) {
    const parsed = parseHostPattern(suffix);
    t.equal(parsed.kind, 'invalid', suffix);
  }
  t.match(parseHostPattern('*.github.io'), { reason: /public suffix \(Public Suffix List\)/ });
  for (const ok of ['*.example.co.uk', '*.octo.github.io', '*.example.com', 'co.uk', 'github.io']) t.not(parseHostPattern(ok).kind, 'invalid', ok);
  const err = t.throws(() => validateRules([{ id: 'a', hosts: ['*.co.uk'] }, { id: 'b', hosts: ['*.github.io'] }], 'test')) as RuleSetError;
  t.same(err.problems.map((p) => p.field), ['[0].hosts[0]', '[1].hosts[0]']);
  t.throws(() => loadProxyConfig({ ALLOWED_DOMAINS: '*.github.io' }), /public suffix/);
});

t.test('a /rules token of one pod opens no other pod (per-pod tokens)', async (t) => {
  const keys = generatePodTokenKeys();
  const other = generatePodTokenKeys();
  const p = await startProxy(t, { podTokenPublicKeys: keys.publicKeyPem, env: { RULES_SCOPE: 'pod-uid-a' } });
  const mint = (podUid: string, purpose: 'rules' | 'agent' = 'rules', key = keys.privateKeyPem, ttlSeconds = 600) => signPodToken(key, { purpose, podUid, ttlSeconds });
  const rule = [{ id: 'x', hosts: ['x.test'] }];
  t.equal((await send(p.adminUrl, 'PUT', rule, await mint('pod-uid-a'))).status, 200, 'this pod\'s rules token');
  for (const [what, token, reason] of [
    ['another pod\'s token', await mint('pod-uid-b'), /another pod/],
    ['this pod\'s agent token', await mint('pod-uid-a', 'agent'), /for agent, not rules/],
    ['a token signed by another key', await mint('pod-uid-a', 'rules', other.privateKeyPem), /unknown key/],
    ['a shared static token', TOKEN, /malformed|rejected/],
  ] as const) {
    for (const method of ['GET', 'PUT']) {
      const res = method === 'GET' ? await fetch(`${p.adminUrl}/rules`, { headers: { authorization: `Bearer ${token}` } }) : await send(p.adminUrl, 'PUT', [], token);
      t.equal(res.status, 401, `${method} with ${what}`);
      t.match(((await res.json()) as { error: { message: string } }).error.message, reason);
    }
  }
  t.equal((await (await fetch(`${p.adminUrl}/rules`, { headers: { authorization: `Bearer ${await mint('pod-uid-a')}` } })).json() as { version: number }).version, 1, 'nothing but the first write landed');
  t.throws(() => loadProxyConfig({ POD_TOKEN_PUBLIC_KEYS_FILE: '/x.pem' }), /RULES_SCOPE: is required with POD_TOKEN_PUBLIC_KEYS_FILE/);
  t.throws(() => loadProxyConfig({ POD_TOKEN_PUBLIC_KEYS_FILE: '/x.pem', RULES_SCOPE: 'u', RULES_TOKEN_FILE: '/t' }), /RULES_TOKEN_FILE: is for local development only/);
  t.throws(() => loadProxyConfig({ REDIS_URL: 'redis://u:secret@redis:6379', RULES_SCOPE: 'u', POD_TOKEN_PUBLIC_KEYS_FILE: '/x.pem' }), /must not carry a password/);
  t.throws(() => loadProxyConfig({ REDIS_URL: 'redis://redis:6379', RULES_SCOPE: 'u' }), /POD_TOKEN_PUBLIC_KEYS_FILE: is required with REDIS_URL/);
});
