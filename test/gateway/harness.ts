// A real gateway on port 0 in this process, a stand-in for the Kubernetes API (see
// kube-api-stand-in.ts: no API server runs here), and raw CONNECT exchanges.
import { connect as netConnect, createServer as createNetServer, type Socket } from 'node:net';
import type { Test } from 'tap';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { loadGatewayConfig } from '../../gateway/config.ts';
import { createKubernetesApi } from '../../gateway/kubernetes.ts';
import { createGateway, type GatewayDeps, type GatewayInstance } from '../../gateway/server.ts';
import type { Resolver } from '../../credential-proxy/resolve.ts';
import { captureLogs, type LogCapture } from '../helpers/log-capture.ts';
import { startKubeApiStandIn, type KubeApiStandIn, type StandInPod } from '../helpers/kube-api-stand-in.ts';
import { listenLocal, closeServer } from '../helpers/listen.ts';

export interface GatewayHarness {
  gateway: GatewayInstance;
  port: number;
  metricsPort: number;
  api: KubeApiStandIn;
  logs: LogCapture;
  /** A pod whose IP is 127.0.0.1: the test's own connections come from it. */
  pod: StandInPod;
  /** Every address the gateway dialled. */
  dialled: string[];
  /** A TCP echo upstream on loopback that every dial of a lab address reaches. */
  upstreamPort: number;
}

/** Names → addresses, like DNS; the lab addresses stand for the internet. */
export function mapResolver(table: Record<string, string[]>): Resolver {
  return async (host) => {
    const answers = table[host];
    if (!answers) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return answers.map((address) => ({ address, family: address.includes(':') ? 6 as const : 4 as const }));
  };
}

export async function startGateway(t: Test, env: Record<string, string> = {}, deps: Partial<GatewayDeps> = {}): Promise<GatewayHarness> {
  const api = await startKubeApiStandIn();
  t.teardown(() => api.close());
  const upstream = createNetServer((s) => {
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  const { port: upstreamPort } = await listenLocal(upstream);
  t.teardown(() => closeServer(upstream));
  const config = loadGatewayConfig({
    GATEWAY_HOST: '127.0.0.1', GATEWAY_PORT: '0', GATEWAY_METRICS_HOST: '127.0.0.1', GATEWAY_METRICS_PORT: '0',
    GATEWAY_LAB_CIDRS: '198.51.100.0/24,2001:db8::/32', KUBECONFIG: api.writeKubeconfig(t.testdir()), ...env,
  });
  const logs = captureLogs();
  const dialled: string[] = [];
  const gateway = createGateway(config, {
    logger: createLogger({ name: 'gateway', level: 'info', destination: logs.destination }),
    registry: createMetricsRegistry({ program: 'gateway', defaultMetrics: false }),
    api: await createKubernetesApi(config.KUBECONFIG),
    resolver: mapResolver({ 'api.lab.test': ['198.51.100.10'], 'secret.lab.test': ['198.51.100.10'] }),
    connect: (target) => {
      dialled.push(target.host);
      return netConnect({ host: '127.0.0.1', port: upstreamPort, onread: target.onread });
    },
    ...deps,
  });
  const bound = await gateway.listen();
  t.teardown(() => gateway.close());
  const pod = api.addPod({ namespace: 'sandboxes', name: 'pod-a', podIPs: ['127.0.0.1'] });
  return { gateway, port: bound.gateway.port!, metricsPort: bound.metrics.port!, api, logs, pod, dialled, upstreamPort };
}

export function connectRequest(authority: string, token?: string, extra = ''): string {
  return `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${token !== undefined ? `Proxy-Authorization: Bearer ${token}\r\n` : ''}${extra}\r\n`;
}

/** Sends `request` and resolves with the response head, leaving the socket open for a tunnel. */
export function exchange(port: number, request: string | Buffer): Promise<{ head: string; status: number; header(name: string): string | undefined; socket: Socket; body: Promise<string> }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    socket.on('error', reject);
    socket.once('connect', () => socket.write(request));
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const head = buf.subarray(0, end).toString('latin1');
      const rest = buf.subarray(end + 4);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      const body = new Promise<string>((res) => {
        const parts: Buffer[] = [rest];
        socket.on('data', (c: Buffer) => parts.push(c));
        socket.once('close', () => res(Buffer.concat(parts).toString()));
      });
      resolve({
        head, status, socket, body,
        header: (name) => new RegExp(`^${name}: (.*)$`, 'im').exec(head)?.[1],
      });
    };
    socket.on('data', onData);
    socket.once('close', () => {
      if (buf.indexOf('\r\n\r\n') < 0) resolve({ head: buf.toString('latin1'), status: 0, socket, body: Promise.resolve(''), header: () => undefined });
    });
  });
}

/** Writes `text` into an open tunnel to the echo upstream and resolves with what comes back. */
export function echo(socket: Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const onData = (c: Buffer) => {
      got += c.toString();
      if (got.length >= text.length) {
        socket.off('data', onData);
        resolve(got);
      }
    };
    socket.on('data', onData);
    socket.write(text);
  });
}

export async function metricsText(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return res.text();
}
