// examples/workspace-base: the workspace image a user starts from. Static checks (the same linter
// as our own images, plus what the webhook and the agent expect of a workspace container); the
// entrypoint script runs for real in workspace-agent.test.ts.
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PORTS } from '../../lib/constants.ts';
import { copyArgs, execForm, lintDockerfile, parseDockerfile } from './dockerfile.ts';

const DIR = fileURLToPath(new URL('../../examples/workspace-base/', import.meta.url));
const text = readFileSync(join(DIR, 'Dockerfile'), 'utf8');

t.test('the example Dockerfile meets the image rules', async (t) => {
  t.same(lintDockerfile(text), []);
});

t.test('the agent goes in as one file and is the ENTRYPOINT', async (t) => {
  const stage = parseDockerfile(text).stages.at(-1)!;
  const copies = stage.instructions.filter((i) => i.keyword === 'COPY').map((i) => copyArgs(i.args));
  t.ok(copies.some((c) => c.sources.length === 1 && c.sources[0] === 'workspace-agent' && c.dest === '/usr/local/bin/'), 'COPY workspace-agent /usr/local/bin/');
  t.same(execForm(stage.instructions.find((i) => i.keyword === 'ENTRYPOINT')!.args), ['/usr/local/bin/workspace-agent']);
  t.equal(stage.instructions.filter((i) => i.keyword === 'USER').at(-1)!.args, '1000:1000', 'the uid/gid the webhook sets for workspaces');
  t.same(stage.instructions.filter((i) => i.keyword === 'EXPOSE').map((i) => Number(i.args)), [PORTS.agent]);
  t.notOk(stage.instructions.some((i) => i.keyword === 'RUN' && /\bnode(js)?\b|\bnpm\b/.test(i.args)), 'no Node.js installed');
});

t.test('no socat is installed or started (comments aside)', async (t) => {
  const code = (file: string) => readFileSync(join(DIR, file), 'utf8').split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');
  const walk = (dir: string): string[] => readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? walk(join(dir, f)) : [join(dir, f)]));
  const scripts = walk(DIR).map((f) => f.slice(DIR.length)).filter((f) => f === 'Dockerfile' || f.endsWith('.sh'));
  t.same(scripts.sort(), ['Dockerfile', 'entrypoint.sh']);
  for (const file of scripts) t.notMatch(code(file), /socat/i, file);
  t.ok(statSync(join(DIR, 'entrypoint.sh')).mode & 0o111, 'entrypoint.sh is executable');
});
