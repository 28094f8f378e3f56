// Static checks of Dockerfile.webhook, Dockerfile.proxy and .dockerignore (no Docker engine here):
// the generic rules (pinned FROM, numeric non-root USER, no ADD <url>, no secrets in ENV/ARG,
// exec-form CMD/ENTRYPOINT) and what these images promise (ports, labels, the Node the tests run
// on, every compiled source in the build context).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pkg from '../../package.json' with { type: 'json' };
import { PORTS } from '../../lib/constants.ts';
import { copyArgs, dockerignoreMatcher, execForm, labels, lintDockerfile, parseDockerfile } from './dockerfile.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (name: string) => readFileSync(`${ROOT}${name}`, 'utf8');

const IMAGES = {
  'Dockerfile.webhook': { command: 'webhook', ports: [PORTS.webhook, PORTS.webhookMetrics] },
  'Dockerfile.proxy': { command: 'proxy', ports: [PORTS.proxy, PORTS.proxyAdmin] },
} as const;

const lockedNode = (JSON.parse(read('package-lock.json')) as { packages: Record<string, { version?: string }> }).packages['node_modules/node']?.version;
const buildIncludes = (JSON.parse(read('tsconfig.build.json')) as { include: string[] }).include;

for (const [file, spec] of Object.entries(IMAGES)) {
  t.test(`${file}: generic rules`, async (t) => {
    t.same(lintDockerfile(read(file)), [], 'no problems');
  });

  t.test(`${file}: what the image promises`, async (t) => {
    const df = parseDockerfile(read(file));
    const [build, deps, runtime] = [df.stages[0]!, df.stages[1]!, df.stages.at(-1)!];
    t.equal(df.stages.length, 3, 'build, deps, runtime');

    t.equal(df.globalArgs.NODE_VERSION, lockedNode, 'the runtime Node is the one package-lock.json pins (the tests run on it)');
    for (const stage of df.stages) t.equal(stage.image, `node:${lockedNode}-bookworm-slim`);
    t.equal(df.globalArgs.VERSION, pkg.version, 'image version defaults to the package version');

    const l = labels(runtime);
    t.equal(l['org.opencontainers.image.version'], '${VERSION}');
    t.equal(l['org.opencontainers.image.licenses'], pkg.license);
    t.equal(l['org.opencontainers.image.source'], '${SOURCE_URL}');
    t.match(df.globalArgs.SOURCE_URL, /^https:\/\//, 'source URL defaults to a repository URL');
    t.ok(l['org.opencontainers.image.title']);
    for (const arg of ['VERSION', 'SOURCE_URL']) t.ok(runtime.instructions.some((i) => i.keyword === 'ARG' && i.args === arg), `ARG ${arg} re-declared in the final stage`);

    const expose = runtime.instructions.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/)).map(Number);
    t.same(expose.sort(), [...spec.ports].sort(), 'EXPOSE the ports of lib/constants.ts');

    const entry = execForm(runtime.instructions.find((i) => i.keyword === 'ENTRYPOINT')!.args)!;
    const cmd = execForm(runtime.instructions.find((i) => i.keyword === 'CMD')!.args)!;
    t.same(entry, ['node', `/app/${pkg.bin['workspace-sandbox']}`], 'node runs the package bin directly (PID 1, no shell, no npm)');
    t.same(cmd, [spec.command]);

    // The build stage copies every source tsconfig.build.json compiles.
    const copied = build.instructions.filter((i) => i.keyword === 'COPY').flatMap((i) => copyArgs(i.args).sources).map((s) => s.replace(/\/$/, ''));
    for (const inc of buildIncludes) t.ok(copied.includes(inc), `build stage copies ${inc}`);
    for (const f of ['package-lock.json', 'tsconfig.json', 'tsconfig.build.json']) t.ok(copied.includes(f), `build stage copies ${f}`);

    // The steps test/images/dockerfile-build.test.ts mirrors.
    const runs = (stage: typeof build) => stage.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n');
    t.match(runs(build), /npm ci\b/);
    t.match(runs(build), /npm pack --pack-destination/);
    t.match(runs(deps), /tar -xzf \/tmp\/package\.tgz --strip-components=1 -C \/app/);
    t.match(runs(deps), /npm ci --omit=dev --ignore-scripts/);
    t.ok(deps.instructions.some((i) => i.keyword === 'COPY' && copyArgs(i.args).sources.includes('package-lock.json')), 'deps stage gets the lockfile (npm pack leaves it out)');
    t.ok(runtime.instructions.some((i) => i.keyword === 'COPY' && copyArgs(i.args).from === deps.name && copyArgs(i.args).dest === '/app'), 'runtime takes only /app from deps');
    t.notOk(runtime.instructions.some((i) => i.keyword === 'COPY' && copyArgs(i.args).from === build.name), 'nothing from the build stage (dev dependencies) reaches the runtime');
    t.ok(runtime.instructions.some((i) => i.keyword === 'ENV' && /NODE_ENV=production/.test(i.args)));
  });
}

t.test('the two images differ only where they must', async (t) => {
  const strip = (text: string) => text.split('\n').filter((l) => !/^(#|LABEL|\s+org\.opencontainers|USER|EXPOSE|CMD)/.test(l)).join('\n');
  t.equal(strip(read('Dockerfile.proxy')), strip(read('Dockerfile.webhook')), 'same build, deps and runtime steps');
});

t.test('.dockerignore keeps dependencies, VCS, tests and secrets out, and lets the sources in', async (t) => {
  const ignored = dockerignoreMatcher(read('.dockerignore'));
  for (const path of ['node_modules/express/index.js', 'lib/node_modules/x', '.git/config', 'test/lib/log.test.ts', 'dist/bin/workspace-sandbox.js',
    '.env', 'credential-proxy/.env.local', 'tls.key', 'certs/ca.pem', 'secrets/x.crt', '.npmrc', 'debug.log', 'workspace-sandbox-0.1.0.tgz']) {
    t.ok(ignored(path), `ignored: ${path}`);
  }
  for (const file of Object.keys(IMAGES)) {
    const df = parseDockerfile(read(file));
    for (const ins of df.stages.flatMap((s) => s.instructions).filter((i) => i.keyword === 'COPY' && !copyArgs(i.args).from)) {
      for (const src of copyArgs(ins.args).sources) t.notOk(ignored(src), `${file} COPY ${src} is in the context`);
    }
  }
  t.notOk(ignored('lib/server.ts'));
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
