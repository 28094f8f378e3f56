import t from 'tap';
import { resolveChecked, staticHostsResolver, systemResolver, type Resolver } from '../../credential-proxy/resolve.ts';
import { loadProxyConfig } from '../../credential-proxy/config.ts';

const own = { ports: new Set<number>([8080, 8082]), localAddresses: new Set<string>() };

t.test('localhost names are loopback without a lookup (RFC 6761)', async (t) => {
  for (const host of ['localhost', 'LOCALHOST.', 'api.demo.localhost', 'a.b.c.localhost']) {
    t.same(await systemResolver(host), [{ address: '127.0.0.1', family: 4 }, { address: '::1', family: 6 }], host);
  }
  t.rejects(systemResolver('localhost.example.invalid'), 'names merely containing localhost go to the system resolver');
});

t.test('the SSRF guard refuses localhost names unless the rule allows private addresses', async (t) => {
  await t.rejects(resolveChecked('api.demo.localhost', { resolver: systemResolver, allowPrivate: false, own, port: 443 }), { code: 'WS_ERR_FORBIDDEN' });
  t.same(await resolveChecked('api.demo.localhost', { resolver: systemResolver, allowPrivate: true, own, port: 19443 }), { address: '127.0.0.1', family: 4 });
  await t.rejects(resolveChecked('api.demo.localhost', { resolver: systemResolver, allowPrivate: true, own, port: 8082 }), { code: 'WS_ERR_FORBIDDEN' }, 'never its own admin port');
});

t.test('static hosts answer before DNS and stay SSRF-checked', async (t) => {
  const asked: string[] = [];
  const fallback: Resolver = async (host) => {
    asked.push(host);
    return [{ address: '93.184.215.14', family: 4 }];
  };
  const resolver = staticHostsResolver(['api.demo.test=127.0.0.1', 'API.demo.test=::1', 'public.test=93.184.215.34'], fallback);
  t.same(await resolver('Api.Demo.Test.'), [{ address: '127.0.0.1', family: 4 }, { address: '::1', family: 6 }]);
  t.same(await resolver('public.test'), [{ address: '93.184.215.34', family: 4 }]);
  t.same(await resolver('other.test'), [{ address: '93.184.215.14', family: 4 }]);
  t.same(asked, ['other.test'], 'only unknown names reach the fallback');
  await t.rejects(resolveChecked('api.demo.test', { resolver, allowPrivate: false, own, port: 443 }), { code: 'WS_ERR_FORBIDDEN' }, 'a static loopback answer is still refused without allowPrivate');
  t.equal(staticHostsResolver([], fallback), fallback);
});

t.test('STATIC_HOSTS is validated', async (t) => {
  t.same(loadProxyConfig({ STATIC_HOSTS: 'a.test=127.0.0.1, b.test=::1' }).STATIC_HOSTS, ['a.test=127.0.0.1', 'b.test=::1']);
  t.throws(() => loadProxyConfig({ STATIC_HOSTS: 'a.test' }), { code: 'WS_ERR_CONFIG_INVALID', message: /STATIC_HOSTS/ });
  t.throws(() => loadProxyConfig({ STATIC_HOSTS: 'a.test=not.an.ip' }), { code: 'WS_ERR_CONFIG_INVALID', message: /IPv4 or IPv6/ });
});
