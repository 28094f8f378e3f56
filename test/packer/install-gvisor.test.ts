// packer/scripts/install-gvisor.sh against a local release bucket: a fake gVisor release served
// over HTTP on port 0, with good and bad checksum files. The script must install only what it
// verified, and abort (non-zero, nothing installed) on any mismatch.
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeServer, listenLocal } from '../helpers/listen.ts';
import type { TeardownHost } from '../helpers/redis.ts';

const SCRIPT = fileURLToPath(new URL('../../packer/scripts/install-gvisor.sh', import.meta.url));
const RELEASE = '20250707.0';

const sha512 = (data: string | Buffer) => createHash('sha512').update(data).digest('hex');

function fakeRunsc(release: string): string {
  return `#!/bin/sh\necho "runsc version release-${release}"\necho "spec: 1.1.0"\n`;
}
const FAKE_SHIM = '#!/bin/sh\nexit 0\n';

interface Bucket {
  server: Server;
  baseUrl: string;
  /** Paths requested, in order. */
  requests: string[];
  /** The pins a reviewer would have recorded: the published digests (or, where one is malformed, the binary's). */
  pins: { GVISOR_RUNSC_SHA512: string; GVISOR_SHIM_SHA512: string };
}

function pinOf(files: Record<string, string>, name: string): string {
  const path = Object.keys(files).find((p) => p.endsWith(`/${name}`))!;
  const published = (files[`${path}.sha512`] ?? '').split(' ')[0]!;
  return /^[0-9a-f]{128}$/.test(published) ? published : sha512(files[path]!);
}

/** Serves `files` (path under /release → body) and 404 for everything else. */
async function startBucket(t: TeardownHost, files: Record<string, string>): Promise<Bucket> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    const path = req.url ?? '';
    requests.push(path);
    const body = files[path];
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body);
  });
  const { url } = await listenLocal(server);
  t.teardown(() => closeServer(server));
  const pins = { GVISOR_RUNSC_SHA512: pinOf(files, 'runsc'), GVISOR_SHIM_SHA512: pinOf(files, 'containerd-shim-runsc-v1') };
  return { server, baseUrl: `${url}/release`, requests, pins };
}

function release(arch: string, opts: { runsc?: string; shim?: string; runscSum?: string; shimSum?: string } = {}): Record<string, string> {
  const runsc = opts.runsc ?? fakeRunsc(RELEASE);
  const shim = opts.shim ?? FAKE_SHIM;
  const dir = `/release/${RELEASE}/${arch}`;
  return {
    [`${dir}/runsc`]: runsc,
    [`${dir}/runsc.sha512`]: `${opts.runscSum ?? sha512(runsc)}  runsc\n`,
    [`${dir}/containerd-shim-runsc-v1`]: shim,
    [`${dir}/containerd-shim-runsc-v1.sha512`]: `${opts.shimSum ?? sha512(shim)}  containerd-shim-runsc-v1\n`,
  };
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Asynchronous on purpose: the bucket is served by this process's event loop. */
function runScript(env: Record<string, string>): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile('bash', [SCRIPT], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function tempPrefix(t: TeardownHost): string {
  const dir = mkdtempSync(join(tmpdir(), 'ws-gvisor-prefix-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function installed(prefix: string): string[] {
  const bin = join(prefix, 'bin');
  return existsSync(bin) ? readdirSync(bin).sort() : [];
}

t.test('a release with good checksums is downloaded for the mapped architecture, verified and installed', async (t) => {
  const files = release('aarch64');
  const bucket = await startBucket(t, files);
  const prefix = tempPrefix(t);
  // arm64 is the packer/EKS spelling; gVisor's bucket calls it aarch64.
  const r = await runScript({ GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'arm64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix });
  t.equal(r.code, 0, r.stderr);
  t.same(installed(prefix), ['containerd-shim-runsc-v1', 'runsc']);
  for (const name of ['runsc', 'containerd-shim-runsc-v1']) {
    const path = join(prefix, 'bin', name);
    t.equal(readFileSync(path, 'utf8'), files[`/release/${RELEASE}/aarch64/${name}`], `${name} installed byte for byte`);
    t.equal(statSync(path).mode & 0o777, 0o755, `${name} is 0755`);
  }
  t.same(bucket.requests.sort(), Object.keys(files).sort(), 'fetched exactly the pinned release files');
  t.match(r.stderr, /runsc: SHA-512 verified/);
  t.match(r.stderr, /containerd-shim-runsc-v1: SHA-512 verified/);
  t.match(r.stderr, /runsc version release-20250707\.0/, 'smoke test output shown');
});

t.test('matching SHA-512 pins are accepted', async (t) => {
  const files = release('x86_64');
  const bucket = await startBucket(t, files);
  const prefix = tempPrefix(t);
  const r = await runScript({
    GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix,
    GVISOR_RUNSC_SHA512: sha512(fakeRunsc(RELEASE)).toUpperCase(), GVISOR_SHIM_SHA512: sha512(FAKE_SHIM),
  });
  t.equal(r.code, 0, r.stderr);
  t.same(installed(prefix), ['containerd-shim-runsc-v1', 'runsc']);
});

t.test('a bad checksum aborts the build and installs nothing, not even the binary that verified', async (t) => {
  // runsc verifies; the shim's published digest is for other bytes.
  const bucket = await startBucket(t, release('x86_64', { shimSum: sha512('something else') }));
  const prefix = tempPrefix(t);
  const r = await runScript({ GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix });
  t.not(r.code, 0);
  t.match(r.stderr, /containerd-shim-runsc-v1: SHA-512 mismatch/);
  t.same(installed(prefix), [], 'nothing installed');
});

t.test('a corrupted download (right digest, wrong bytes) aborts', async (t) => {
  const good = fakeRunsc(RELEASE);
  const bucket = await startBucket(t, release('x86_64', { runsc: `${good}# tampered\n`, runscSum: sha512(good) }));
  const prefix = tempPrefix(t);
  const r = await runScript({ GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix });
  t.not(r.code, 0);
  t.match(r.stderr, /runsc: SHA-512 mismatch/);
  t.same(installed(prefix), []);
});

t.test('a checksum file that is not a SHA-512 digest aborts', async (t) => {
  const bucket = await startBucket(t, release('x86_64', { runscSum: '<html>oops</html>' }));
  const prefix = tempPrefix(t);
  const r = await runScript({ GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix });
  t.not(r.code, 0);
  t.match(r.stderr, /does not hold a SHA-512 digest/);
  t.same(installed(prefix), []);
});

t.test('a pin that differs from the published checksum aborts', async (t) => {
  const bucket = await startBucket(t, release('x86_64'));
  const prefix = tempPrefix(t);
  const r = await runScript({
    GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix,
    GVISOR_RUNSC_SHA512: sha512('the reviewed runsc'),
  });
  t.not(r.code, 0);
  t.match(r.stderr, /differs from the pinned/);
  t.same(installed(prefix), []);
});

t.test('a missing checksum file (HTTP 404) aborts', async (t) => {
  const files = release('x86_64');
  delete files[`/release/${RELEASE}/x86_64/runsc.sha512`];
  const bucket = await startBucket(t, files);
  const prefix = tempPrefix(t);
  const r = await runScript({ GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix });
  t.not(r.code, 0);
  t.match(r.stderr, /download of .*runsc\.sha512 failed/);
  t.same(installed(prefix), []);
});

t.test('a runsc that reports another release fails the smoke test', async (t) => {
  const bucket = await startBucket(t, release('x86_64', { runsc: fakeRunsc('20240101.0') }));
  const prefix = tempPrefix(t);
  const r = await runScript({ GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix });
  t.not(r.code, 0);
  t.match(r.stderr, /reports a version other than 20250707\.0/);
});

t.test('unpinned or malformed releases, unknown architectures and empty or malformed SHA-512 pins are refused before any download', async (t) => {
  const bucket = await startBucket(t, release('x86_64'));
  const prefix = tempPrefix(t);
  for (const [env, why] of [
    [{ GVISOR_RELEASE: 'latest' }, /not a dated release/],
    [{ GVISOR_RELEASE: '../../evil' }, /not a dated release/],
    [{}, /GVISOR_RELEASE is not set/],
    [{ GVISOR_RELEASE: RELEASE, GVISOR_ARCH: 'riscv64' }, /unsupported architecture/],
    // A build without the reviewed digests fails (Packer passes an unset variable as "").
    [{ GVISOR_RELEASE: RELEASE, GVISOR_RUNSC_SHA512: '' }, /GVISOR_RUNSC_SHA512 is not set/],
    [{ GVISOR_RELEASE: RELEASE, GVISOR_SHIM_SHA512: '' }, /GVISOR_SHIM_SHA512 is not set/],
    [{ GVISOR_RELEASE: RELEASE, GVISOR_RUNSC_SHA512: 'abc123' }, /GVISOR_RUNSC_SHA512 is not a SHA-512/],
    [{ GVISOR_RELEASE: RELEASE, GVISOR_SHIM_SHA512: `${'a'.repeat(127)}g` }, /GVISOR_SHIM_SHA512 is not a SHA-512/],
  ] as const) {
    const r = await runScript({ GVISOR_ARCH: 'x86_64', GVISOR_BASE_URL: bucket.baseUrl, ...bucket.pins, INSTALL_PREFIX: prefix, ...env });
    t.not(r.code, 0, JSON.stringify(env));
    t.match(r.stderr, why);
  }
  t.same(bucket.requests, [], 'no request was made');
  t.same(installed(prefix), []);
});
