// Output written one byte at a time used to be stored as one chunk per write, so
// the output cap limited the bytes kept but not the memory (1 MiB cap: +45-70 MiB of RSS for 4 M
// writes; 64 MiB cap: OOM-killed in a 2 GiB container). The agent's peak RSS is read from
// /proc/<pid>/status (VmHWM) around a command that writes millions of single bytes.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { loadAgentConfig } from '../../agent/config.ts';
import type { ConfigError } from '../../lib/config.ts';
import { begin, call, freePort, spawnAgent, startAgent, tempDir, waitFor, waitHealthy } from './harness.ts';

const MiB = 1024 * 1024;
const WRITES = 4_000_000;

function peakRssMiB(pid: number): number {
  const kib = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!;
  return Number(kib) / 1024;
}

t.test('1-byte writes: the agent\'s memory stays within a small multiple of the output cap', async (t) => {
  const port = await freePort();
  const proc = spawnAgent({ AGENT_HOST: '127.0.0.1', AGENT_PORT: String(port), AGENT_WORKSPACE_ROOT: tempDir(), LOG_LEVEL: 'warn' });
  t.teardown(() => { proc.child.kill('SIGKILL'); });
  await waitHealthy({ port }, proc);
  // Warm the paths a command takes, so their one-time allocations are not counted as growth.
  await call({ port }, '/execute', { body: { cmd: ['perl', '-e', 'syswrite(STDOUT, "x") for 1..100000'] } });
  const before = peakRssMiB(proc.child.pid!);
  const r = await call({ port }, '/execute', { body: { cmd: ['perl', '-e', `syswrite(STDOUT, "x") for 1..${WRITES}`], timeoutMs: 300_000 } });
  const b = r.json<{ stdoutBytes: number; stdoutTruncatedBytes: number; stdout: string }>();
  t.equal(b.stdoutBytes, WRITES, 'every byte counted');
  t.equal(b.stdout.length, MiB, 'the default cap of 1 MiB kept (head + tail)');
  t.equal(b.stdoutTruncatedBytes, WRITES - MiB);
  const growth = peakRssMiB(proc.child.pid!) - before;
  t.comment(`peak RSS grew ${growth.toFixed(1)} MiB for ${WRITES} one-byte writes under a 1 MiB cap`);
  // Kept output (1 MiB), its JSON answer and the pipe reads' garbage: a few MiB to ~20 MiB
  // depending on when the collector runs. One chunk per write grew it by 45-70 MiB.
  t.ok(growth < 25, `peak RSS growth ${growth.toFixed(1)} MiB < 25 MiB`);
});

t.test('the output caps follow the container\'s memory limit; settings that break the chain are refused, all at once', async (t) => {
  const root = tempDir();
  const c = loadAgentConfig({ AGENT_WORKSPACE_ROOT: root, AGENT_MEMORY_LIMIT_BYTES: String(256 * MiB) });
  t.same([c.outputMemoryBytes, c.maxOutputBytesLimit, c.defaultMaxOutputBytes], [64 * MiB, 32 * MiB, MiB], 'a quarter of 256 MiB for output; one command at the cap fits');
  const big = loadAgentConfig({ AGENT_WORKSPACE_ROOT: root, AGENT_MEMORY_LIMIT_BYTES: String(2048 * MiB) });
  t.same([big.outputMemoryBytes, big.maxOutputBytesLimit], [512 * MiB, 64 * MiB]);
  let fields: string[] = [];
  try {
    loadAgentConfig({ AGENT_WORKSPACE_ROOT: root, AGENT_MEMORY_LIMIT_BYTES: String(2048 * MiB), AGENT_OUTPUT_MEMORY_BYTES: String(1536 * MiB), AGENT_MAX_OUTPUT_BYTES_LIMIT: String(1024 * MiB), AGENT_MAX_OUTPUT_BYTES: String(2048 * MiB), AGENT_PORT: 'x' });
  } catch (err) {
    fields = (err as ConfigError).problems.map((p) => p.field);
  }
  t.same(fields.sort(), ['AGENT_MAX_OUTPUT_BYTES', 'AGENT_MAX_OUTPUT_BYTES_LIMIT', 'AGENT_OUTPUT_MEMORY_BYTES', 'AGENT_PORT'], 'a 1 GiB cap in a 2 GiB container (what once ended in an OOM kill) is refused at start, with everything else wrong');
});

t.test('buffered commands share one output budget: one that does not fit is refused with 429, and fits again later', async (t) => {
  const a = await startAgent({ AGENT_OUTPUT_MEMORY_BYTES: String(4 * MiB), AGENT_MAX_OUTPUT_BYTES_LIMIT: String(2 * MiB) });
  t.teardown(a.close);
  const first = begin(a.target, '/execute', { body: { cmd: ['sleep', '30'], maxOutputBytes: 2 * MiB } });
  t.ok(await waitFor(() => a.agent.running === 1, 5000));
  const refused = await call(a.target, '/execute', { body: { cmd: ['true'], maxOutputBytes: 1 } });
  t.equal(refused.status, 429);
  t.match(refused.json(), { error: { code: 'WS_ERR_TOO_MANY_REQUESTS', message: /output memory/ } });
  const streamed = await call(a.target, '/execute', { body: { cmd: ['true'] }, headers: { accept: 'application/x-ndjson' } });
  t.equal(streamed.status, 200, 'streaming keeps nothing, so it is not counted');
  first.destroy();
  t.ok(await waitFor(() => a.agent.running === 0, 10_000));
  t.equal((await call(a.target, '/execute', { body: { cmd: ['true'], maxOutputBytes: 2 * MiB } })).status, 200, 'the reservation was released');
});
