import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pkg from '../package.json' with { type: 'json' };
import { COMMANDS } from '../lib/cli.ts';

const BIN = fileURLToPath(new URL('../bin/workspace-sandbox.ts', import.meta.url));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('--version prints the package version', async (t) => {
  const r = run('--version');
  t.equal(r.code, 0);
  t.equal(r.stdout.trim(), pkg.version);
});

t.test('--help lists the commands', async (t) => {
  t.same(Object.keys(COMMANDS).sort(), ['agent', 'gateway', 'guard', 'inject', 'proxy', 'webhook'], 'every program has its command');
  const r = run('--help');
  t.equal(r.code, 0);
  t.match(r.stdout, /Usage: workspace-sandbox <command>/);
  for (const name of Object.keys(COMMANDS)) t.match(r.stdout, new RegExp(`\\n  ${name}\\s`), name);
});

t.test('no command prints usage and exits 2; an unknown one names it', async (t) => {
  const none = run();
  t.equal(none.code, 2);
  t.match(none.stdout, /Usage:/);
  const bad = run('frobnicate');
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown command 'frobnicate'/);
});

t.test('every command has its own --help', async (t) => {
  for (const name of Object.keys(COMMANDS)) {
    const r = run(name, '--help');
    t.equal(r.code, 0, `${name} --help exits 0`);
    t.match(r.stdout, new RegExp(`workspace-sandbox ${name}`), `${name} --help names itself`);
  }
});

t.test('every command answers --version and refuses stray arguments in one wording', async (t) => {
  for (const [name, command] of Object.entries(COMMANDS)) {
    const v = run(name, '--version');
    t.equal(v.code, 0, `${name} --version exits 0`);
    t.equal(v.stdout.trim(), pkg.version, `${name} --version prints the version`);
    if (!command.server) continue;
    const bad = run(name, '--frobnicate');
    t.equal(bad.code, 2, `${name} --frobnicate exits 2`);
    t.equal(bad.stderr.trim(), `workspace-sandbox ${name}: WS_ERR_USAGE: unexpected argument '--frobnicate': the ${name} is configured by environment variables (see 'workspace-sandbox ${name} --help')`);
  }
});

t.test('options are parsed with util.parseArgs: an unknown one is a usage error in the one shape', async (t) => {
  const top = run('--frobnicate');
  t.equal(top.code, 2);
  t.equal(top.stderr.split('\n')[0], "workspace-sandbox: WS_ERR_USAGE: Unknown option '--frobnicate'");
  t.equal(run('-hv').code, 0, 'short options combine');
  const guard = run('guard', '--config');
  t.equal(guard.code, 2);
  t.equal(guard.stderr.split('\n')[0], "workspace-sandbox guard: WS_ERR_USAGE: Option '--config <value>' argument missing");
  const stray = run('guard', 'extra');
  t.equal(stray.code, 2);
  t.match(stray.stderr, /^workspace-sandbox guard: WS_ERR_USAGE: Unexpected argument 'extra'/);
  const builtIn = run('guard');
  t.equal(builtIn.code, 0);
  t.match(builtIn.stdout, /kind: ValidatingAdmissionPolicy/);
});

t.test('a configuration error has the same shape in every program', async (t) => {
  const cases: [string, Record<string, string>][] = [
    ['webhook', { WEBHOOK_PORT: 'abc' }],
    ['proxy', { PROXY_PORT: 'abc' }],
    ['agent', { AGENT_PORT: 'abc' }],
  ];
  for (const [name, env] of cases) {
    const r = spawnSync(process.execPath, [BIN, name], { encoding: 'utf8', timeout: 30_000, env: { PATH: process.env.PATH ?? '', ...env } });
    t.equal(r.status, 1, `${name} exits 1`);
    t.match(r.stderr, new RegExp(`^workspace-sandbox ${name}: WS_ERR_CONFIG_INVALID: `), `${name}: ${r.stderr.split('\n')[0]}`);
  }
});
