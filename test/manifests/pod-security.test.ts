// Pod Security `restricted` is enforced on `sandboxes`: every Pod the webhook produces (its
// golden outputs) passes the profile's checks (pod-security.ts), and the checks fail where the
// profile does (so a pass means something).
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { NAMESPACES } from '../../lib/constants.ts';
import { restrictedViolations } from './pod-security.ts';
import { find, kubectlSkipReason, OVERLAYS, REPO_ROOT, renderOverlay } from './render.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const GOLDEN_DIR = join(REPO_ROOT, 'test', 'testdata', 'inject');
const goldens = readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.yaml.injected')).sort();

t.test('every golden injected Pod passes Pod Security restricted', async (t) => {
  t.ok(goldens.length >= 15);
  for (const f of goldens) {
    for (const doc of parseAllDocuments(readFileSync(join(GOLDEN_DIR, f), 'utf8'))) {
      const pod = doc.toJS() as Json;
      if (pod?.kind !== 'Pod') continue;
      t.same(restrictedViolations(pod), [], f);
    }
  }
});

t.test('the checks refuse what restricted refuses', async (t) => {
  const pod = parseAllDocuments(readFileSync(join(GOLDEN_DIR, 'minimal.yaml.injected'), 'utf8'))[0]!.toJS() as Json;
  const ws = () => pod.spec.containers[0].securityContext;
  const cases: [string, () => void][] = [
    ['capabilities_restricted', () => { ws().capabilities.add = ['CHOWN']; }],
    ['allowPrivilegeEscalation', () => { delete ws().allowPrivilegeEscalation; }],
    ['runAsNonRoot', () => { delete ws().runAsNonRoot; }],
    ['seccompProfile_restricted', () => { delete ws().seccompProfile; }],
    ['capabilities_restricted', () => { ws().capabilities.drop = []; }],
    ['restrictedVolumes', () => { pod.spec.volumes.push({ name: 'n', nfs: { server: 'x', path: '/' } }); }],
    ['hostPorts', () => { pod.spec.containers[0].ports.push({ containerPort: 1, hostPort: 1 }); }],
  ];
  for (const [check, apply] of cases) {
    const saved = structuredClone(pod);
    apply();
    t.match(restrictedViolations(pod), [new RegExp(`^${check}: `)], check);
    Object.assign(pod, saved);
  }
});

const skip = kubectlSkipReason();
t.test('sandboxes enforces restricted in every overlay', { skip }, async (t) => {
  for (const overlay of OVERLAYS) {
    const labels = find<Json>(renderOverlay(overlay), 'Namespace', NAMESPACES.sandboxes).metadata.labels;
    t.same([labels['pod-security.kubernetes.io/enforce'], labels['pod-security.kubernetes.io/enforce-version']], ['restricted', 'v1.32'], overlay);
  }
});
