// Static checks of the program images' Dockerfiles and .dockerignore (test/images/images.test.ts
// builds and runs them on a real engine): the generic rules (pinned FROM, numeric non-root USER, no
// ADD <url>, no secrets in ENV/ARG, exec-form CMD/ENTRYPOINT) and what these images promise (the
// runtime base of scripts/build-images.ts with the Node the tests run on, only the program's
// bundle, its ports, labels, user and command).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pkg from '../../package.json' with { type: 'json' };
import { PORTS } from '../../lib/constants.ts';
import { IMAGES, lockedNodeVersion, RUNTIME_BASE_REPO } from '../../scripts/build-images.ts';
import type { Program } from '../../scripts/bundle.ts';
import { copyArgs, dockerignoreMatcher, execForm, labels, lintDockerfile, parseDockerfile } from './dockerfile.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (name: string) => readFileSync(`${ROOT}${name}`, 'utf8');

const PORTS_OF: Record<Program, number[]> = {
  proxy: [PORTS.proxy, PORTS.proxyAdmin, PORTS.gateway, PORTS.gatewayMetrics],
  webhook: [PORTS.webhook, PORTS.webhookMetrics],
};

for (const [program, image] of Object.entries(IMAGES) as [Program, typeof IMAGES[Program]][]) {
  const file = image.dockerfile;
  t.test(`${file}: generic rules`, async (t) => {
    t.same(lintDockerfile(read(file)), [], 'no problems');
  });

  t.test(`${file}: what the image promises`, async (t) => {
    const df = parseDockerfile(read(file));
    t.equal(df.stages.length, 1, 'one stage: nothing is built inside the image');
    const stage = df.stages[0]!;
    t.equal(stage.from, '${BASE}', 'the base is a build ARG (scripts/build-images.ts pins it to the base image ID)');
    t.equal(df.globalArgs.BASE, `${RUNTIME_BASE_REPO}:${lockedNodeVersion()}`, 'by default the base scripts/build-images.ts makes, with the Node package-lock.json pins');
    t.notOk(stage.instructions.some((i) => i.keyword === 'RUN'), 'no RUN: the base has no shell');

    const l = labels(stage);
    t.equal(l['org.opencontainers.image.title'], image.name.replace(/:.*/, ''));
    t.equal(l['org.opencontainers.image.version'], '${VERSION}');
    t.equal(l['org.opencontainers.image.licenses'], pkg.license);
    t.equal(l['org.opencontainers.image.source'], '${SOURCE_URL}');
    t.ok(l['org.opencontainers.image.description']);
    const arg = (name: string) => stage.instructions.find((i) => i.keyword === 'ARG' && i.args.startsWith(`${name}=`))?.args.split('=')[1];
    t.equal(arg('VERSION'), pkg.version, 'image version defaults to the package version');
    t.match(arg('SOURCE_URL'), /^https:\/\//, 'source URL defaults to a repository URL');

    const copies = stage.instructions.filter((i) => i.keyword === 'COPY').map((i) => copyArgs(i.args));
    t.same(copies, [{ from: undefined, sources: [`dist/bundle/${program}/`], dest: '/app/' }], 'only this program\'s bundle (entry, chunks, SBOM)');

    const user = stage.instructions.filter((i) => i.keyword === 'USER').at(-1)?.args;
    t.equal(user, `${image.uid}:${image.uid}`);
    const expose = stage.instructions.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/)).map(Number);
    t.same(expose.sort(), [...PORTS_OF[program]].sort(), 'EXPOSE the ports of lib/constants.ts');

    const entry = execForm(stage.instructions.find((i) => i.keyword === 'ENTRYPOINT')!.args);
    const cmd = execForm(stage.instructions.find((i) => i.keyword === 'CMD')!.args);
    t.same(entry, ['/usr/local/bin/node', '/app/workspace-sandbox.mjs'], 'node runs the bundle directly (PID 1, no shell, no npm)');
    t.same(cmd, [program]);
    t.ok(stage.instructions.some((i) => i.keyword === 'ENV' && /NODE_ENV=production/.test(i.args)));
  });
}

t.test('the images differ only where they must', async (t) => {
  const strip = (text: string) => text.split('\n')
    .filter((l) => !/^(#|LABEL|\s+org\.opencontainers|USER|EXPOSE|CMD)/.test(l))
    .map((l) => l.replace(/dist\/bundle\/[a-z]+\//, 'dist/bundle/<program>/')).join('\n');
  const [first, ...rest] = Object.values(IMAGES).map((i) => i.dockerfile);
  for (const file of rest) t.equal(strip(read(file)), strip(read(first!)), `${file}: same steps as ${first}`);
});

t.test('.dockerignore lets only the bundles into the build context', async (t) => {
  const ignored = dockerignoreMatcher(read('.dockerignore'));
  for (const path of ['node_modules/zod/index.js', 'lib/server.ts', 'package.json', '.git/config', 'test/lib/log.test.ts',
    'dist/bin/workspace-sandbox.js', 'dist/workspace-agent', 'Dockerfile.proxy', '.env', 'credential-proxy/.env.local', 'tls.key', '.npmrc', 'workspace-sandbox-0.1.0.tgz']) {
    t.ok(ignored(path), `ignored: ${path}`);
  }
  for (const path of ['dist/bundle/proxy/workspace-sandbox.mjs', 'dist/bundle/proxy/chunks/chunk-ABC.mjs', 'dist/bundle/webhook/sbom.json']) {
    t.notOk(ignored(path), `in the context: ${path}`);
  }
});

t.test('the linter catches each rule it enforces (the check can fail)', async (t) => {
  const bad = [
    'ARG BASE',
    'FROM node:latest AS a',
    'FROM node AS b',
    'FROM node:24 AS c',
    'FROM ${BASE}',
    'ADD https://example.com/tool.tgz /tmp/',
    'ARG GITHUB_TOKEN',
    'ENV API_KEY=abc OTHER=1',
    'ENV AWS=AKIAABCDEFGHIJKLMNOP',
    'ENTRYPOINT node server.js',
    'CMD npm start',
  ].join('\n');
  const problems = lintDockerfile(bad).join('\n');
  for (const expected of [/node:latest: tag latest/, /FROM node: no tag/, /node:24: tag 24 is not an exact version/, /ARG BASE has no default/,
    /ADD of a URL/, /ARG GITHUB_TOKEN looks like a secret/, /ENV API_KEY looks like a secret/, /ENV AWS looks like a secret/,
    /ENTRYPOINT is not in exec form/, /CMD is not in exec form/, /no USER/]) {
    t.match(problems, expected);
  }
  t.match(lintDockerfile('FROM node:24.1.0-slim\nUSER node\nCMD ["x"]').join('\n'), /not numeric/);
  t.match(lintDockerfile('FROM node:24.1.0-slim\nUSER 0:0\nCMD ["x"]').join('\n'), /is root/);
  t.match(lintDockerfile('FROM node:24.1.0-slim\nUSER 1000:0\nCMD ["x"]').join('\n'), /is root/);
  t.same(lintDockerfile(`FROM node@sha256:${'a'.repeat(64)} AS a\nFROM a\nUSER 1000:1000\nCMD ["x"]`), [], 'digest pins and stage references are fine');
});
