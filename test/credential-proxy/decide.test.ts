import t from 'tap';
import { decide, pathAllowed, pathIsSafe, type Target } from '../../credential-proxy/decide.ts';
import {
  compileRule, normaliseHost, parseHostPattern, rulesFromAllowedDomains, validateRules, RuleSetError,
  type RuleInput,
} from '../../credential-proxy/rules.ts';
import { parseCredentialCatalog } from '../../credential-proxy/credential-catalog.ts';

const CATALOG = parseCredentialCatalog({
  credentials: {
    llm: { hosts: ['llm.example.com'], type: 'header', header: 'Authorization', value: { env: 'LLM_TOKEN' }, format: 'Bearer {value}' },
    secret: { hosts: ['secret.example.com'], type: 'header', header: 'x-api-key', value: { file: '/run/secrets/key' } },
  },
}, 'test');

function compile(inputs: RuleInput[]) {
  return validateRules(inputs, 'test', new Set(), CATALOG).map((r) => compileRule(r, 'api', CATALOG));
}

const RULES = compile([
  { id: 'api', hosts: ['api.example.com'] },
  { id: 'wild', hosts: ['*.example.org'], ports: [443, 8443] },
  { id: 'idn', hosts: ['bücher.example'] },
  { id: 'plain', hosts: ['plain.example.com'], ports: [80], methods: ['get', 'HEAD'], paths: ['/public/*', '/status'] },
  { id: 'creds', hosts: ['llm.example.com'], credential: 'llm' },
  { id: 'llm-allow', hosts: ['llm.example.com'] },
  { id: 'creds-only', hosts: ['secret.example.com'], credential: 'secret' },
  { id: 'deep-wild', hosts: ['*.eu.example.org'], ports: [9443] },
]);

interface Row {
  name: string;
  target: Target;
  action: 'tunnel' | 'intercept' | 'deny';
  rule?: string;
  reason?: RegExp;
}

const rows: Row[] = [
  { name: 'exact host, default CONNECT port 443', target: { kind: 'connect', host: 'api.example.com' }, action: 'tunnel', rule: 'api' },
  { name: 'exact beats wildcard', target: { kind: 'connect', host: 'api.example.com', port: 443 }, action: 'tunnel', rule: 'api' },
  { name: 'upper case', target: { kind: 'connect', host: 'API.Example.COM', port: 443 }, action: 'tunnel', rule: 'api' },
  { name: 'trailing dot ignored', target: { kind: 'connect', host: 'api.example.com.', port: 443 }, action: 'tunnel', rule: 'api' },
  { name: 'two trailing dots invalid', target: { kind: 'connect', host: 'api.example.com..', port: 443 }, action: 'deny', reason: /invalid host/ },
  { name: 'empty label invalid', target: { kind: 'connect', host: 'api..example.com', port: 443 }, action: 'deny', reason: /invalid host/ },
  { name: 'IDN in Unicode matches the Unicode rule', target: { kind: 'connect', host: 'BÜCHER.example', port: 443 }, action: 'tunnel', rule: 'idn' },
  { name: 'IDN in punycode matches the Unicode rule', target: { kind: 'connect', host: 'xn--bcher-kva.example', port: 443 }, action: 'tunnel', rule: 'idn' },
  { name: 'wildcard matches a subdomain', target: { kind: 'connect', host: 'a.example.org', port: 443 }, action: 'tunnel', rule: 'wild' },
  { name: 'wildcard matches a deeper subdomain', target: { kind: 'connect', host: 'a.b.example.org', port: 8443 }, action: 'tunnel', rule: 'wild' },
  { name: 'wildcard does not match the apex', target: { kind: 'connect', host: 'example.org', port: 443 }, action: 'deny', reason: /not in the allowlist/ },
  { name: 'suffix trick is not a subdomain', target: { kind: 'connect', host: 'evilexample.org', port: 443 }, action: 'deny', reason: /not in the allowlist/ },
  { name: 'allowed name as a prefix of another domain', target: { kind: 'connect', host: 'api.example.com.evil.net', port: 443 }, action: 'deny', reason: /not in the allowlist/ },
  { name: 'more specific wildcard wins its port', target: { kind: 'connect', host: 'x.eu.example.org', port: 9443 }, action: 'tunnel', rule: 'deep-wild' },
  { name: 'falls back to a less specific wildcard for its ports', target: { kind: 'connect', host: 'x.eu.example.org', port: 8443 }, action: 'tunnel', rule: 'wild' },
  { name: 'port not in the rule', target: { kind: 'connect', host: 'a.example.org', port: 22 }, action: 'deny', rule: 'wild', reason: /port 22 is not allowed/ },
  { name: 'CONNECT to port 80 without ports', target: { kind: 'connect', host: 'api.example.com', port: 80 }, action: 'deny', reason: /port 80/ },
  { name: 'plain HTTP defaults to port 80', target: { kind: 'http', host: 'api.example.com', method: 'GET', path: '/' }, action: 'tunnel', rule: 'api' },
  { name: 'a rule without ports allows only 80 for plain HTTP', target: { kind: 'http', host: 'api.example.com', port: 443, method: 'GET', path: '/' }, action: 'deny', reason: /port 443 is not allowed/ },
  { name: 'credential rule → intercept', target: { kind: 'connect', host: 'llm.example.com', port: 443 }, action: 'intercept', rule: 'creds' },
  { name: 'credential rule is not shadowed by a wildcard', target: { kind: 'connect', host: 'LLM.example.com.', port: 443 }, action: 'intercept', rule: 'creds' },
  { name: 'credential rule over plain HTTP is refused', target: { kind: 'http', host: 'secret.example.com', method: 'GET', path: '/' }, action: 'deny', rule: 'creds-only', reason: /only done over HTTPS/ },
  { name: 'plain HTTP to a credential host falls back to a plain rule (no credentials added)', target: { kind: 'http', host: 'llm.example.com', method: 'GET', path: '/' }, action: 'tunnel', rule: 'llm-allow' },
  { name: 'plain HTTP method and path allowed', target: { kind: 'http', host: 'plain.example.com', method: 'GET', path: '/public/a/b' }, action: 'tunnel', rule: 'plain' },
  { name: 'plain HTTP exact path', target: { kind: 'http', host: 'plain.example.com', method: 'head', path: '/status' }, action: 'tunnel', rule: 'plain' },
  { name: 'plain HTTP method refused', target: { kind: 'http', host: 'plain.example.com', method: 'POST', path: '/public/x' }, action: 'deny', rule: 'plain', reason: /method POST/ },
  { name: 'plain HTTP path refused', target: { kind: 'http', host: 'plain.example.com', method: 'GET', path: '/private' }, action: 'deny', rule: 'plain', reason: /path \/private/ },
  { name: 'dot segments never pass a path rule', target: { kind: 'http', host: 'plain.example.com', method: 'GET', path: '/public/../private' }, action: 'deny', reason: /path/ },
  { name: 'encoded dot segments never pass a path rule', target: { kind: 'http', host: 'plain.example.com', method: 'GET', path: '/public/%2e%2e/private' }, action: 'deny', reason: /path/ },
  { name: 'methods/paths do not apply to CONNECT', target: { kind: 'connect', host: 'plain.example.com', port: 80 }, action: 'tunnel', rule: 'plain' },
  { name: 'unknown host', target: { kind: 'connect', host: 'evil.test', port: 443 }, action: 'deny', reason: /evil\.test is not in the allowlist/ },
  // IP literals in every spelling: never matched by name rules.
  ...['127.0.0.1', '127.1', '0x7f.0.0.1', '0177.0.0.1', '2130706433', '0x7f000001', '[::1]', '::1', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '169.254.169.254', '[fd00:ec2::254]', '93.184.216.34']
    .map((host): Row => ({ name: `IP literal ${host}`, target: { kind: 'connect', host, port: 443 }, action: 'deny', reason: /IP addresses are never allowed/ })),
  { name: 'percent-encoding in a host', target: { kind: 'connect', host: 'api%2eexample.com', port: 443 }, action: 'deny', reason: /invalid host/ },
  { name: 'userinfo smuggled in a host', target: { kind: 'connect', host: 'api.example.com@evil.test', port: 443 }, action: 'deny', reason: /invalid host/ },
  { name: 'space in a host', target: { kind: 'connect', host: 'api.example.com evil', port: 443 }, action: 'deny', reason: /invalid host/ },
  { name: 'empty host', target: { kind: 'connect', host: '', port: 443 }, action: 'deny', reason: /invalid host/ },
];

t.test('decide(): every tricky form', async (t) => {
  for (const row of rows) {
    const d = decide(row.target, RULES);
    t.equal(d.action, row.action, `${row.name}: action`);
    if (row.rule) t.equal(d.ruleId, row.rule, `${row.name}: rule`);
    if (row.reason) t.match(d.reason, row.reason, `${row.name}: reason`);
  }
});

t.test('decide() reports the normalised host', async (t) => {
  t.equal(decide({ kind: 'connect', host: 'BÜCHER.example.', port: 443 }, RULES).host, 'xn--bcher-kva.example');
  t.equal(decide({ kind: 'connect', host: '0x7f.1', port: 443 }, RULES).host, '127.0.0.1');
});

t.test('host normalisation', async (t) => {
  t.same(normaliseHost('Example.COM.'), { kind: 'name', host: 'example.com' });
  t.same(normaliseHost('2130706433'), { kind: 'ip', host: '127.0.0.1', family: 4 });
  t.same(normaliseHost('[::FFFF:127.0.0.1]'), { kind: 'ip', host: '::ffff:7f00:1', family: 6 });
  t.equal(normaliseHost('a'.repeat(64) + '.com').kind, 'invalid');
  t.equal(normaliseHost('foo.123').kind, 'invalid', 'a name ending in a number is an IPv4 parse failure');
});

t.test('host patterns: wildcard forms', async (t) => {
  t.same(parseHostPattern('*.Example.com'), { kind: 'wildcard', suffix: 'example.com' });
  for (const bad of ['login.*.example.com', '*example.com', '*', '*.com', '*.*.example.com', 'a.*', '127.0.0.1', '*.127.0.0.1', '[::1]']) {
    t.equal(parseHostPattern(bad).kind, 'invalid', bad);
  }
});

t.test('rule-set validation lists every problem', async (t) => {
  const err = t.throws(() => validateRules([
    { id: 'ok', hosts: ['a.example.com'] },
    { id: 'ok', hosts: ['login.*.example.com'], ports: [0] },
    { id: 'bad id!', hosts: [] },
    { id: 'x', hosts: ['b.example.com'], methods: ['G E T'], paths: ['no-slash'], unknown: true },
    { id: 'c', hosts: ['c.example.com'], credential: 'Not A Name' },
  ], 'test')) as RuleSetError;
  t.ok(err instanceof RuleSetError);
  const fields = err.problems.map((p) => p.field);
  for (const f of ['[1].hosts[0]', '[1].ports[0]', '[2].id', '[2].hosts', '[3].methods[0]', '[3].paths[0]', '[3]', '[1].id', '[4].credential']) {
    t.ok(fields.includes(f), `problem reported for ${f}`);
  }
  t.match(err.message, /duplicate id/);
  t.equal(err.status, 400);
});

t.test('rule ids may not collide with reserved (static) ids', async (t) => {
  t.throws(() => validateRules([{ id: 'env:a.example.com', hosts: ['a.example.com'] }], 'test', new Set(['env:a.example.com'])), /already used/);
});

t.test('ALLOWED_DOMAINS entries become tunnel-only rules', async (t) => {
  const rules = rulesFromAllowedDomains(['bedrock-runtime.us-east-1.amazonaws.com', '*.example.org:8443']);
  t.same(rules.map((r) => [r.id, r.hosts, r.ports]), [
    ['env:bedrock-runtime.us-east-1.amazonaws.com', ['bedrock-runtime.us-east-1.amazonaws.com'], undefined],
    ['env:*.example.org:8443', ['*.example.org'], [8443]],
  ]);
  t.notOk(rules.some((r) => r.credential));
  t.throws(() => rulesFromAllowedDomains(['10.0.0.1']), /IP addresses are not allowed/);
});

t.test('path patterns', async (t) => {
  t.ok(pathAllowed(undefined, '/anything/../x'));
  t.ok(pathAllowed(['/model/*'], '/model/abc/invoke'));
  t.notOk(pathAllowed(['/model/*'], '/models'));
  t.notOk(pathAllowed(['/model/*'], '/model/..%2fadmin'));
  t.notOk(pathAllowed(['/model/*'], '/model/.%2E/admin'));
});

t.test('paths match raw: %2F inside a segment is allowed (Bedrock inference profiles), traversal shapes are not', async (t) => {
  const profile = '/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke';
  const allowed = [
    profile,
    profile.replace('/invoke', '/invoke-with-response-stream'),
    '/model/arn%3aaws%3abedrock%3aus-west-2%3a1%3aapplication-inference-profile%2fabc123/converse',
    '/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke',
    '/model/a%20b/invoke',
    '/model/...hidden/invoke', // three dots is a name, not a dot segment
    '/model/x.y/invoke',
  ];
  for (const p of allowed) t.ok(pathAllowed(['/model/*'], p), `allowed: ${p}`);
  t.ok(pathAllowed([profile], profile), 'exact patterns compare the raw path');

  const refused = [
    '/model/..', '/model/../admin', '/model/./x', '/model/x/..',
    '/model/%2e%2e/admin', '/model/%2E%2e/admin', '/model/.%2e/admin', '/model/%2e./admin', '/model/%2e/admin',
    '/model/..%2fadmin', '/model/x%2F..%2F..%2Fadmin', '/model/x%2f%2e%2e%2fadmin', '/model/x%2F.', '/model/x%2F..',
    '/model/..;/admin', '/model/%2e%2e;jsessionid=1/admin', '/model/x%2F..%3Bx%2Fadmin',
    '/model/x\\..\\admin', '/model/x%5c..%5cadmin', '/model/x%5Cadmin',
    '/model/x%252F..%252Fadmin', '/model/%252e%252e/admin', '/model/%25',
    '/model/x%00/invoke', '/model/x%0d%0aHost:%20evil/invoke', '/model/x%7f',
    '/model/%c0%ae%c0%ae/admin', '/model/%e0%80%ae/admin', '/model/%zz', '/model/%',
    '/model/x /invoke',
  ];
  for (const p of refused) t.notOk(pathAllowed(['/model/*'], p), `refused: ${JSON.stringify(p)}`);
  // Encoding cannot reach a prefix either: the raw path must start with the pattern.
  t.notOk(pathAllowed(['/model/*'], '/%6Dodel/x'), 'an encoded prefix is not the prefix');
  t.notOk(pathAllowed(['/model/*'], '/model%2Fx'), '%2F is not the "/" a prefix ends with');
  t.notOk(pathAllowed(['/model*'], '/model%2F..%2Fadmin'), 'a slash-less prefix still cannot climb out');
  t.ok(pathIsSafe(profile));
  t.ok(pathAllowed(undefined, '/model/..%2Fadmin'), 'without paths the proxy does not judge paths');
});
