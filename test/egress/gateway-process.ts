// Runs inside the "gateway" network namespace of the conformance suite: a real gateway
// (createGateway, the program's own wiring) and, because no Kubernetes API server exists here, the
// stand-in for its TokenReview and pod endpoints (test/helpers/kube-api-stand-in.ts) on this
// namespace's loopback. The suite drives the stand-in over stdin (one JSON command per line) and
// reads answers and the gateway's log lines on stdout.
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { loadGatewayConfig } from '../../gateway/config.ts';
import { createKubernetesApi } from '../../gateway/kubernetes.ts';
import { createGateway } from '../../gateway/server.ts';
import { foreignKey, startKubeApiStandIn, type StandInPod } from '../helpers/kube-api-stand-in.ts';

const api = await startKubeApiStandIn();
// STATE_DIR: a directory of the suite's own temp dir (the kubeconfig naming the stand-in goes there).
const config = loadGatewayConfig({ ...process.env, KUBECONFIG: api.writeKubeconfig(process.env.STATE_DIR!) });
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const logger = createLogger({ name: 'gateway', level: 'info', destination: new Writable({ write(chunk, _e, cb) { out({ log: JSON.parse(String(chunk)) }); cb(); } }) });
const gateway = createGateway(config, { logger, registry: createMetricsRegistry({ program: 'gateway', defaultMetrics: false }), api: await createKubernetesApi(config.KUBECONFIG) });
const bound = await gateway.listen();
const pods = new Map<string, StandInPod>();
// The cluster's DNS service stands here (CLUSTER_DNS): a query that reaches it is reported.
if (process.env.CLUSTER_DNS) {
  const dns = createSocket('udp4');
  dns.on('message', (msg, rinfo) => out({ seen: 'cluster-dns', from: rinfo.address, bytes: msg.length }));
  await new Promise<void>((resolve) => dns.bind(53, process.env.CLUSTER_DNS, resolve));
}
out({ ready: bound.gateway.display });

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as { id: number; op: string; name?: string; ip?: string; namespace?: string; audiences?: string[]; expiresIn?: number; forged?: boolean };
  const reply = (value: unknown) => out({ id: cmd.id, value });
  if (cmd.op === 'addPod') {
    pods.set(cmd.name!, api.addPod({ namespace: cmd.namespace ?? 'sandboxes', name: cmd.name!, podIPs: [cmd.ip!] }));
    return reply(true);
  }
  if (cmd.op === 'deletePod') {
    const pod = pods.get(cmd.name!)!;
    api.deletePod(pod.namespace, pod.name);
    return reply(true);
  }
  if (cmd.op === 'mint') {
    const pod = pods.get(cmd.name!)!;
    return reply(api.mint(pod, { ...(cmd.audiences ? { audiences: cmd.audiences } : {}), ...(cmd.expiresIn !== undefined ? { expiresIn: cmd.expiresIn } : {}), ...(cmd.forged ? { key: foreignKey() } : {}) }));
  }
  reply(null);
});
process.stdin.once('end', () => {
  void gateway.close().then(() => api.close()).then(() => process.exit(0));
});
