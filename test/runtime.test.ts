import t from 'tap';
import { readFileSync } from 'node:fs';
import pkg from '../package.json' with { type: 'json' };

t.test('tests run on Node.js 24 or newer (the devDependency node@24), as production does', async (t) => {
  const major = Number(process.versions.node.split('.')[0]);
  t.ok(major >= 24, `running on ${process.version}`);
  t.equal(pkg.engines.node, '>=24');
  t.equal(readFileSync(new URL('../.nvmrc', import.meta.url), 'utf8').trim(), '24');
  t.match(pkg.devDependencies.node, /^\^?24\./);
  t.equal(pkg.type, 'module');
});
