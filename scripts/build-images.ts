// `npm run build:images`: the images the manifests and the injection config reference, built with
// `docker build` against the engine DOCKER_HOST names (default: /var/run/docker.sock):
//
//   workspace-sandbox/credential-proxy:<version>   Dockerfile.proxy    `workspace-sandbox proxy` (default),
//                                                                      `gateway` (the egress gateway's Deployment)
//   workspace-sandbox/webhook:<version>            Dockerfile.webhook  `workspace-sandbox webhook`
//
// Steps: (1) scripts/bundle.ts writes each program's bundle and SBOM under dist/bundle/ (from this
// checkout's node_modules: `npm ci` first, so the lockfile decides what is bundled); (2) the runtime
// base is made here, with no registry: a root filesystem holding only the Node 24 binary of the
// `node` devDependency (the Node the tests run on), the glibc libraries it links as this machine
// resolves them, /etc/passwd and /etc/group with the images' numeric users and a /tmp, `docker
// import`ed as workspace-sandbox/node-runtime:<node version> — no shell, no npm, no package manager;
// (3) `docker build` of each Dockerfile, its ARG BASE pinned to that base's image ID (a digest).
// The build context is dist/bundle only (.dockerignore): nothing else reaches the engine.
//
//   npm run build:images [-- [--tag dev] [proxy webhook]]     (--tag: also <repository>:dev, as the
//                                                              local overlay references them)
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VERSION } from '../lib/version.ts';
import { bundleProgram, DEFAULT_BUNDLE_DIR, PROGRAMS, type Program } from './bundle.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Each program's image: name and tag, Dockerfile, the numeric user it runs as. */
export const IMAGES: Record<Program, { name: string; dockerfile: string; uid: number }> = {
  // 1337: the runAsUser the webhook gives the credential-proxy sidecar.
  proxy: { name: `workspace-sandbox/credential-proxy:${VERSION}`, dockerfile: 'Dockerfile.proxy', uid: 1337 },
  webhook: { name: `workspace-sandbox/webhook:${VERSION}`, dockerfile: 'Dockerfile.webhook', uid: 65532 },
};

/** The Node version package-lock.json pins for the `node` devDependency (the tests run on it). */
export function lockedNodeVersion(): string {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  const v = lock.packages['node_modules/node']?.version;
  if (!v) throw new Error('package-lock.json pins no node devDependency');
  return v;
}

export const RUNTIME_BASE_REPO = 'workspace-sandbox/node-runtime';

/** The shared libraries a dynamically linked binary loads, as ldd resolves them on this machine. */
function sharedLibraries(binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  return [...out.matchAll(/(\/\S+) \(0x[0-9a-f]+\)/g)].map((m) => m[1]!);
}

function docker(args: string[], input?: Buffer): string {
  // DOCKER_BUILDKIT=0: the engine's own builder. BuildKit would fetch its Dockerfile frontend and
  // there is no registry to fetch it from; nothing here needs BuildKit (no RUN, no secrets).
  const r = spawnSync('docker', args, { input, encoding: 'utf8', maxBuffer: 64 * 2 ** 20, env: { ...process.env, DOCKER_BUILDKIT: '0' } });
  if (r.error || r.status !== 0) throw new Error(`docker ${args.join(' ')} failed: ${r.error?.message ?? r.stderr}`);
  return r.stdout.trim();
}

/** What the runtime base is made of: this Node binary, the libraries it links, the users. */
function runtimeInputs(): { libs: string[]; passwd: string; group: string; digest: string } {
  const libs = sharedLibraries(process.execPath);
  const users = Object.values(IMAGES).map((i) => i.uid).filter((u, i, all) => all.indexOf(u) === i);
  const passwd = ['root:x:0:0:root:/:/sbin/nologin', ...users.map((u) => `app${u}:x:${u}:${u}::/tmp:/sbin/nologin`), ''].join('\n');
  const group = ['root:x:0:', ...users.map((u) => `app${u}:x:${u}:`), ''].join('\n');
  const hash = createHash('sha256').update(readFileSync(process.execPath));
  for (const lib of libs) hash.update(lib).update(readFileSync(lib));
  return { libs, passwd, group, digest: hash.update(passwd).update(group).update(STRIP.join(' ')).digest('hex') };
}

/** Stripping the symbol table saves 18 MB; a plain node (unlike the agent's single executable) runs the same without it. */
const STRIP = ['strip', '--strip-all'];
const INPUTS_LABEL = 'io.workspace-sandbox.runtime-inputs';

/**
 * The runtime base (Node 24 + glibc, nothing else): its image ID. Made when the engine holds no
 * base of the same inputs (labelled with their digest), so a changed Node or glibc is never missed.
 */
export function buildRuntimeBase(): { tag: string; id: string } {
  const nodeVersion = lockedNodeVersion();
  if (process.versions.node !== nodeVersion) {
    throw new Error(`this is Node ${process.versions.node}, package-lock.json pins ${nodeVersion}: run through npm (npm run build:images) after npm ci`);
  }
  const tag = `${RUNTIME_BASE_REPO}:${nodeVersion}`;
  const inputs = runtimeInputs();
  const existing = spawnSync('docker', ['image', 'inspect', '--format', `{{.Id}} {{index .Config.Labels "${INPUTS_LABEL}"}}`, tag], { encoding: 'utf8' });
  const [id, label] = existing.stdout.trim().split(' ');
  if (existing.status === 0 && id && label === inputs.digest) return { tag, id };
  const dir = mkdtempSync(join(tmpdir(), 'ws-node-runtime-'));
  try {
    const rootfs = join(dir, 'rootfs');
    for (const d of ['usr/local/bin', 'etc', 'tmp', 'app']) mkdirSync(join(rootfs, d), { recursive: true });
    execFileSync(STRIP[0]!, [...STRIP.slice(1), '-o', join(rootfs, 'usr/local/bin/node'), process.execPath]);
    chmodSync(join(rootfs, 'usr/local/bin/node'), 0o755);
    for (const lib of inputs.libs) {
      mkdirSync(join(rootfs, dirname(lib)), { recursive: true });
      copyFileSync(lib, join(rootfs, lib));
    }
    writeFileSync(join(rootfs, 'etc/passwd'), inputs.passwd);
    writeFileSync(join(rootfs, 'etc/group'), inputs.group);
    chmodSync(join(rootfs, 'tmp'), 0o1777);
    const tar = execFileSync('tar', ['-C', rootfs, '--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@0', '-cf', '-', '.'], { maxBuffer: 1024 * 2 ** 20 });
    docker(['import', '--change', 'ENV PATH=/usr/local/bin', '--change', 'WORKDIR /app', '--change', `LABEL ${INPUTS_LABEL}=${inputs.digest}`, '-', tag], tar);
    return { tag, id: docker(['image', 'inspect', '--format', '{{.Id}}', tag]) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Bundles, makes the base, builds each program's image; resolves with the names built. `extraTag`
 * also tags each image `<repository>:<extraTag>` (the local overlay's `dev`).
 */
export async function buildImages(programs: Program[] = Object.keys(IMAGES) as Program[], extraTag?: string): Promise<string[]> {
  for (const p of programs) await bundleProgram(p, join(DEFAULT_BUNDLE_DIR, p));
  const base = buildRuntimeBase();
  const built: string[] = [];
  for (const p of programs) {
    const image = IMAGES[p];
    const extra = extraTag === undefined ? [] : [image.name.replace(/:[^:/]+$/, `:${extraTag}`)];
    docker(['build', '--quiet', '-f', join(ROOT, image.dockerfile), '--build-arg', `BASE=${base.id}`, '--build-arg', `VERSION=${VERSION}`,
      ...[image.name, ...extra].flatMap((n) => ['-t', n]), ROOT]);
    built.push(image.name, ...extra);
  }
  return built;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const tagAt = args.indexOf('--tag');
  const extraTag = tagAt >= 0 ? args[tagAt + 1] : undefined;
  if (tagAt >= 0 && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(extraTag ?? '')) {
    process.stderr.write('build-images: --tag needs a Docker tag (letters, digits, "_", ".", "-")\n');
    process.exit(2);
  }
  const named = tagAt >= 0 ? args.filter((_, i) => i !== tagAt && i !== tagAt + 1) : args;
  const unknown = named.filter((a) => !Object.hasOwn(PROGRAMS, a));
  if (unknown.length) {
    process.stderr.write(`build-images: unknown program ${unknown.join(', ')} (one of ${Object.keys(PROGRAMS).join(', ')})\n`);
    process.exit(2);
  }
  for (const name of await buildImages(named.length ? named as Program[] : undefined, extraTag)) {
    process.stdout.write(`${name} ${(Number(docker(['image', 'inspect', '--format', '{{.Size}}', name])) / 1e6).toFixed(0)} MB\n`);
  }
}
