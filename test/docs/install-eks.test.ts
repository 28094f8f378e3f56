// docs/install-eks.md: every command marked "(checked)" runs here, offline, in a temp dir, and
// succeeds (render, guard build, key generation, dry-run object shapes). The rest need AWS.
import t from 'tap';
import { execSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT, kubectlSkipReason } from '../manifests/render.ts';

const doc = readFileSync(join(REPO_ROOT, 'docs', 'install-eks.md'), 'utf8');
const checked = [...doc.matchAll(/^(.*)#\s*\(checked\)\s*$/gm)].map((m) => m[1]!.trim());
const skip = kubectlSkipReason();

t.test('the guide has checked commands and links infra/README.md', async (t) => {
  t.ok(checked.length >= 5, `${checked.length} checked commands`);
  t.match(doc, /\(\.\.\/infra\/README\.md\)/);
  t.match(doc, /workspace-sandbox-workspace/);
  t.match(doc, /NETWORK_POLICY_ENFORCING_MODE=strict/);
  t.match(doc, /interruption queue/);
});

t.test('every checked command runs', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-install-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const command of checked) {
    // Paths in the guide are relative to the repository; outputs go to the temp dir.
    const cmd = command.replace(/> manifests\/overlays\/(\w+)\/workspace-guard\.yaml/, `> ${dir}/guard-$1.yaml`).replace('/tmp/rendered.yaml', `${dir}/rendered.yaml`)
      .replace(/^npx workspace-sandbox /, `npx node ${join(REPO_ROOT, 'bin', 'workspace-sandbox.ts')} `).replace(/--from-file=(\w+\.pem)/, `--from-file=${dir}/$1`)
      .replace(/writeFileSync\('(\w+\.pem)'/g, `writeFileSync('${dir}/$1'`);
    const out = execSync(cmd, { cwd: REPO_ROOT, encoding: 'utf8', shell: '/bin/bash', stdio: ['ignore', 'pipe', 'pipe'] });
    t.pass(command.slice(0, 80));
    if (/--dry-run=client -o yaml/.test(command)) {
      const obj = parse(out) as { kind: string; metadata: { name: string; namespace: string } };
      t.ok(['Secret', 'ConfigMap', 'ServiceAccount'].includes(obj.kind) && obj.metadata.name.startsWith('workspace-sandbox-'), `${obj.kind} ${obj.metadata.name}`);
    }
  }
  const guard = readFileSync(join(dir, 'guard-prod.yaml'), 'utf8');
  t.equal(guard, readFileSync(join(REPO_ROOT, 'manifests', 'overlays', 'prod', 'workspace-guard.yaml'), 'utf8'), 'the committed guard is the built one');
});
