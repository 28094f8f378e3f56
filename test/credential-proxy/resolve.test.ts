import t from 'tap';
import { resolveChecked, systemResolver } from '../../credential-proxy/resolve.ts';

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
