// What the tunnel benchmarks (proxy.ts, gateway.ts) share: the TLS upstream they download from,
// the client that opens a tunnel (CONNECT + TLS handshake + GET), the measuring loop (new-tunnel
// latency, downloads with the CPU of the processes on the path), squid as the peer, many idle
// open tunnels, and a process's CPU time and resident set from /proc.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect } from 'node:tls';
import { createDevPair } from '../../lib/certs.ts';
import { freePort } from '../helpers/listen.ts';
import { median, percentile } from './results.ts';

export const GIB = 2 ** 30;

export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = netConnect(port, host, () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on ${host}:${port}`);
}

/** utime + stime of a process, in seconds (clock ticks, USER_HZ = 100). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
}

/** `cmd -v`'s version, for the table. */
export function toolVersion(cmd: string, args: string[], re: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return re.exec(`${r.stdout}${r.stderr}`)?.[1] ?? 'unknown';
}

/**
 * The TLS upstream (a child process, so its CPU is nobody else's): answers `GET /<n>` with n bytes.
 * Writes its certificate (for `hosts`), key and script into `dir`; start it with `args(port, host)`.
 */
export function writeUpstream(dir: string, hosts: string[]): { caPem: string; args(port: number, host: string): string[] } {
  const pair = createDevPair(hosts);
  writeFileSync(join(dir, 'up.crt'), pair.certPem);
  writeFileSync(join(dir, 'up.key'), pair.keyPem);
  writeFileSync(join(dir, 'upstream.cjs'), `
const tls = require('node:tls'); const fs = require('node:fs');
const chunk = Buffer.alloc(256 * 1024, 97);
const srv = tls.createServer({ cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3]) }, (s) => {
  s.on('error', () => {});
  let buf = '';
  s.on('data', function onData(d) {
    buf += d.toString('latin1');
    if (!buf.includes('\\r\\n\\r\\n')) return;
    s.off('data', onData);
    let left = Number(/GET \\/(\\d+)/.exec(buf)?.[1] ?? 0);
    s.write('HTTP/1.1 200 OK\\r\\ncontent-length: ' + left + '\\r\\nconnection: close\\r\\n\\r\\n');
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length); left -= n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
});
srv.listen(Number(process.argv[4]), process.argv[5]);
`);
  return {
    caPem: pair.caPem,
    args: (port, host) => [join(dir, 'upstream.cjs'), join(dir, 'up.crt'), join(dir, 'up.key'), String(port), host],
  };
}

/** One way to the upstream: a proxy on 127.0.0.1:`port` asked for `authority`, or (no authority) the upstream itself. */
export interface TunnelPath {
  name: string;
  port: number;
  authority?: string;
  /** Extra CONNECT header lines, each ending in \r\n. */
  headers?: string;
  /** The process whose CPU the table shows for this path. */
  pid?: number;
}

/** The CONNECT request for `authority`. */
export const connectRequest = (authority: string, headers = '') => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${headers}\r\n`;

/** One request on a new connection: CONNECT (through a proxy) + TLS handshake + GET /<bytes>; resolves with the milliseconds it took. */
export function fetchOnce(path: TunnelPath, tls: { servername: string; ca: string }, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const onSocket = (raw: Socket) => {
      const s = tlsConnect({ socket: raw, servername: tls.servername, ca: tls.ca });
      let got = -1;
      let pending = '';
      s.on('secureConnect', () => s.write(`GET /${bytes} HTTP/1.1\r\nHost: ${tls.servername}\r\n\r\n`));
      s.on('data', (c: Buffer) => {
        if (got < 0) {
          pending += c.toString('latin1');
          const i = pending.indexOf('\r\n\r\n');
          if (i < 0) return;
          got = pending.length - i - 4;
        } else got += c.length;
        if (got >= bytes) {
          resolve(performance.now() - t0);
          s.destroy();
        }
      });
      s.on('error', reject);
    };
    const raw = netConnect(path.port, '127.0.0.1');
    raw.setNoDelay(true);
    raw.on('error', reject);
    const { authority } = path;
    if (authority === undefined) return void raw.once('connect', () => onSocket(raw));
    raw.once('connect', () => raw.write(connectRequest(authority, path.headers)));
    let head = '';
    raw.on('data', function onData(d: Buffer) {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      raw.off('data', onData);
      if (!/^HTTP\/1\.[01] 200/.test(head)) return reject(new Error(`${path.name}: CONNECT refused: ${head.split('\r\n').slice(0, 2).join(' ')}`));
      onSocket(raw);
    });
  });
}

export interface Measured {
  p50: number;
  p99: number;
  /** Median of the downloads, MB/s (10^6 bytes/s). */
  mbps: number;
  /** Median CPU-s per GiB of each process in `pids`, over the downloads. */
  cpuPerGiB: Map<number, number>;
  /** CPU-s of each process in `pids` over the timed new tunnels. */
  tunnelCpu: Map<number, number>;
}

/**
 * Every path measured in the same rounds, so a change in the machine's load touches them all alike:
 * 20 warm-up tunnels per path, then `tunnels` rounds of one new tunnel per path, then `downloads`
 * rounds of one download of `bytes` per path, with the CPU time the processes of `pids` spent on
 * each path's own requests (one request is in flight at a time).
 */
export async function measureAll(paths: TunnelPath[], tls: { servername: string; ca: string }, o: { tunnels: number; bytes: number; downloads: number; pids: number[] }): Promise<Map<TunnelPath, Measured>> {
  const cpu = () => o.pids.map((p) => cpuSeconds(p));
  const timed = async (path: TunnelPath, bytes: number) => {
    const before = cpu();
    const ms = await fetchOnce(path, tls, bytes);
    const after = cpu();
    return { ms, cpu: o.pids.map((p, i) => [p, after[i]! - before[i]!] as const) };
  };
  for (const path of paths) for (let i = 0; i < 20; i++) await fetchOnce(path, tls, 1024);
  const lat = new Map(paths.map((p) => [p, [] as number[]]));
  const tunnelCpu = new Map(paths.map((p) => [p, new Map(o.pids.map((pid) => [pid, 0]))]));
  for (let i = 0; i < o.tunnels; i++) {
    for (const path of paths) {
      const r = await timed(path, 1024);
      lat.get(path)!.push(r.ms);
      for (const [pid, s] of r.cpu) tunnelCpu.get(path)!.set(pid, tunnelCpu.get(path)!.get(pid)! + s);
    }
  }
  const mbps = new Map(paths.map((p) => [p, [] as number[]]));
  const perGiB = new Map(paths.map((p) => [p, new Map(o.pids.map((pid) => [pid, [] as number[]]))]));
  for (let i = 0; i < o.downloads; i++) {
    for (const path of paths) {
      const r = await timed(path, o.bytes);
      mbps.get(path)!.push(o.bytes / 1e6 / (r.ms / 1000));
      for (const [pid, s] of r.cpu) perGiB.get(path)!.get(pid)!.push(s / (o.bytes / GIB));
    }
  }
  return new Map(paths.map((path) => [path, {
    p50: median(lat.get(path)!), p99: percentile(lat.get(path)!, 99), mbps: median(mbps.get(path)!), tunnelCpu: tunnelCpu.get(path)!,
    cpuPerGiB: new Map([...perGiB.get(path)!].map(([pid, v]) => [pid, median(v)])),
  }]));
}

/** squid 5 as a plain CONNECT proxy on 127.0.0.1 (no cache, no access log). `dir` must be writable by squid's user. */
export async function startSquid(start: (cmd: string, args: string[]) => ChildProcess, dir: string): Promise<{ port: number; pid: number; version: string } | undefined> {
  if (spawnSync('squid', ['-v']).status !== 0) return undefined;
  const port = await freePort();
  writeFileSync(join(dir, 'squid.conf'), [
    `http_port 127.0.0.1:${port}`, 'http_access allow all', 'cache deny all', 'cache_mem 8 MB', 'access_log none',
    `cache_log ${join(dir, 'squid-cache.log')}`, `pid_filename ${join(dir, 'squid.pid')}`, `coredump_dir ${dir}`,
    'shutdown_lifetime 0 seconds', 'max_filedescriptors 8192',
  ].join('\n'));
  const squid = start('squid', ['-N', '-f', join(dir, 'squid.conf')]);
  await waitForPort(port);
  return { port, pid: squid.pid!, version: toolVersion('squid', ['-v'], /Version (\S+)/) };
}

/**
 * Opens up to `count` tunnels to a proxy on 127.0.0.1:`port` (`batch` at a time) and leaves them
 * open and idle; stops at the first refusal or error, which it reports.
 */
export async function openTunnels(port: number, request: string, count: number, batch: number): Promise<{ sockets: Socket[]; opened: number; stopped?: string }> {
  const sockets: Socket[] = [];
  let opened = 0;
  try {
    for (let i = 0; i < count; i += batch) {
      await Promise.all(Array.from({ length: Math.min(batch, count - i) }, () => new Promise<void>((resolve, reject) => {
        const s = netConnect(port, '127.0.0.1', () => s.write(request));
        // A refusal: its status line and reason header.
        s.once('data', (d: Buffer) => (/^HTTP\/1\.1 200/.test(d.toString()) ? resolve() : reject(new Error(d.toString().split('\r\n').slice(0, 2).join(' ')))));
        s.on('error', reject);
        sockets.push(s);
      })));
      opened = sockets.length;
    }
  } catch (err) {
    return { sockets, opened, stopped: (err as Error).message };
  }
  return { sockets, opened };
}

/**
 * Opens `count` tunnels through a proxy on 127.0.0.1:`port`, asks each for a `bytes` download over
 * TLS and then never reads: the proxy holds whatever its relay buffers for a client that stalls.
 */
export async function stallTunnels(path: TunnelPath, tls: { servername: string; ca: string }, count: number, bytes: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) => {
      const raw = netConnect(path.port, '127.0.0.1', () => raw.write(connectRequest(path.authority!, path.headers)));
      raw.on('error', reject);
      sockets.push(raw);
      raw.once('data', (d: Buffer) => {
        if (!/^HTTP\/1\.[01] 200/.test(d.toString('latin1'))) return reject(new Error(d.toString('latin1').split('\r\n')[0]));
        const s = tlsConnect({ socket: raw, servername: tls.servername, ca: tls.ca });
        s.on('error', () => {});
        s.once('secureConnect', () => s.write(`GET /${bytes} HTTP/1.1\r\nHost: ${tls.servername}\r\n\r\n`));
        // The first bytes of the answer: from here on nothing is read.
        s.once('data', () => { s.pause(); raw.pause(); resolve(); });
      });
    });
  }
  return sockets;
}
