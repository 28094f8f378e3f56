// packer/al2023-gvisor.pkr.hcl checked with the Packer Debian ships (1.6.6, from 2020), which
// knows HCL2 but predates several things the template uses. What it checks here:
//  - `packer fmt -check` on every file in packer/;
//  - `packer validate -syntax-only` on the template (not on plugins.pkr.hcl: 1.6.6 rejects the
//    `required_plugins` block it holds);
//  - full `packer validate` against 1.6.6's built-in amazon-ebs builder, on a copy without the
//    three constructs it predates (variable `validation` blocks, whose functions it cannot call;
//    `imds_support`; `metadata_options`): every other argument, block and type is checked;
//  - `packer inspect`: the evaluated locals (AMI name, tags, gVisor architecture) per architecture.
// Newer Packer (>= 1.10 with the amazon plugin) is needed for the rest; see packer/README.md.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { parseAllDocuments } from 'yaml';
import { toolSkipReason } from '../images/tools.ts';

const PACKER_DIR = fileURLToPath(new URL('../../packer/', import.meta.url));
const TEMPLATE = join(PACKER_DIR, 'al2023-gvisor.pkr.hcl');
const MANIFESTS_DIR = fileURLToPath(new URL('../../manifests/', import.meta.url));

const AMI_NAME_PREFIX = 'workspace-sandbox-al2023-gvisor-';
const AMI_TAG = ['workspace-sandbox.io/ami', 'al2023-gvisor'] as const;

const skip = toolSkipReason('packer', 'REQUIRE_PACKER', 'apt-get install packer', ['version']);

function packer(args: string[], cwd = PACKER_DIR): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    // CHECKPOINT_DISABLE: no version check call home from a test.
    execFile('packer', args, { cwd, env: { ...process.env, CHECKPOINT_DISABLE: '1' }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

/** `local.x: "value"` lines of `packer inspect`, values unquoted (HCL escapes kept). */
function inspectLocals(out: string): Record<string, string> {
  const locals: Record<string, string> = {};
  for (const m of out.matchAll(/^local\.([a-z_]+): "(.*)"$/gm)) locals[m[1]!] = m[2]!;
  return locals;
}

const template = readFileSync(TEMPLATE, 'utf8');

t.test('packer fmt -check: every file in packer/ is formatted', { skip }, async (t) => {
  const files = readdirSync(PACKER_DIR).filter((f) => f.endsWith('.pkr.hcl'));
  t.ok(files.length >= 2, `found ${files.join(', ')}`);
  for (const f of files) {
    const r = await packer(['fmt', '-check', '-diff', f]);
    t.equal(r.code, 0, `${f}: ${r.out}`);
  }
});

t.test('packer validate -syntax-only accepts the template', { skip }, async (t) => {
  const r = await packer(['validate', '-syntax-only', 'al2023-gvisor.pkr.hcl']);
  t.equal(r.code, 0, r.out);
});

t.test('full packer validate, minus what Packer 1.6.6 predates, for both architectures', { skip }, async (t) => {
  // The constructs removed must really be there (otherwise this test would prove nothing about them).
  const newer = [/\n {2}validation \{[\s\S]*?\n {2}\}\n/g, /\n {2}imds_support += .*\n/g, /\n {2}metadata_options \{[\s\S]*?\n {2}\}\n/g];
  let stripped = template;
  for (const re of newer) {
    t.match(template, re, `template has ${re.source.slice(0, 24)}…`);
    stripped = stripped.replace(re, '\n');
  }
  const dir = mkdtempSync(join(tmpdir(), 'ws-packer-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'template.pkr.hcl'), stripped);
  // path.root resolves the provisioners' scripts and files next to the template.
  symlinkSync(join(PACKER_DIR, 'scripts'), join(dir, 'scripts'));
  symlinkSync(join(PACKER_DIR, 'files'), join(dir, 'files'));
  for (const arch of ['x86_64', 'arm64']) {
    const r = await packer(['validate', '-var', `architecture=${arch}`, 'template.pkr.hcl'], dir);
    t.equal(r.code, 0, `${arch}: ${r.out}`);
  }
  // And it does fail on a broken template.
  writeFileSync(join(dir, 'template.pkr.hcl'), stripped.replace('ssh_username  = "ec2-user"', 'ssh_username  = "ec2-user"\n  no_such_argument = true'));
  const broken = await packer(['validate', 'template.pkr.hcl'], dir);
  t.not(broken.code, 0, 'an unknown argument is rejected');
});

t.test('AMI name, tags and gVisor architecture per architecture (packer inspect)', { skip }, async (t) => {
  for (const [arch, gvisorArch, instance] of [['x86_64', 'x86_64', 'm7i.large'], ['arm64', 'aarch64', 'm7g.large']] as const) {
    const r = await packer(['inspect', '-var', `architecture=${arch}`, 'al2023-gvisor.pkr.hcl']);
    t.equal(r.code, 0, r.out);
    const locals = inspectLocals(r.out);
    t.match(locals.ami_name, new RegExp(`^${AMI_NAME_PREFIX}1\\.32-${arch}-\\d{14}$`), `${arch} AMI name`);
    t.equal(locals.gvisor_arch, gvisorArch, `${arch} → gVisor's ${gvisorArch}`);
    t.equal(locals.instance_type, instance);
    t.match(locals.ami_tags, `\\"${AMI_TAG[0]}\\" = \\"${AMI_TAG[1]}\\"`, 'selection tag');
    t.match(locals.ami_tags, '\\"workspace-sandbox.io/gvisor-release\\" = \\"20250707.0\\"');
  }
});

t.test('the base AMI is the EKS-optimized AL2023 one for Kubernetes 1.32', async (t) => {
  t.match(template, /name += "amazon-eks-node-al2023-\$\{var\.architecture\}-standard-\$\{var\.kubernetes_version\}-v\*"/);
  t.match(template, /variable "kubernetes_version" \{[^}]*default += "1\.32"/);
  t.match(template, /most_recent = true/);
  t.match(template, /owners += \[var\.source_ami_owner\]/);
  t.match(template, /tags += local\.ami_tags/);
  for (const script of template.matchAll(/"\$\{path\.root\}\/(scripts\/[^"]+)"/g)) {
    t.ok(existsSync(join(PACKER_DIR, script[1]!)), `${script[1]} exists`);
  }
});

t.test('the manifests select what this template builds, and name the handler it registers', async (t) => {
  const docs: Record<string, unknown>[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (/\.ya?ml$/.test(e.name)) {
        for (const d of parseAllDocuments(readFileSync(join(dir, e.name), 'utf8'))) {
          const js = d.toJS() as Record<string, unknown> | null;
          if (js && typeof js === 'object') docs.push(js);
        }
      }
    }
  };
  if (existsSync(MANIFESTS_DIR)) walk(MANIFESTS_DIR);
  // Overlays patch EC2NodeClasses partially; the ones that select AMIs are checked.
  const nodeClasses = docs.filter((d) => d.kind === 'EC2NodeClass' && (d.spec as { amiSelectorTerms?: unknown } | undefined)?.amiSelectorTerms);
  if (nodeClasses.length === 0) {
    t.pass('no EC2NodeClass with amiSelectorTerms in manifests/ yet: nothing to cross-check');
    return;
  }
  const sampleName = `${AMI_NAME_PREFIX}1.32-x86_64-20250101000000`;
  for (const nc of nodeClasses) {
    const terms = ((nc.spec as { amiSelectorTerms?: { name?: string; tags?: Record<string, string> }[] }).amiSelectorTerms) ?? [];
    t.ok(terms.length > 0, 'amiSelectorTerms present');
    for (const term of terms) {
      if (term.name) {
        const glob = new RegExp(`^${term.name.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
        t.match(sampleName, glob, `AMI name matches ${term.name}`);
      }
      for (const [k, v] of Object.entries(term.tags ?? {})) {
        t.match(template, new RegExp(`"${k.replace(/[./]/g, '\\$&')}"\\s+= "${v}"`), `the AMI carries tag ${k}=${v}`);
      }
    }
  }
  const handlers = docs.filter((d) => d.kind === 'RuntimeClass').map((d) => d.handler);
  const runtimes = Object.keys(((parseToml(readFileSync(join(PACKER_DIR, 'files/runsc-runtime.toml'), 'utf8')) as {
    plugins: Record<string, { containerd: { runtimes: Record<string, unknown> } }>;
  }).plugins['io.containerd.grpc.v1.cri']!.containerd.runtimes));
  for (const h of handlers.filter((h) => h !== 'runc')) t.ok(runtimes.includes(h as string), `RuntimeClass handler ${String(h)} is registered by the AMI`);
});

t.test('a build without the runsc SHA-512 pins fails the variables\' validation; the plugin version is bounded', async (t) => {
  // Packer 1.6.6 cannot evaluate these blocks (see above): the condition is read from the
  // template and evaluated with the same regular expression here; install-gvisor.test.ts proves
  // the script refuses an empty pin on its own.
  for (const name of ['gvisor_runsc_sha512', 'gvisor_shim_sha512']) {
    const block = new RegExp(`variable "${name}" \\{[\\s\\S]*?\\n\\}\\n`).exec(template)?.[0] ?? '';
    const cond = new RegExp(`condition += can\\(regex\\("([^"]+)", var\\.${name}\\)\\)`).exec(block);
    t.ok(cond, `${name} has a validation block`);
    const re = new RegExp(cond![1]!.replace(/\\\\/g, '\\'));
    t.notOk(re.test(''), `${name}: the empty default is refused`);
    t.notOk(re.test('f'.repeat(127)), `${name}: a short digest is refused`);
    t.ok(re.test('0123456789abcdefABCDEF'.padEnd(128, '0')), `${name}: a SHA-512 is accepted`);
    t.match(template, new RegExp(`"GVISOR_${name === 'gvisor_runsc_sha512' ? 'RUNSC' : 'SHIM'}_SHA512=\\$\\{var\\.${name}\\}"`), `${name} reaches install-gvisor.sh`);
  }
  const plugins = readFileSync(join(PACKER_DIR, 'plugins.pkr.hcl'), 'utf8');
  const version = /amazon = \{[\s\S]*?version += "([^"]+)"/.exec(plugins)?.[1] ?? '';
  t.match(version, /^>= \d+\.\d+\.\d+, < \d+\.\d+\.\d+$/, `the amazon plugin has a lower and an upper bound (${version})`);
});
