// The monitoring component (manifests/components/monitoring/): the ServiceMonitors, the
// PodMonitor and the PrometheusRule the staging and prod overlays carry, checked against the
// prometheus-operator models, against the objects they scrape, and against the metrics the
// programs really export. No Prometheus runs here: the expressions are checked for the metric
// names they use, not evaluated.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { LABEL_WORKSPACE } from '../../lib/constants.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { REPO_ROOT, find, findAll, kubectlSkipReason, renderOverlay, type K8sObject } from './render.ts';
import { objectProblems } from './validate.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED (rendered-overlay checks): ${skip}`);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const ALERTS = join(REPO_ROOT, 'manifests', 'components', 'monitoring', 'alerts.yaml');
const PROGRAMS = ['webhook', 'credential-proxy', 'gateway'];

/** Metric names the programs register: every prom-client `name: '...'` in their sources. */
function exportedMetricNames(): Set<string> {
  const names = new Set<string>();
  for (const dir of [...PROGRAMS, 'lib']) {
    for (const file of readdirSync(join(REPO_ROOT, dir), { recursive: true, encoding: 'utf8' })) {
      if (!file.endsWith('.ts')) continue;
      const src = readFileSync(join(REPO_ROOT, dir, file), 'utf8');
      if (!src.includes("from 'prom-client'")) continue;
      for (const m of src.matchAll(/\bname:\s*'([a-zA-Z_:][a-zA-Z0-9_:]*)'/g)) names.add(m[1]!);
    }
  }
  return names;
}

/** The default process metrics every program's registry carries (lib/metrics.ts), read from a real registry. */
async function defaultMetricNames(): Promise<Set<string>> {
  const registry = createMetricsRegistry({ program: 'probe' });
  return new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

/** The metric names a PromQL expression reads (label matchers, ranges, strings and grouping lists removed). */
export function metricsOf(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()/g)) {
    if (!KEYWORDS.has(m[1]!)) names.add(m[1]!);
  }
  return [...names];
}

/** Names in the alerts that no program exports (a histogram's _bucket/_sum/_count series count as its own). */
function unknownMetrics(rules: Json[], exported: Set<string>): string[] {
  const unknown: string[] = [];
  for (const rule of rules) {
    for (const name of metricsOf(rule.expr)) {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      if (!exported.has(name) && !exported.has(base)) unknown.push(`${rule.alert}: ${name}`);
    }
  }
  return unknown;
}

const alertRules = (rule: Json): Json[] => rule.spec.groups.flatMap((g: Json) => g.rules);

t.test('every metric an alert names is one the programs export', async (t) => {
  const exported = new Set([...exportedMetricNames(), ...(await defaultMetricNames())]);
  t.ok(exported.has('admission_requests_total') && exported.has('rules_store_up') && exported.has('gateway_bytes_total'));
  t.ok(exported.has('process_resident_memory_bytes') && exported.has('nodejs_eventloop_lag_seconds'));
  const rules = alertRules(parseYaml(readFileSync(ALERTS, 'utf8')));
  t.ok(rules.length >= 12, 'one alert per line of docs/operations.md\'s table');
  const used = rules.flatMap((r) => metricsOf(r.expr));
  for (const name of ['admission_requests_total', 'admission_duration_seconds_bucket', 'config_reloads_total', 'tls_certificate_expiry_timestamp_seconds',
    'config_info', 'rules_store_up', 'rules_sets_rejected_total', 'proxy_requests_total', 'proxy_upstream_connect_seconds_bucket',
    'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds']) t.ok(used.includes(name), `an alert reads ${name}`);
  t.same(unknownMetrics(rules, exported), []);
  // The check fails for a misspelt metric and sees past matchers, ranges and grouping.
  t.same(metricsOf('histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{a="b c"}[5m]))) > 1 and y == 1'), ['x_seconds_bucket', 'y']);
  t.same(unknownMetrics([{ alert: 'Typo', expr: 'sum(rate(admission_request_total{result="error"}[5m])) > 0' }], exported), ['Typo: admission_request_total']);
});

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const bytesOf = (q: string) => { const m = /^(\d+)(Mi|Gi)$/.exec(q); if (!m) throw new Error(`unexpected quantity ${q}`); return Number(m[1]) * (m[2] === 'Gi' ? GIB : MIB); };

for (const overlay of ['staging', 'prod'] as const) {
  t.test(`${overlay}: the monitors scrape the programs' metrics ports`, { skip }, async (t) => {
    const objects = renderOverlay(overlay);
    const monitors = [...findAll(objects, 'ServiceMonitor'), ...findAll(objects, 'PodMonitor'), ...findAll(objects, 'PrometheusRule')];
    t.equal(monitors.length, 4);
    for (const o of monitors) t.same(objectProblems(o), [], `${o.kind} ${o.metadata.name} is schema-valid`);

    for (const [program, ns, service] of [['webhook', 'workspace-sandbox-system', 'workspace-sandbox-webhook-metrics'], ['gateway', 'workspace-sandbox-egress', 'workspace-sandbox-gateway-metrics']] as const) {
      const sm = find<Json>(objects, 'ServiceMonitor', `workspace-sandbox-${program}`, ns);
      const svc = find<Json>(objects, 'Service', service, ns);
      for (const [k, v] of Object.entries(sm.spec.selector.matchLabels)) t.equal(svc.metadata.labels[k], v, `${program}: the ServiceMonitor selects ${service}`);
      t.ok(svc.spec.ports.some((p: Json) => p.name === sm.spec.endpoints[0].port), `${program}: ${service} has port ${sm.spec.endpoints[0].port}`);
    }
    // The gateway's namespace is default-deny: the component admits Prometheus to the metrics port only.
    const gatewayMetrics = find<Json>(objects, 'Service', 'workspace-sandbox-gateway-metrics', 'workspace-sandbox-egress').spec.ports[0];
    const scrape = find<Json>(objects, 'NetworkPolicy', 'allow-prometheus-scrape', 'workspace-sandbox-egress');
    t.same(scrape.spec.ingress.flatMap((r: Json) => r.ports), [{ protocol: 'TCP', port: Number(find<Json>(objects, 'Deployment', 'workspace-sandbox-gateway', 'workspace-sandbox-egress')
      .spec.template.spec.containers[0].ports.find((p: Json) => p.name === gatewayMetrics.targetPort).containerPort) }]);
    const pm = find<Json>(objects, 'PodMonitor', 'workspace-sandbox-credential-proxy', 'sandboxes');
    t.same(pm.spec.selector.matchLabels, { [LABEL_WORKSPACE]: 'true' }, 'selects injected pods by the label the webhook sets');
    t.equal(pm.spec.podMetricsEndpoints[0].port, 'admin', 'the sidecar container port the webhook names admin');

    // The memory alert's thresholds are 90% of each program's memory limit in this overlay.
    const rule = find<Json>(objects, 'PrometheusRule', 'workspace-sandbox', 'workspace-sandbox-system');
    const memory = alertRules(rule).find((r) => r.alert === 'WorkspaceSandboxMemoryNearLimit')!;
    const thresholds = Object.fromEntries([...(memory.expr as string).matchAll(/program="([^"]+)"\} > 0\.9 \* (\d+)/g)].map((m) => [m[1], Number(m[2])]));
    const limitOf = (name: string, ns: string) => bytesOf(find<Json>(objects, 'Deployment', name, ns).spec.template.spec.containers[0].resources.limits.memory);
    const injection = parseYaml(find<Json>(objects, 'ConfigMap', 'workspace-sandbox-injection', 'workspace-sandbox-system').data['config.yaml']);
    t.same(thresholds, {
      webhook: limitOf('workspace-sandbox-webhook', 'workspace-sandbox-system'),
      gateway: limitOf('workspace-sandbox-gateway', 'workspace-sandbox-egress'),
      'credential-proxy': bytesOf(injection.sidecar.resources.limits.memory),
    });

    // The models catch a misplaced field and a malformed duration.
    const sm = structuredClone(find<Json>(objects, 'ServiceMonitor', 'workspace-sandbox-webhook', 'workspace-sandbox-system'));
    sm.spec.endpoints[0].intervall = '30s';
    t.match(objectProblems(sm as K8sObject), [/intervall/]);
    const bad = structuredClone(rule);
    bad.spec.groups[0].rules[0].for = '5 minutes';
    t.not(objectProblems(bad as K8sObject).length, 0, 'a malformed `for` is refused');
  });
}

t.test('the local overlay does not need the prometheus-operator CRDs', { skip }, async (t) => {
  t.same(renderOverlay('local').filter((o) => o.apiVersion.startsWith('monitoring.coreos.com/')), []);
});
