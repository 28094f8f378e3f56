// The egress gateway's objects agree with the code: one definition of "non-public" (the SSRF
// guard's table in credential-proxy/address.ts) is what the gateway's NetworkPolicy excepts, the
// ports and audience are the gateway config's, and availability holds (2+ replicas, PDB, HPA on
// CPU, never on spot). The RBAC grants TokenReview and pod reads, nothing else.
import t from 'tap';
import { nonPublicGlobalIPv6Cidrs, nonPublicIPv4Cidrs } from '../../credential-proxy/address.ts';
import { GATEWAY_AUDIENCE, GATEWAY_NAMESPACE, GATEWAY_SERVICE, NAMESPACES, PORTS } from '../../lib/constants.ts';
import { GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES, loadGatewayConfig } from '../../gateway/config.ts';
import { parseQuantity } from '../../lib/quantity.ts';
import { OVERLAYS, find, findAll, kubectlSkipReason, renderOverlay } from './render.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED: ${skip}`);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

for (const overlay of OVERLAYS) {
  t.test(`${overlay}: the egress gateway`, { skip }, async (t) => {
    const objs = renderOverlay(overlay);
    const ns = GATEWAY_NAMESPACE;
    const d = find<Json>(objs, 'Deployment', GATEWAY_SERVICE, ns);
    const c = d.spec.template.spec.containers[0];
    const env = Object.fromEntries(c.env.map((e: Json) => [e.name, e.value])) as Record<string, string>;
    // The memory limit reaches the gateway through the downward API, as the kubelet resolves it.
    const memory = c.env.find((e: Json) => e.name === 'MEMORY_LIMIT_BYTES');
    t.same(memory?.valueFrom, { resourceFieldRef: { containerName: c.name, resource: 'limits.memory' } }, 'MEMORY_LIMIT_BYTES is the container\'s limit');
    env.MEMORY_LIMIT_BYTES = String(parseQuantity(c.resources.limits.memory));
    const config = loadGatewayConfig(env);
    t.equal(config.MEMORY_LIMIT_BYTES, GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES, 'the manifests\' limit is the default the tunnel cap is documented for');
    t.same(c.args, ['gateway']);
    t.equal(config.GATEWAY_PORT, PORTS.gateway);
    t.equal(config.GATEWAY_AUDIENCE, GATEWAY_AUDIENCE);
    t.same(config.GATEWAY_NAMESPACES, [NAMESPACES.sandboxes]);
    t.same(config.labCidrs, [], 'no lab ranges in a real cluster');
    t.ok(d.spec.replicas >= 2);
    const hpa = find<Json>(objs, 'HorizontalPodAutoscaler', GATEWAY_SERVICE, ns);
    t.ok(hpa.spec.minReplicas >= 2);
    t.equal(hpa.spec.metrics[0].resource.name, 'cpu');
    t.equal(find<Json>(objs, 'PodDisruptionBudget', GATEWAY_SERVICE, ns).spec.minAvailable, 1);
    const terms = d.spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
    t.ok(terms.every((term: Json) => term.matchExpressions.some((e: Json) => e.key === 'karpenter.sh/capacity-type' && e.operator === 'NotIn' && e.values.includes('spot'))), 'never on spot');
    t.ok(d.spec.template.spec.terminationGracePeriodSeconds * 1000 > Number(env.DRAIN_TIMEOUT_MS) + 10_000, 'grace covers preStop + drain');

    const svc = find<Json>(objs, 'Service', GATEWAY_SERVICE, ns);
    t.same(svc.spec.ports.map((p: Json) => p.port), [PORTS.gateway]);
    t.match(svc.spec.clusterIP, /^\d+\.\d+\.\d+\.\d+$/, 'a fixed ClusterIP: workspace pods have no DNS');

    const cr = find<Json>(objs, 'ClusterRole', GATEWAY_SERVICE);
    t.same(cr.rules, [{ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] }]);
    const role = find<Json>(objs, 'Role', GATEWAY_SERVICE, NAMESPACES.sandboxes);
    t.same(role.rules, [{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }]);

    const policies = findAll<Json>(objs, 'NetworkPolicy').filter((p) => p.metadata.namespace === ns);
    const np = (name: string) => policies.find((p) => p.metadata.name === name)!.spec;
    t.same(np('default-deny'), { podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
    t.same(np('allow-workspace-ingress').ingress, [{
      from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': NAMESPACES.sandboxes } }, podSelector: { matchLabels: { 'workspace-sandbox.io/workspace': 'true' } } }],
      ports: [{ protocol: 'TCP', port: PORTS.gateway }],
    }]);
    const egress = np('allow-public-egress').egress;
    t.equal(egress.length, 1);
    t.same(egress[0].to, [
      { ipBlock: { cidr: '0.0.0.0/0', except: nonPublicIPv4Cidrs() } },
      { ipBlock: { cidr: '2000::/3', except: nonPublicGlobalIPv6Cidrs() } },
    ], 'the excepts are the SSRF guard\'s table of non-public ranges');
    t.same(egress[0].ports.map((p: Json) => p.port), [...config.GATEWAY_PORTS], 'the ports GATEWAY_PORTS opens');
    // staging and prod also carry components/monitoring's allow-prometheus-scrape (metrics port only, monitoring.test.ts).
    t.same(policies.map((p) => p.metadata.name).filter((n) => n === 'allow-prometheus-scrape'), overlay === 'local' ? [] : ['allow-prometheus-scrape']);
    t.equal(policies.length, overlay === 'local' ? 5 : 6, 'nothing else opens the namespace');
  });
}

t.test('the table the excepts come from covers what the SSRF guard refuses', async (t) => {
  const v4 = nonPublicIPv4Cidrs();
  for (const cidr of ['10.0.0.0/8', '169.254.0.0/16', '100.64.0.0/10', '127.0.0.0/8', '198.51.100.0/24', '203.0.113.0/24', '192.0.2.0/24', '224.0.0.0/4']) {
    t.ok(v4.includes(cidr), cidr);
  }
  t.same(nonPublicGlobalIPv6Cidrs(), ['2001:db8::/32', '2001::/32', '2002::/16']);
});
