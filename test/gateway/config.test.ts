// The gateway's config: secure defaults, every problem listed at once, and lab ranges that can
// never open metadata, Pod Identity, loopback or private space.
import t from 'tap';
import { ConfigError } from '../../lib/config.ts';
import { GATEWAY_AUDIENCE, NAMESPACES, PORTS } from '../../lib/constants.ts';
import { GATEWAY_RESERVE_BYTES, loadGatewayConfig } from '../../gateway/config.ts';
import { TUNNEL_WORST_CASE_BYTES } from '../../credential-proxy/memory.ts';
import { cidrContains, parseLabCidr } from '../../gateway/lab-ranges.ts';

t.test('defaults', async (t) => {
  const c = loadGatewayConfig({});
  t.equal(c.GATEWAY_PORT, PORTS.gateway);
  t.equal(c.GATEWAY_AUDIENCE, GATEWAY_AUDIENCE);
  t.same(c.GATEWAY_NAMESPACES, [NAMESPACES.sandboxes]);
  t.equal(c.GATEWAY_BIND_SOURCE_ADDRESS, true);
  t.same(c.GATEWAY_PORTS, [443, 80]);
  t.equal(c.ceiling, undefined, 'no ceiling unless configured');
  t.same(c.labCidrs, [], 'no lab ranges unless configured');
  t.ok(Object.isFrozen(c));
});

t.test('the tunnel cap derives from the memory limit at the worst case per tunnel; a set cap may only be lower', async (t) => {
  const c = loadGatewayConfig({});
  t.equal(c.MEMORY_LIMIT_BYTES, 2 * 1024 ** 3);
  t.equal(c.MAX_TUNNELS, 4949, '2 GiB: (2048 - 192) MiB / 384 KiB');
  t.ok(GATEWAY_RESERVE_BYTES + c.MAX_TUNNELS * TUNNEL_WORST_CASE_BYTES <= c.MEMORY_LIMIT_BYTES, 'every tunnel at its worst still fits the limit');
  t.equal(loadGatewayConfig({ MEMORY_LIMIT_BYTES: String(4 * 1024 ** 3) }).MAX_TUNNELS, 10410, '4 GiB: (4096 - 192) MiB / 384 KiB');
  t.equal(loadGatewayConfig({ MAX_TUNNELS: '100' }).MAX_TUNNELS, 100, 'a lower cap is kept');
  t.throws(() => loadGatewayConfig({ MAX_TUNNELS: '5000' }), /MAX_TUNNELS: at most 4949 with MEMORY_LIMIT_BYTES=2147483648/, 'a cap the limit cannot hold is refused at start');
  t.throws(() => loadGatewayConfig({ MEMORY_LIMIT_BYTES: String(GATEWAY_RESERVE_BYTES) }), /MEMORY_LIMIT_BYTES/);
});

t.test('every problem at once', async (t) => {
  try {
    loadGatewayConfig({
      GATEWAY_PORT: '70000', GATEWAY_PORTS: '443,x', GATEWAY_CEILING: '*.com', GATEWAY_NAMESPACES: 'Bad_NS',
      GATEWAY_LAB_CIDRS: '169.254.0.0/16,10.0.0.0/8,127.0.0.0/8,fd00:ec2::/32,198.51.100.0/23,nonsense', TOKEN_CACHE_TTL_MS: '-1',
    });
    t.fail('should throw');
  } catch (err) {
    t.type(err, ConfigError);
    const fields = (err as ConfigError).problems.map((p) => p.field);
    t.ok(fields.includes('GATEWAY_PORT'));
    t.ok(fields.some((f) => f.startsWith('GATEWAY_PORTS')));
    t.ok(fields.some((f) => f.startsWith('GATEWAY_NAMESPACES')));
    t.ok(fields.includes('TOKEN_CACHE_TTL_MS'));
    t.equal(fields.filter((f) => f.startsWith('GATEWAY_LAB_CIDRS')).length, 6, 'each bad lab range named');
  }
  t.throws(() => loadGatewayConfig({ GATEWAY_CEILING: '*.com' }), /GATEWAY_CEILING/, 'a public-suffix-wide ceiling entry is refused by the rule validator');
});

t.test('lab ranges: only documentation and benchmarking space, and containment is exact', async (t) => {
  for (const ok of ['198.51.100.0/24', '198.51.100.7/32', '192.0.2.0/25', '203.0.113.0/24', '198.18.0.0/15', '2001:db8::/32', '2001:db8:1::/48']) {
    t.type(parseLabCidr(ok), 'object', ok);
  }
  for (const bad of ['198.51.100.0/23', '169.254.169.254/32', '10.0.0.0/8', '0.0.0.0/0', '2001:db8::/31', 'fd00:ec2::/32', '::/0', '198.51.100.0/33', '198.51.100.0']) {
    t.type(parseLabCidr(bad), 'string', bad);
  }
  const c = parseLabCidr('198.51.100.0/24');
  if (typeof c === 'string') throw new Error(c);
  t.ok(cidrContains(c, '198.51.100.255'));
  t.notOk(cidrContains(c, '198.51.101.0'));
  t.notOk(cidrContains(c, '::ffff:198.51.100.1'), 'no IPv4-mapped form slips in');
});
