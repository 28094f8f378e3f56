// Benchmark of the admission webhook: autocannon against POST /mutate over HTTPS keep-alive with
// a realistic AdmissionReview (3 containers, ~20 env vars, annotations, as the API server
// delivers it), and against a no-op handler in the same server (reads and parses the review,
// answers allowed) as the floor. Two modes: as fast as possible (req/s) and a fixed 500 req/s
// (latency). The server runs in its own process, as in production; autocannon shares the machine.
// Besides req/s, the server's CPU time per request (its own process.cpuUsage() over each run),
// which a machine shared with other work disturbs far less than the rate.
// The webhook's patch is webhook/patch.ts, not fast-json-patch `compare`: the in-process part
// measures both on the same Pod, interleaved, and reports what `compare` would cost.
//
//   node test/bench/webhook.ts            # default run, ~1 minute; rewrites the README section
//   BENCH_SECONDS=20 node test/bench/webhook.ts
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import jsonpatch from 'fast-json-patch';
import { machineLine, table, writeSection } from './results.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const RATE = 500;
const TARGET_RPS = 2000;
const TARGET_P99_MS = 5;

/** A Pod as the API server delivers it: defaults applied, admission plugins run. */
export function realisticPod(): Record<string, unknown> {
  const env = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => ({ name: `${prefix}_${i}`, value: `value-${i}-${'x'.repeat(20)}` }));
  const apiMount = { mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', name: 'kube-api-access-x7k2p', readOnly: true };
  const container = (name: string, image: string, envs: unknown[]) => ({
    name, image, imagePullPolicy: 'IfNotPresent', env: envs, resources: {},
    terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File', volumeMounts: [apiMount],
  });
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: {
      generateName: 'ws-', namespace: 'sandboxes', creationTimestamp: null,
      labels: { 'app.kubernetes.io/name': 'workspace', 'example.com/conversation': 'c-5f2a91', 'example.com/user': 'u-1234' },
      annotations: { 'workspace-sandbox.io/ttl-seconds': '7200', 'example.com/requested-by': 'backend-7d9f', 'example.com/trace~id': 'a/b/c' },
    },
    spec: {
      containers: [
        container('workspace', 'ghcr.io/example/workspace:1.4.2', [...env('WS', 10), { name: 'AWS_REGION', value: 'us-east-1' }, { name: 'AWS_ROLE_ARN', value: 'arn:aws:iam::111122223333:role/ws' }]),
        container('browser', 'ghcr.io/example/chrome:121', env('BROWSER', 5)),
        container('indexer', 'ghcr.io/example/indexer:3', env('IDX', 3)),
      ],
      dnsPolicy: 'ClusterFirst', enableServiceLinks: true, preemptionPolicy: 'PreemptLowerPriority', priority: 0,
      restartPolicy: 'Never', schedulerName: 'default-scheduler', securityContext: {}, serviceAccount: 'default',
      serviceAccountName: 'default', terminationGracePeriodSeconds: 30,
      tolerations: [
        { effect: 'NoExecute', key: 'node.kubernetes.io/not-ready', operator: 'Exists', tolerationSeconds: 300 },
        { effect: 'NoExecute', key: 'node.kubernetes.io/unreachable', operator: 'Exists', tolerationSeconds: 300 },
      ],
      volumes: [{ name: 'kube-api-access-x7k2p', projected: { defaultMode: 420, sources: [
        { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
        { configMap: { items: [{ key: 'ca.crt', path: 'ca.crt' }], name: 'kube-root-ca.crt' } },
        { downwardAPI: { items: [{ fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' }, path: 'namespace' }] } },
      ] } }],
    },
    status: {},
  };
}

function review(): string {
  return JSON.stringify({
    apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview',
    request: {
      uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
      kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' }, requestResource: { group: '', version: 'v1', resource: 'pods' },
      name: '', namespace: 'sandboxes', operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:backend:backend', groups: ['system:serviceaccounts', 'system:authenticated'] },
      object: realisticPod(), oldObject: null, dryRun: false, options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Server side (a child process).

async function serve(): Promise<void> {
  const { createWebhookServer } = await import('../../webhook/server.ts');
  const { loadInjectionConfigFile, envSchema } = await import('../../webhook/config.ts');
  const { parseConfig, pickEnv } = await import('../../lib/config.ts');
  const env = parseConfig(envSchema, pickEnv(envSchema, { WEBHOOK_HOST: '127.0.0.1', WEBHOOK_PORT: '0', METRICS_HOST: '127.0.0.1', METRICS_PORT: '0' }));
  const injection = loadInjectionConfigFile(fileURLToPath(new URL('../../webhook/injection-config.example.yaml', import.meta.url)));
  // Logs go to stdout as in production (the parent points it at /dev/null).
  const server = createWebhookServer({ env, injection, baseline: true });
  const { webhook } = await server.listen();
  process.send!({ port: webhook.port });
  process.on('message', (m) => { if (m === 'cpu') process.send!({ cpu: process.cpuUsage() }); });
  process.on('disconnect', () => void server.shutdown('bench done').then(() => process.exit(0)));
}

// ---------------------------------------------------------------------------------------------
// Client side.

interface Row { route: string; mode: string; rps: number; p50: number; p99: number; errors: number; cpuUs: number }

async function cannon(port: number, path: string, body: string, opts: { rate?: number; seconds: number }): Promise<autocannon.Result> {
  return autocannon({
    url: `https://127.0.0.1:${port}${path}`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    connections: opts.rate ? 10 : CONNECTIONS,
    pipelining: 1,
    duration: opts.seconds,
    ...(opts.rate ? { overallRate: opts.rate } : {}),
  });
}

async function main(): Promise<void> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const [{ port }] = await once(child, 'message') as [{ port: number }];
  const body = review();
  const { inject } = await import('../../webhook/inject.ts');
  const { diff } = await import('../../webhook/patch.ts');
  const { loadInjectionConfigFile } = await import('../../webhook/config.ts');
  const injection = loadInjectionConfigFile(fileURLToPath(new URL('../../webhook/injection-config.example.yaml', import.meta.url)));

  // Sanity: the benchmark Pod is injected, not denied.
  const pod = realisticPod();
  const result = inject(pod, injection);
  if (result.denied) throw new Error(`benchmark Pod is denied: ${result.message}`);
  const ops = diff(pod, result.pod).length;

  // In-process cost per review (no HTTP): inject alone, + diff, + fast-json-patch compare; rounds
  // interleaved, medians.
  const patchers = { none: undefined, diff, compare: (a: object, b: object) => jsonpatch.compare(a, b) };
  const perReview = (patch: ((a: object, b: object) => unknown) | undefined) => {
    const n = 2000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const r = inject(pod, injection) as { pod: object };
      patch?.(pod, r.pod);
    }
    return ((performance.now() - t0) * 1000) / n;
  };
  const samples: Record<keyof typeof patchers, number[]> = { none: [], diff: [], compare: [] };
  for (let round = 0; round < 7; round++) {
    for (const [name, patch] of Object.entries(patchers)) samples[name as keyof typeof patchers].push(perReview(patch));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const usPerOp = median(samples.diff);
  const diffUs = Math.max(0, usPerOp - median(samples.none));
  const compareUs = Math.max(0, median(samples.compare) - median(samples.none));
  const serverCpu = async () => {
    child.send('cpu');
    const [{ cpu }] = await once(child, 'message') as [{ cpu: NodeJS.CpuUsage }];
    return cpu.user + cpu.system;
  };

  process.stdout.write(`warming up (${SECONDS / 2}s)...\n`);
  await cannon(port, '/mutate', body, { seconds: Math.max(2, SECONDS / 2) });
  const rows: Row[] = [];
  for (const [mode, rate] of [['max', undefined], [`${RATE} req/s`, RATE]] as const) {
    for (const [route, path] of [['no-op (floor)', '/noop'], ['/mutate', '/mutate']] as const) {
      const cpu0 = await serverCpu();
      const r = await cannon(port, path, body, { seconds: SECONDS, ...(rate ? { rate } : {}) });
      const cpuUs = Math.round((await serverCpu() - cpu0) / r.requests.total);
      const row = { route, mode, rps: Math.round(r.requests.average), p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx + r.timeouts, cpuUs };
      rows.push(row);
      process.stdout.write(`${JSON.stringify(row)}\n`);
    }
  }
  child.disconnect();
  await once(child, 'exit');

  const mutateMax = rows.find((r) => r.route === '/mutate' && r.mode === 'max')!;
  const mutateRate = rows.find((r) => r.route === '/mutate' && r.mode !== 'max')!;
  const noopMax = rows.find((r) => r.route !== '/mutate' && r.mode === 'max')!;
  const md = [
    '## webhook',
    '',
    `\`node test/bench/webhook.ts\` — ${machineLine()}.`,
    '',
    `autocannon → one webhook process, HTTPS keep-alive, POST of a ${(body.length / 1024).toFixed(1)} KiB AdmissionReview (3 containers, 20 env vars, annotations,`,
    `a delivered Pod with the ServiceAccount volume; the answer is a ${ops}-operation JSON Patch). "max": ${CONNECTIONS} connections for ${SECONDS} s;`,
    `"${RATE} req/s": 10 connections at a fixed overall rate. The no-op route in the same server reads and parses the review and answers allowed.`,
    'Canonical log line on (stdout to /dev/null). autocannon runs on the same machine.',
    '',
    table(['route', 'load', 'req/s', 'p50 ms', 'p99 ms', 'server CPU µs/req', 'errors'], rows.map((r) => [r.route, r.mode, r.rps, r.p50, r.p99, r.cpuUs, r.errors])),
    '',
    `In-process \`inject\` + \`diff\` (no HTTP, no TLS): ${usPerOp.toFixed(0)} µs per review, of which \`diff\` ${diffUs.toFixed(0)} µs; fast-json-patch`,
    `\`compare\` in its place: ${compareUs.toFixed(0)} µs, which would add ${((compareUs - diffUs) / mutateMax.cpuUs * 100).toFixed(0)}% to the server's ${mutateMax.cpuUs} µs of CPU per /mutate request`,
    `(max throughput about ${(100 - 100 / (1 + (compareUs - diffUs) / mutateMax.cpuUs)).toFixed(0)}% lower; the bar for keeping patch.ts is 20%).`,
    '',
    `Targets: ≥ ${TARGET_RPS} admissions/s in one process — measured ${mutateMax.rps} (${mutateMax.rps >= TARGET_RPS ? 'met' : 'NOT met'};`,
    `the no-op floor is ${noopMax.rps}); p99 ≤ ${TARGET_P99_MS} ms at ${RATE} req/s — measured ${mutateRate.p99} ms (${mutateRate.p99 <= TARGET_P99_MS ? 'met' : 'NOT met'}).`,
  ].join('\n');
  writeSection('webhook', md);
  process.stdout.write(`\n${md}\n`);
}

if (import.meta.main && process.argv.includes('--serve')) await serve();
else if (import.meta.main) await main();
