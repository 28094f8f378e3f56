import t from 'tap';
import { classifyAddress, isLocalAddress, type AddressClass } from '../../credential-proxy/address.ts';
import { resolveChecked, ResolveError, type Resolver } from '../../credential-proxy/resolve.ts';

const table: [string, AddressClass][] = [
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'this-network'],
  ['10.0.0.1', 'private'],
  ['10.255.255.255', 'private'],
  ['100.64.0.1', 'cgnat'],
  ['100.127.255.254', 'cgnat'],
  ['100.128.0.1', 'public'],
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['169.254.169.254', 'link-local'], // cloud instance metadata
  ['169.254.170.23', 'link-local'], // EKS Pod Identity agent
  ['172.15.255.255', 'public'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['172.32.0.1', 'public'],
  ['192.0.0.170', 'ietf-protocol'],
  ['192.0.2.1', 'documentation'],
  ['192.168.1.1', 'private'],
  ['198.18.0.1', 'benchmarking'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['240.0.0.1', 'reserved'],
  ['255.255.255.255', 'broadcast'],
  ['8.8.8.8', 'public'],
  ['93.184.216.34', 'public'],
  ['::', 'unspecified'],
  ['::1', 'loopback'],
  ['::ffff:127.0.0.1', 'ipv4-mapped'],
  ['::ffff:7f00:1', 'ipv4-mapped'],
  ['::ffff:8.8.8.8', 'ipv4-mapped'],
  ['::127.0.0.1', 'ipv4-compatible'],
  ['::a9fe:a9fe', 'ipv4-compatible'],
  ['64:ff9b::a9fe:a9fe', 'nat64'],
  ['64:ff9b:1::1', 'nat64'],
  ['100::1', 'discard'],
  ['2001::1', 'teredo'],
  ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'teredo'],
  ['2001:db8::1', 'documentation'],
  ['2002:a9fe:a9fe::1', '6to4'],
  ['fc00::1', 'ula'],
  ['fd00:ec2::254', 'ula'], // EC2 IPv6 metadata endpoint
  ['fd00:ec2::23', 'ula'], // EKS Pod Identity agent over IPv6
  ['fe80::1', 'link-local'],
  ['FE80::1%eth0', 'link-local'],
  ['fec0::1', 'site-local'],
  ['ff02::1', 'multicast'],
  ['2606:4700:4700::1111', 'public'],
  ['2a00:1450:4001:80b::200e', 'public'],
  ['4000::1', 'reserved'],
  ['not-an-ip', 'invalid'],
];

t.test('address classification: every special range', async (t) => {
  for (const [address, cls] of table) {
    const c = classifyAddress(address);
    t.equal(c.class, cls, `${address} is ${cls}`);
    t.equal(c.public, cls === 'public', `${address} public=${cls === 'public'}`);
  }
});

t.test('local addresses: loopback, unspecified, interfaces and mapped loopback', async (t) => {
  const locals = new Set(['10.1.2.3']);
  t.ok(isLocalAddress('127.0.0.2', locals));
  t.ok(isLocalAddress('::', locals));
  t.ok(isLocalAddress('10.1.2.3', locals));
  t.ok(isLocalAddress('::ffff:127.0.0.1', locals));
  t.ok(isLocalAddress('::ffff:10.1.2.3', locals));
  t.notOk(isLocalAddress('10.1.2.4', locals));
});

const own = { ports: new Set([8080, 8082]), localAddresses: new Set(['10.1.2.3']) };
const fixed = (...addresses: string[]): Resolver => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));

t.test('resolveChecked: every answer must be public', async (t) => {
  t.same(await resolveChecked('ok.test', { resolver: fixed('93.184.216.34', '2606:4700::1'), allowPrivate: false, own, port: 443 }), { address: '93.184.216.34', family: 4 });
  for (const bad of ['127.0.0.1', '169.254.169.254', '169.254.170.23', '10.0.0.1', '100.64.1.1', 'fd00:ec2::254', '::ffff:127.0.0.1', '64:ff9b::a9fe:a9fe', '2002:a9fe:a9fe::1', '2001::1', '0.0.0.0', '224.0.0.1']) {
    const err = await resolveChecked('x.test', { resolver: fixed('93.184.216.34', bad), allowPrivate: false, own, port: 443 }).catch((e: unknown) => e);
    t.ok(err instanceof ResolveError, `${bad} among the answers → refused`);
    t.equal((err as ResolveError).status, 403);
    t.notMatch((err as Error).message, bad, 'the message names the class, not the address');
  }
});

t.test('resolveChecked: allowPrivate admits private answers but never this proxy', async (t) => {
  t.same(await resolveChecked('db.test', { resolver: fixed('10.0.0.5'), allowPrivate: true, own, port: 5432 }), { address: '10.0.0.5', family: 4 });
  for (const [address, port] of [['127.0.0.1', 8082], ['10.1.2.3', 8080], ['::1', 8082], ['::ffff:127.0.0.1', 8080], ['0.0.0.0', 8082]] as const) {
    const err = await resolveChecked('self.test', { resolver: fixed(address), allowPrivate: true, own, port }).catch((e: unknown) => e) as ResolveError;
    t.equal(err.failure, 'own-listener', `${address}:${port}`);
  }
  t.same(await resolveChecked('other.test', { resolver: fixed('127.0.0.1'), allowPrivate: true, own, port: 9999 }), { address: '127.0.0.1', family: 4 });
});

t.test('resolveChecked: DNS failures are 502 without detail leaks', async (t) => {
  const nx: Resolver = async () => { throw Object.assign(new Error('getaddrinfo ENOTFOUND nope.test'), { code: 'ENOTFOUND' }); };
  const err = await resolveChecked('nope.test', { resolver: nx, allowPrivate: false, own, port: 443 }).catch((e: unknown) => e) as ResolveError;
  t.equal(err.status, 502);
  t.equal(err.message, 'cannot resolve nope.test: no such host');
  const empty = await resolveChecked('e.test', { resolver: fixed(), allowPrivate: false, own, port: 443 }).catch((e: unknown) => e) as ResolveError;
  t.equal(empty.failure, 'no-address');
});
