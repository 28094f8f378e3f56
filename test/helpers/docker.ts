// The Docker engine of the SDK's Docker tests: the one DOCKER_HOST names (scripts/docker-daemon.sh
// starts a private one; .ci/run does). No DOCKER_HOST, or an engine that does not answer, skips
// the Docker tests loudly, or fails them when REQUIRE_DOCKER=1 (CI sets it).
// The workspace image is built once per engine from this checkout (the agent's single executable
// and a static busybox, scripts/build-workspace-image.ts), never pulled.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { buildWorkspaceImage, DEFAULT_AGENT_BINARY } from '../../scripts/build-workspace-image.ts';
import { buildAgentSea } from '../../scripts/build-agent-sea.ts';

export const TEST_IMAGE_REPO = 'workspace-sandbox/workspace-test';
const REPO = fileURLToPath(new URL('../../', import.meta.url));

let warned = false;

/** `undefined` with an engine that answers, else the skip reason; throws when REQUIRE_DOCKER=1. */
export async function dockerSkipReason(): Promise<string | undefined> {
  let reason: string | undefined;
  if (!process.env.DOCKER_HOST) reason = 'DOCKER_HOST is not set (scripts/docker-daemon.sh start DIR prints it)';
  else {
    try {
      await new Docker().ping();
    } catch (err) {
      reason = `the Docker engine at ${process.env.DOCKER_HOST} does not answer: ${(err as Error).message}`;
    }
  }
  if (reason === undefined) return undefined;
  if (process.env.REQUIRE_DOCKER === '1') throw new Error(`REQUIRE_DOCKER=1 but ${reason}`);
  if (!warned) {
    warned = true;
    process.stderr.write(`\n${'!'.repeat(72)}\n!! Docker tests SKIPPED: ${reason}\n${'!'.repeat(72)}\n\n`);
  }
  return `Docker tests SKIPPED: ${reason}`;
}

/** The engine's runtimes this machine can test: runc always, runsc when registered. Fails when REQUIRE_RUNSC=1 and runsc is missing. */
export async function dockerRuntimes(docker: Docker): Promise<('runc' | 'runsc')[]> {
  const info = await docker.info() as { Runtimes?: Record<string, unknown> };
  const runsc = info.Runtimes !== undefined && 'runsc' in info.Runtimes;
  if (!runsc) {
    if (process.env.REQUIRE_RUNSC === '1') throw new Error('REQUIRE_RUNSC=1 but the Docker engine has no runsc runtime');
    process.stderr.write('\n!! the Docker engine has no runsc runtime: gVisor workspace tests SKIPPED\n\n');
  }
  return runsc ? ['runc', 'runsc'] : ['runc'];
}

/** Newest modification time of the sources the agent executable is built from. */
function newestSource(): number {
  let newest = 0;
  for (const dir of ['agent', 'lib']) {
    for (const f of readdirSync(join(REPO, dir))) newest = Math.max(newest, statSync(join(REPO, dir, f)).mtimeMs);
  }
  return newest;
}

/**
 * The test image of this checkout: the agent executable is (re)built when missing or older than
 * its sources, and the image is tagged with the executable's digest, so a stale image is never used.
 */
export async function ensureTestImage(docker: Docker): Promise<string> {
  if (!existsSync(DEFAULT_AGENT_BINARY) || statSync(DEFAULT_AGENT_BINARY).mtimeMs < newestSource()) {
    // Test files run in parallel: each builds its own copy and renames it into place (atomic).
    const own = `${DEFAULT_AGENT_BINARY}.${process.pid}`;
    await buildAgentSea(own);
    renameSync(own, DEFAULT_AGENT_BINARY);
  }
  const digest = createHash('sha256').update(readFileSync(DEFAULT_AGENT_BINARY)).digest('hex').slice(0, 12);
  const tag = `${TEST_IMAGE_REPO}:${digest}`;
  const images = await docker.listImages({ filters: { reference: [tag] } });
  if (images.length > 0) return tag;
  return buildWorkspaceImage(docker, { tag });
}

/** Our proxies still running (a leak check): processes whose environment names a workspace of `stateDir`. */
export function proxiesOf(stateDir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, 'utf8');
      if (env.split('\0').some((v) => v.startsWith('PROXY_SOCKET=') && v.includes(stateDir))) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}
