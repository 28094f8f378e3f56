// Builds a minimal workspace image for the Docker backend without a registry or a Dockerfile
// build: a root filesystem made on this machine (static busybox for a shell and tools, the agent's
// single executable and the glibc libraries it links) `docker import`ed with its entrypoint and
// user. Tests, the benchmark and the README's Docker quick start use it; production workspaces
// use an image built from examples/workspace-base.
//
//   npm run build:agent && node scripts/build-workspace-image.ts [--tag workspace-sandbox/workspace:dev]
//
// DOCKER_HOST selects the engine (default: /var/run/docker.sock).
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Docker from 'dockerode';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const DEFAULT_AGENT_BINARY = join(ROOT, 'dist', 'workspace-agent');
export const DEFAULT_WORKSPACE_IMAGE = 'workspace-sandbox/workspace:dev';
const BUSYBOX = '/bin/busybox';
const AGENT_IN_IMAGE = '/usr/local/bin/workspace-agent';
/** The unprivileged user commands and the agent run as (the Pod's runAsUser in Kubernetes). */
export const WORKSPACE_UID = 1000;

/** The shared libraries a dynamically linked binary loads, as ldd resolves them on this machine. */
function sharedLibraries(binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  return [...out.matchAll(/(\/\S+) \(0x[0-9a-f]+\)/g)].map((m) => m[1]!);
}

function makeRootfs(dir: string, agentBinary: string): void {
  for (const d of ['bin', 'etc', 'tmp', 'workspace', 'usr/local/bin', 'var/run/workspace-sandbox']) mkdirSync(join(dir, d), { recursive: true });
  copyFileSync(BUSYBOX, join(dir, 'bin/busybox'));
  chmodSync(join(dir, 'bin/busybox'), 0o755);
  const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox');
  for (const applet of applets) symlinkSync('busybox', join(dir, 'bin', applet));
  copyFileSync(agentBinary, join(dir, AGENT_IN_IMAGE));
  chmodSync(join(dir, AGENT_IN_IMAGE), 0o755);
  for (const lib of sharedLibraries(agentBinary)) {
    mkdirSync(join(dir, dirname(lib)), { recursive: true });
    copyFileSync(lib, join(dir, lib));
  }
  writeFileSync(join(dir, 'etc/passwd'), `root:x:0:0:root:/root:/bin/sh\nworkspace:x:${WORKSPACE_UID}:${WORKSPACE_UID}::/workspace:/bin/sh\n`);
  writeFileSync(join(dir, 'etc/group'), `root:x:0:\nworkspace:x:${WORKSPACE_UID}:\n`);
  chmodSync(join(dir, 'tmp'), 0o1777);
  chownSync(join(dir, 'workspace'), WORKSPACE_UID, WORKSPACE_UID);
}

export interface BuildImageOptions {
  tag?: string;
  agentBinary?: string;
}

/** Builds and imports the image; resolves with its tag. */
export async function buildWorkspaceImage(docker: Docker, options: BuildImageOptions = {}): Promise<string> {
  const tag = options.tag ?? DEFAULT_WORKSPACE_IMAGE;
  const agentBinary = options.agentBinary ?? DEFAULT_AGENT_BINARY;
  if (!existsSync(agentBinary)) throw new Error(`${agentBinary} is missing: run npm run build:agent first`);
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} is missing: apt-get install busybox-static`);
  const dir = mkdtempSync(join(tmpdir(), 'ws-image-'));
  try {
    const rootfs = join(dir, 'rootfs');
    makeRootfs(rootfs, agentBinary);
    const tar = spawn('tar', ['-C', rootfs, '--numeric-owner', '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [repo, version] = tag.split(/:(?=[^:/]+$)/);
    const stream = await docker.importImage(tar.stdout, {
      repo,
      tag: version ?? 'latest',
      changes: [
        `ENTRYPOINT ["${AGENT_IN_IMAGE}"]`,
        `USER ${WORKSPACE_UID}:${WORKSPACE_UID}`,
        'WORKDIR /workspace',
        'ENV PATH=/bin:/usr/local/bin',
      ],
    });
    await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve())));
    return tag;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const i = process.argv.indexOf('--tag');
  const tag = i > 0 ? process.argv[i + 1] : undefined;
  buildWorkspaceImage(new Docker(), { ...(tag ? { tag } : {}) }).then(
    (t) => process.stdout.write(`imported ${t} (${basename(DEFAULT_AGENT_BINARY)} + busybox)\n`),
    (err: unknown) => {
      process.stderr.write(`build-workspace-image: ${(err as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
