// The first run of a newcomer: npm's entry points and the Node version they run on.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pkg from '../package.json' with { type: 'json' };

const CHECK = fileURLToPath(new URL('../scripts/check-node.cjs', import.meta.url));

t.test('every npm entry point checks the Node version before it loads TypeScript', async (t) => {
  for (const name of ['start', 'demo', 'test', 'bench'] as const) {
    t.match(pkg.scripts[name], /^node scripts\/check-node\.cjs && exec /, `${name}: checks first, then execs (a signal to npm reaches the program)`);
  }
});

t.test('every dependency install script is reviewed, and Node 24\'s is approved', async (t) => {
  t.match(pkg.allowScripts, { node: true }, 'the devDependency that provides Node 24 may run its install script');
  const r = spawnSync('npm', ['install-scripts', 'ls'], { encoding: 'utf8', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /No packages with unreviewed install scripts/, r.stdout);
});

t.test('the check passes on this Node and explains itself on an old one', async (t) => {
  const ok = spawnSync(process.execPath, [CHECK], { encoding: 'utf8' });
  t.equal(ok.status, 0, 'Node 24 passes');
  t.equal(ok.stderr, '');
  // The machine's system Node (Debian's, older than 24) stands in for a user without the devDependency's Node.
  const old = spawnSync('/usr/bin/node', ['--version'], { encoding: 'utf8' });
  const major = Number(/^v(\d+)/.exec(old.stdout ?? '')?.[1]);
  if (old.status !== 0 || !(major < 24)) {
    t.comment('no Node older than 24 at /usr/bin/node: the old-Node half is not checked here');
    return;
  }
  const r = spawnSync('/usr/bin/node', [CHECK], { encoding: 'utf8' });
  t.equal(r.status, 1);
  t.match(r.stderr, /^workspace-sandbox needs Node\.js 24; `node` here is v\d+\.\d+\.\d+\.\nRun `npm ci`/);
  t.notMatch(r.stderr, /\bat .*:\d+:\d+/, 'no stack trace');
});
