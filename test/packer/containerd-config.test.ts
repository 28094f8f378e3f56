// packer/scripts/configure-containerd-runsc.sh run against a temporary root: the NodeConfig
// drop-in nodeadm reads, the TOML it carries (parsed with smol-toml), /etc/containerd/runsc.toml,
// and the refusal to build on a base image whose nodeadm ignores drop-ins.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';
import { parse as parseYaml } from 'yaml';

const SCRIPT = fileURLToPath(new URL('../../packer/scripts/configure-containerd-runsc.sh', import.meta.url));
const RUNTIME_TOML = fileURLToPath(new URL('../../packer/files/runsc-runtime.toml', import.meta.url));
const DROPIN = 'etc/eks/nodeadm.d/50-workspace-sandbox-runsc.yaml';
const RUNSC_TOML = 'etc/containerd/runsc.toml';
const CRI_V2 = 'io.containerd.grpc.v1.cri';

type Table = Record<string, unknown>;

function run(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', [SCRIPT], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 30_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr });
    });
  });
}

/** A temporary root shaped like an AL2023 EKS AMI whose nodeadm reads drop-ins (or not). */
function fakeRoot(t: { teardown(fn: () => unknown): void }, nodeadm: 'binary' | 'unit' | 'old'): string {
  const root = mkdtempSync(join(tmpdir(), 'ws-node-root-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
  // The real nodeadm binary embeds its default config sources; an older one only knows IMDS.
  const sources = nodeadm === 'old' ? 'imds://user-data' : 'imds://user-data\x00file:///etc/eks/nodeadm.d/';
  writeFileSync(join(root, 'usr/bin/nodeadm'), nodeadm === 'unit' ? '\x7fELF imds://user-data' : `\x7fELF\x00${sources}\x00`);
  writeFileSync(join(root, 'etc/systemd/system/nodeadm-run.service'), nodeadm === 'unit'
    ? '[Service]\nExecStart=/usr/bin/nodeadm init --skip config --config-source imds://user-data --config-source file:///etc/eks/nodeadm.d/\n'
    : '[Service]\nExecStart=/usr/bin/nodeadm init --skip config\n');
  return root;
}

function table(value: unknown, path: string[]): Table {
  let cur = value;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') throw new Error(`no table at ${path.join('.')}`);
    cur = (cur as Table)[key];
  }
  if (cur === null || typeof cur !== 'object') throw new Error(`no table at ${path.join('.')}`);
  return cur as Table;
}

/** nodeadm's merge (util.Merge over the TOML maps): later values win, tables merge key by key. */
function deepMerge(base: Table, over: Table): Table {
  const out: Table = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = b && v && typeof b === 'object' && typeof v === 'object' && !Array.isArray(b) && !Array.isArray(v)
      ? deepMerge(b as Table, v as Table)
      : v;
  }
  return out;
}

t.test('writes a NodeConfig drop-in whose containerd TOML registers the runsc handler', async (t) => {
  const root = fakeRoot(t, 'binary');
  const r = await run({ ROOT: root });
  t.equal(r.code, 0, r.stderr);

  const nodeConfig = parseYaml(readFileSync(join(root, DROPIN), 'utf8')) as Table;
  t.equal(nodeConfig.apiVersion, 'node.eks.aws/v1alpha1');
  t.equal(nodeConfig.kind, 'NodeConfig');
  t.same(Object.keys(table(nodeConfig, ['spec'])), ['containerd'], 'the drop-in sets containerd only (cluster details stay in user data)');
  const text = table(nodeConfig, ['spec', 'containerd']).config;
  t.type(text, 'string');

  const toml = parseToml(text as string) as Table;
  const runsc = table(toml, ['plugins', CRI_V2, 'containerd', 'runtimes', 'runsc']);
  t.equal(runsc.runtime_type, 'io.containerd.runsc.v1');
  t.same(table(runsc, ['options']), { TypeUrl: 'io.containerd.runsc.v1.options', ConfigPath: '/etc/containerd/runsc.toml' });
  t.same(Object.keys(table(toml, ['plugins', CRI_V2, 'containerd'])), ['runtimes'], 'the default runtime is left to nodeadm');
  t.same(Object.keys(table(toml, ['plugins', CRI_V2, 'containerd', 'runtimes'])), ['runsc']);

  // The drop-in carries the same data as the reviewed source file.
  t.same(toml, parseToml(readFileSync(RUNTIME_TOML, 'utf8')));
});

t.test('writes /etc/containerd/runsc.toml with the systrap platform', async (t) => {
  const root = fakeRoot(t, 'binary');
  t.equal((await run({ ROOT: root })).code, 0);
  const runscConfig = parseToml(readFileSync(join(root, RUNSC_TOML), 'utf8')) as Table;
  const flags = table(runscConfig, ['runsc_config']);
  t.equal(flags.platform, 'systrap');
  // The shim turns every value into a --flag=value argument: strings only.
  for (const [k, v] of Object.entries(flags)) t.type(v, 'string', `${k} is a string`);
});

t.test('merged the way nodeadm merges it, runc stays the default and runsc is added', async (t) => {
  const root = fakeRoot(t, 'binary');
  t.equal((await run({ ROOT: root })).code, 0);
  const nodeConfig = parseYaml(readFileSync(join(root, DROPIN), 'utf8')) as { spec: { containerd: { config: string } } };
  // A schema-2 base shaped like the config nodeadm renders (its template: version 2, runc default).
  const base = parseToml([
    'version = 2',
    `[plugins."${CRI_V2}".containerd]`,
    'default_runtime_name = "runc"',
    `[plugins."${CRI_V2}".containerd.runtimes.runc]`,
    'runtime_type = "io.containerd.runc.v2"',
    `[plugins."${CRI_V2}".containerd.runtimes.runc.options]`,
    'SystemdCgroup = true',
  ].join('\n')) as Table;
  const merged = deepMerge(base, parseToml(nodeConfig.spec.containerd.config) as Table);
  const containerd = table(merged, ['plugins', CRI_V2, 'containerd']);
  t.equal(containerd.default_runtime_name, 'runc');
  t.equal(table(containerd, ['runtimes', 'runc']).runtime_type, 'io.containerd.runc.v2');
  t.equal(table(containerd, ['runtimes', 'runsc']).runtime_type, 'io.containerd.runsc.v1');
});

t.test('the TOML is schema 2 only, so nodeadm picks the right template on containerd 1.7 and 2.x', async (t) => {
  // nodeadm detects schema 3 by substring (Version3configInNodeConfig): a comment naming a
  // schema-3 plugin would be enough to break a containerd 1.7 node.
  const source = readFileSync(RUNTIME_TOML, 'utf8');
  t.notMatch(source, /io\.containerd\.cri\.v1\.(images|runtime)/);
  const root = fakeRoot(t, 'binary');
  t.equal((await run({ ROOT: root })).code, 0);
  const dropin = readFileSync(join(root, DROPIN), 'utf8');
  t.notMatch(dropin, /io\.containerd\.cri\.v1\.(images|runtime)/);
  t.notMatch((parseYaml(dropin) as { spec: { containerd: { config: string } } }).spec.containerd.config, /^\s*#/m, 'no prose inside the merged TOML');
});

t.test('drop-in support announced by the nodeadm unit files is accepted too', async (t) => {
  const root = fakeRoot(t, 'unit');
  const r = await run({ ROOT: root });
  t.equal(r.code, 0, r.stderr);
  t.ok(existsSync(join(root, DROPIN)));
});

t.test('a base image whose nodeadm ignores /etc/eks/nodeadm.d fails the build and writes nothing', async (t) => {
  const root = fakeRoot(t, 'old');
  const r = await run({ ROOT: root });
  t.not(r.code, 0);
  t.match(r.stderr, /does not read NodeConfig drop-ins/);
  t.notOk(existsSync(join(root, DROPIN)));
  t.notOk(existsSync(join(root, RUNSC_TOML)));
});

t.test('running twice gives the same files (re-runnable provisioning)', async (t) => {
  const root = fakeRoot(t, 'binary');
  t.equal((await run({ ROOT: root })).code, 0);
  const first = [readFileSync(join(root, DROPIN), 'utf8'), readFileSync(join(root, RUNSC_TOML), 'utf8')];
  t.equal((await run({ ROOT: root })).code, 0);
  t.same([readFileSync(join(root, DROPIN), 'utf8'), readFileSync(join(root, RUNSC_TOML), 'utf8')], first);
});

t.test('a missing source file fails clearly', async (t) => {
  const root = fakeRoot(t, 'binary');
  const empty = mkdtempSync(join(tmpdir(), 'ws-no-files-'));
  t.teardown(() => rmSync(empty, { recursive: true, force: true }));
  const r = await run({ ROOT: root, FILES_DIR: empty });
  t.not(r.code, 0);
  t.match(r.stderr, /missing .*runsc-runtime\.toml/);
});
