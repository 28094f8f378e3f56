// The `sandboxes` LimitRange sets no defaults: the API server's LimitRanger applies them before
// any webhook, and the webhook keeps resources a Pod already has, so defaults there would replace
// the injection config's (found on a live cluster: 500m/512Mi limits instead of 2 CPU/2Gi). Here
// `inject` gets each workspace Pod as it arrives after LimitRanger ran with the rendered
// LimitRange, and the configured resources must be what the Pod ends with.
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { NAMESPACES, SERVICE_ACCOUNT_WORKSPACE } from '../../lib/constants.ts';
import { parseInjectionConfig } from '../../webhook/config.ts';
import { inject } from '../../webhook/inject.ts';
import { find, kubectlSkipReason, OVERLAYS, renderOverlay } from './render.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * LimitRanger's defaulting (plugin/pkg/admission/limitranger, defaultContainerResourceRequirements):
 * for each container, a `default` fills absent limits and a `defaultRequest` absent requests.
 * Stands in for the API server's admission plugin.
 */
function limitRangerDefaults(pod: Json, limitRange: Json): Json {
  const out = structuredClone(pod);
  for (const item of limitRange.spec.limits.filter((l: Json) => l.type === 'Container')) {
    for (const c of [...(out.spec.initContainers ?? []), ...out.spec.containers]) {
      const res = (c.resources ??= {});
      for (const [field, source] of [['limits', item.default], ['requests', item.defaultRequest ?? item.default]] as const) {
        if (!source) continue;
        res[field] = { ...source, ...res[field] };
      }
    }
  }
  return out;
}

const skip = kubectlSkipReason();
for (const overlay of OVERLAYS) {
  t.test(`${overlay}: a Pod defaulted by the LimitRange gets the injection config's resources`, { skip }, async (t) => {
    const objs = renderOverlay(overlay);
    const limitRange = find<Json>(objs, 'LimitRange', 'workspaces', NAMESPACES.sandboxes);
    const item = limitRange.spec.limits.find((l: Json) => l.type === 'Container');
    t.notOk(item.default, 'no default limits');
    t.notOk(item.defaultRequest, 'no default requests');
    t.ok(item.max, 'a ceiling');
    const config = parseInjectionConfig(parseYaml(find<Json>(objs, 'ConfigMap', 'workspace-sandbox-injection', NAMESPACES.system).data['config.yaml']));
    const arriving = limitRangerDefaults({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'w', namespace: NAMESPACES.sandboxes },
      spec: { serviceAccountName: SERVICE_ACCOUNT_WORKSPACE, containers: [{ name: 'workspace', image: 'python:3.12-slim' }] } }, limitRange);
    const result = inject(arriving, config);
    if (result.denied) throw new Error(result.message);
    const ws = (result.pod as Json).spec.containers[0];
    t.same(ws.resources, { requests: { ...config.workspace.resources.requests }, limits: { ...config.workspace.resources.limits } });
  });
}

t.test('the mechanism: a LimitRange with defaults would have replaced the configured resources', async (t) => {
  const config = parseInjectionConfig({});
  const withDefaults = { spec: { limits: [{ type: 'Container', default: { cpu: '500m', memory: '512Mi' }, defaultRequest: { cpu: '100m', memory: '128Mi' } }] } };
  const arriving = limitRangerDefaults({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'w' }, spec: { serviceAccountName: SERVICE_ACCOUNT_WORKSPACE, containers: [{ name: 'workspace', image: 'x' }] } }, withDefaults);
  const result = inject(arriving, config);
  if (result.denied) throw new Error(result.message);
  t.same((result.pod as Json).spec.containers[0].resources.limits, { cpu: '500m', memory: '512Mi' }, 'the webhook keeps what the Pod arrives with');
  t.not(config.workspace.resources.limits.memory, '512Mi');
});
