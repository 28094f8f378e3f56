// `npm run bench`: every benchmark, one after the other (they must not compete for the two
// cores), each rewriting its own section of test/bench/README.md; this script writes the run's
// header. Peers (squid, tinyproxy, mitmproxy, socat) are used where installed and noted when absent.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { machineLine, writeSection } from '../test/bench/results.ts';

const BENCHES = [
  { name: 'webhook', file: 'test/bench/webhook.ts', peers: [] },
  { name: 'agent', file: 'test/bench/agent.ts', peers: ['socat'] },
  { name: 'proxy', file: 'test/bench/proxy.ts', peers: ['squid', 'tinyproxy'] },
  { name: 'gateway', file: 'test/bench/gateway.ts', peers: ['squid'] },
  { name: 'intercept', file: 'test/bench/intercept.ts', peers: ['mitmdump'] },
  { name: 'sdk', file: 'test/bench/sdk.ts', peers: [] },
  { name: 'programs', file: 'test/bench/programs.ts', peers: [] },
] as const;

const root = fileURLToPath(new URL('../', import.meta.url));
const only = new Set(process.argv.slice(2));
const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;

const rows: string[] = [];
let failed = 0;
for (const bench of BENCHES) {
  if (only.size > 0 && !only.has(bench.name)) continue;
  const missing = bench.peers.filter((p) => !has(p));
  process.stdout.write(`\n=== ${bench.name} (${bench.file})${missing.length ? ` — peers absent, skipped: ${missing.join(', ')}` : ''}\n`);
  const started = Date.now();
  const r = spawnSync(process.execPath, [bench.file], { cwd: root, stdio: 'inherit' });
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  if (r.status !== 0) failed++;
  rows.push(`| ${bench.name} | \`node ${bench.file}\` | ${r.status === 0 ? 'ok' : `FAILED (exit ${r.status ?? r.signal})`} | ${seconds} s | ${missing.length ? missing.join(', ') : '—'} |`);
}

writeSection('run', [
  '## Last full run',
  '',
  `\`npm run bench\` · ${machineLine()}`,
  '',
  '| benchmark | command | result | time | peers absent |',
  '| --- | --- | --- | --- | --- |',
  ...rows,
].join('\n'));
process.exitCode = failed ? 1 : 0;
