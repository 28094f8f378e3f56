// `workspace-sandbox inject`, run as a real process.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import jsonpatch from 'fast-json-patch';
import { parse, parseAllDocuments } from 'yaml';

const BIN = fileURLToPath(new URL('../../bin/workspace-sandbox.ts', import.meta.url));
const DATA = fileURLToPath(new URL('../testdata/inject/', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../webhook/injection-config.example.yaml', import.meta.url));

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BIN, 'inject', ...args], { encoding: 'utf8', input, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const workloads = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: pool, namespace: sandboxes}
spec:
  selector: {matchLabels: {app: ws}}
  template:
    metadata: {labels: {app: ws}}
    spec:
      containers: [{name: workspace, image: example/ws:1, env: [{name: AWS_ROLE_ARN, value: arn}]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: sandboxes}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: example/job:1}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: untouched}
data: {a: b}
`;

t.test('a Pod file renders exactly the golden the webhook produces', async (t) => {
  const r = run(['-f', join(DATA, 'minimal.yaml'), '--config', EXAMPLE]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, readFileSync(join(DATA, 'minimal.yaml.injected'), 'utf8'));
});

t.test('stdin, multi-document YAML, workload templates; other kinds pass through', async (t) => {
  const r = run(['-f', '-', '--config', EXAMPLE], workloads);
  t.equal(r.code, 0, r.stderr);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- nested manifest fields, checked by value
  const docs = parseAllDocuments(r.stdout).map((d) => d.toJSON() as Record<string, any>);
  t.equal(docs.length, 3);
  const dep = docs[0]!.spec.template;
  t.equal(dep.spec.initContainers[0].name, 'credential-proxy');
  t.ok(dep.spec.initContainers[0].env.some((e: { name: string }) => e.name === 'AWS_ROLE_ARN'), 'credential moved into the sidecar');
  t.notOk(dep.spec.containers[0].env.some((e: { name: string }) => e.name === 'AWS_ROLE_ARN'));
  t.equal(dep.metadata.labels['workspace-sandbox.io/workspace'], 'true');
  t.equal(docs[0]!.spec.selector.matchLabels.app, 'ws');
  const job = docs[1]!.spec.jobTemplate.spec.template;
  t.equal(job.spec.runtimeClassName, 'gvisor');
  t.equal(job.spec.restartPolicy, 'Never', 'the Job restart policy is kept');
  t.same(docs[2], { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'untouched' }, data: { a: 'b' } });
});

t.test('-o json and -o patch', async (t) => {
  const one = run(['-f', join(DATA, 'irsa.yaml'), '--config', EXAMPLE, '-o', 'json']);
  t.equal(one.code, 0);
  t.same(JSON.parse(one.stdout), parse(readFileSync(join(DATA, 'irsa.yaml.injected'), 'utf8')));
  const many = run(['-f', '-', '-o', 'json'], workloads);
  t.equal(JSON.parse(many.stdout).kind, 'List');
  const patches = run(['-f', '-', '-o', 'patch'], workloads);
  t.equal(patches.code, 0);
  const lines = patches.stdout.trim().split('\n').map((l) => JSON.parse(l) as jsonpatch.Operation[]);
  t.equal(lines.length, 3);
  const inputs = parseAllDocuments(workloads).map((d) => d.toJSON() as object);
  const outputs = (JSON.parse(run(['-f', '-', '-o', 'json'], workloads).stdout) as { items: object[] }).items;
  inputs.forEach((input, i) => t.same(jsonpatch.applyPatch(input, lines[i]!, true, false).newDocument, outputs[i], `patch ${i} applies`));
  t.same(lines[2], [], 'no patch for the ConfigMap');
});

t.test('--explain says what changes, or why a Pod is denied', async (t) => {
  const ok = run(['-f', join(DATA, 'pod-identity.yaml'), '--config', EXAMPLE, '--explain']);
  t.equal(ok.code, 0);
  t.match(ok.stdout, /Pod sandboxes\/ws-pod-identity: would be injected \(\d+ patch operations\)/);
  t.match(ok.stdout, /moved env AWS_CONTAINER_CREDENTIALS_FULL_URI from container workspace to credential-proxy/);
  t.match(ok.stdout, /removed the service account token volume kube-api-access-x7k2p/);
  t.match(ok.stdout, /add +\/spec\/runtimeClassName = "gvisor"/);
  const denied = run(['-f', join(DATA, 'deny-capabilities.yaml'), '--config', EXAMPLE, '--explain']);
  t.equal(denied.code, 1);
  t.match(denied.stdout, /would be DENIED \(policy\)/);
  t.match(denied.stdout, /\[capability\] spec.containers\[0\].securityContext.capabilities.add\[0\]: capability NET_ADMIN/);
  const warn = run(['-f', join(DATA, 'resources-over-max.yaml'), '--config', EXAMPLE, '--explain']);
  t.match(warn.stdout, /warnings:\n +- spec.containers\[0\].resources.limits.cpu 8 is above the maximum 4/);
});

t.test('denials, bad configs and bad usage have distinct exit codes', async (t) => {
  const denied = run(['-f', join(DATA, 'deny-privileged.yaml')]);
  t.equal(denied.code, 1);
  t.match(denied.stderr, /Pod sandboxes\/ws-priv: denied: .*privileged/);
  const dir = mkdtempSync(join(tmpdir(), 'ws-cli-'));
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'runtime: {runtimeClass: gvisor}\nnamespaces: [UPPER]\n');
  const badConfig = run(['-f', join(DATA, 'minimal.yaml'), '--config', bad]);
  t.equal(badConfig.code, 1);
  t.match(badConfig.stderr, /2 problems/);
  t.match(badConfig.stderr, /runtime.runtimeClass: unknown field/);
  t.equal(run([]).code, 2);
  t.equal(run(['-f', join(DATA, 'minimal.yaml'), '-o', 'xml']).code, 2);
  t.equal(run(['--frobnicate']).code, 2);
  const help = run(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /workspace-sandbox inject -f FILE/);
  const notYaml = run(['-f', '-'], 'a: [b\n');
  t.equal(notYaml.code, 1);
  t.match(notYaml.stderr, /not valid YAML/);
});

t.test('input that holds nothing to inject is an error, not a silent success', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-cli-'));
  const empty = join(dir, 'empty.yaml');
  writeFileSync(empty, '');
  for (const [args, input] of [[['-f', empty]], [['-f', '-'], '# only a comment\n---\n']] as [string[], string?][]) {
    const r = run(args, input);
    t.equal(r.code, 1, `${args.join(' ')} exits 1`);
    t.equal(r.stdout, '', 'nothing on stdout');
    t.match(r.stderr, /^workspace-sandbox inject: WS_ERR_VALIDATION: .* holds no manifest/);
  }
  const missing = run(['-f', join(dir, 'absent.yaml')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^workspace-sandbox inject: WS_ERR_VALIDATION: cannot read .*absent\.yaml/);
});

t.test('a YAML error names the place and ends its sentence (no dangling colon)', async (t) => {
  const r = run(['-f', '-'], 'a: [b\n');
  t.equal(r.code, 1);
  const line = r.stderr.trim();
  t.match(line, /^workspace-sandbox inject: WS_ERR_VALIDATION: standard input: document 1 is not valid YAML: .+ \(line \d+, column \d+\)$/);
  t.notMatch(line, /:$/);
});

t.test('usage errors share the one error shape and exit 2', async (t) => {
  for (const args of [['--frobnicate'], [], ['-f', 'x', '-o', 'xml'], ['-f']]) {
    const r = run(args);
    t.equal(r.code, 2, `${args.join(' ') || '(none)'} exits 2`);
    t.match(r.stderr, /^workspace-sandbox inject: WS_ERR_USAGE: \S/);
  }
});

t.test('examples/pod.yaml is a plain Pod the default config injects', async (t) => {
  const example = fileURLToPath(new URL('../../examples/pod.yaml', import.meta.url));
  const r = run(['-f', example, '-o', 'json']);
  t.equal(r.code, 0, r.stderr);
  const pod = JSON.parse(r.stdout) as { spec: { runtimeClassName?: string; initContainers?: { name: string }[] } };
  t.equal(pod.spec.runtimeClassName, 'gvisor');
  t.equal(pod.spec.initContainers?.[0]?.name, 'credential-proxy');
});
