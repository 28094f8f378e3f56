// Property-based fuzzing of live servers: what every program's fuzz test shares. A fuzz test
// starts the real server, throws generated requests at it over raw sockets (so nothing in a client
// library tidies the input first), and after the run checks the server still answers its health
// endpoint. CI runs a fixed seed and a bounded count; more on demand:
//   FUZZ_RUNS=20000 FUZZ_SEED=42 npx tap test/credential-proxy/fuzz.test.ts
// A failure prints fast-check's seed and path, which replay it exactly (FUZZ_SEED + FUZZ_PATH).
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';

/** The seed CI uses: fixed, so a red run is reproducible from the log alone. */
export const DEFAULT_FUZZ_SEED = 1313;

export interface FuzzSettings {
  seed: number;
  numRuns: number;
  /** fast-check's replay path of a reported failure (FUZZ_PATH), with FUZZ_SEED. */
  path?: string;
}

/** `FUZZ_RUNS` (default `defaultRuns`), `FUZZ_SEED` (default DEFAULT_FUZZ_SEED), `FUZZ_PATH`. */
export function fuzzSettings(defaultRuns: number): FuzzSettings {
  const runs = Number(process.env.FUZZ_RUNS ?? defaultRuns);
  const seed = Number(process.env.FUZZ_SEED ?? DEFAULT_FUZZ_SEED);
  if (!Number.isSafeInteger(runs) || runs < 1) throw new Error(`FUZZ_RUNS must be a positive integer, got ${process.env.FUZZ_RUNS}`);
  if (!Number.isSafeInteger(seed)) throw new Error(`FUZZ_SEED must be an integer, got ${process.env.FUZZ_SEED}`);
  return { seed, numRuns: runs, ...(process.env.FUZZ_PATH ? { path: process.env.FUZZ_PATH } : {}) };
}

/** Parameters for fc.assert: the settings above, stopping at the first failure (no long shrink against a live server). */
export function fuzzParameters(defaultRuns: number): fc.Parameters<unknown> {
  const s = fuzzSettings(defaultRuns);
  return { seed: s.seed, numRuns: s.numRuns, endOnFailure: true, ...(s.path ? { path: s.path } : {}) };
}

/** Where a server listens: a loopback TCP port or a Unix socket. */
export type Endpoint = { port: number; host?: string } | { socketPath: string };

export interface RawReply {
  /** Everything the server sent, latin1-decoded (bytes preserved). */
  raw: string;
  /** Status of the first response, 0 when none arrived. */
  status: number;
  /** The server closed or reset the connection (vs. we gave up waiting). */
  closed: boolean;
}

function dial(endpoint: Endpoint): Socket {
  return 'socketPath' in endpoint ? connect(endpoint.socketPath) : connect(endpoint.port, endpoint.host ?? '127.0.0.1');
}

/**
 * Writes `data` on a fresh connection and collects the answer until the server closes, or until
 * `idleMs` passes without a byte after the first response arrived (keep-alive servers), or
 * `timeoutMs` in all. A reset is an answer too (`closed`), never an exception.
 */
export function sendRaw(endpoint: Endpoint, data: string | Buffer, options: { timeoutMs?: number; idleMs?: number; end?: boolean } = {}): Promise<RawReply> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const idleMs = options.idleMs ?? 200;
  return new Promise((resolve) => {
    const s = dial(endpoint);
    let raw = '';
    let settled = false;
    let idle: NodeJS.Timeout | undefined;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(overall);
      clearTimeout(idle);
      s.destroy();
      resolve({ raw, status: statusOf(raw), closed });
    };
    const overall = setTimeout(() => finish(false), timeoutMs);
    s.setEncoding('latin1');
    s.on('data', (chunk: string) => {
      raw += chunk;
      clearTimeout(idle);
      idle = setTimeout(() => finish(false), idleMs);
    });
    s.on('close', () => finish(true));
    s.on('error', () => finish(true));
    s.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
    if (options.end) s.end();
  });
}

/** Status code of a raw HTTP/1.x answer; 0 when there is none. */
export function statusOf(raw: string): number {
  return Number(/^HTTP\/1\.[01] (\d{3})/.exec(raw)?.[1] ?? 0);
}

/**
 * True when the server at `endpoint` answers `GET path` (default `/healthz`) with 200 within
 * `timeoutMs`: the "still serving" check every fuzz test ends with.
 */
export function stillServing(endpoint: Endpoint, path = '/healthz', timeoutMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    const target = 'socketPath' in endpoint ? { socketPath: endpoint.socketPath } : { host: endpoint.host ?? '127.0.0.1', port: endpoint.port };
    const req = httpRequest({ ...target, path, method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode === 200));
      res.once('error', () => resolve(false));
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(false));
    req.end();
  });
}

/** A raw HTTP/1.1 request: request line, header lines as given (not validated), blank line, body. */
export function rawRequest(method: string, target: string, headerLines: readonly string[], body: string | Buffer = ''): Buffer {
  const head = `${method} ${target} HTTP/1.1\r\n${headerLines.map((l) => `${l}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), typeof body === 'string' ? Buffer.from(body, 'utf8') : body]);
}

// ── Arbitraries: the shapes that broke parsers before, mixed with plain noise ──

const ZONES = ['eth0', 'lo', '25eth0', '1', '%', '', 'en0%25', 'a'.repeat(300)];

/** IPv6 literals in odd spellings, often with RFC 6874 zone ids (`%25eth0`, `%lo`). */
export const ipv6Literal: fc.Arbitrary<string> = fc.tuple(
  fc.oneof(fc.ipV6(), fc.constantFrom('fe80::1', '::1', '::', '::ffff:127.0.0.1', 'fd00:ec2::23', '64:ff9b::a9fe:a9fe', '1:2:3:4:5:6:7:8:9', ':::')),
  fc.option(fc.constantFrom(...ZONES), { nil: undefined }),
  fc.boolean(),
).map(([ip, zone, pct]) => (zone === undefined ? ip : `${ip}%${pct ? '25' : ''}${zone}`));

/** Anything that might be put where a host goes: names, IP literals in every form, long and broken strings. */
export const hostish: fc.Arbitrary<string> = fc.oneof(
  fc.domain(),
  fc.ipV4(),
  fc.ipV4Extended(),
  ipv6Literal.map((ip) => `[${ip}]`),
  ipv6Literal,
  fc.constantFrom('localhost', '169.254.169.254', '0', '0x7f.1', '2130706433', '[]', '[', ']', '..', '.', '-', 'xn--', 'xn--zz', '*.example.com', 'a..b', '%2e', '%00'),
  fc.integer({ min: 1, max: 3000 }).map((n) => 'a'.repeat(n)),
  fc.integer({ min: 1, max: 200 }).map((n) => Array.from({ length: n }, () => 'abcdefghij').join('.')),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

/** Ports as a client might write them: valid, out of range, signed, padded, not numbers. */
export const portish: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: 0, max: 70000 }).map(String),
  fc.constantFrom('', '443', '+443', '-1', '0443', '99999999999999999999', '0x1bb', '443 ', ' 443', '4 43', 'https'),
);

/** `host[:port]` as it appears in a CONNECT request line or a Host header. */
export const authority: fc.Arbitrary<string> = fc.tuple(hostish, fc.option(portish, { nil: undefined }))
  .map(([h, p]) => (p === undefined ? h : `${h}:${p}`));

/** Header names and values including what a parser must refuse (separators, CR/LF, NUL, obs-fold). */
export const headerLine: fc.Arbitrary<string> = fc.tuple(
  fc.oneof(
    fc.constantFrom('Host', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Expect', 'Authorization', 'Proxy-Authorization', 'Upgrade', 'Content-Type', 'Accept', 'TE', 'Trailer', 'X-Forwarded-For', 'Cookie'),
    fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 30 }),
  ),
  fc.oneof(
    fc.constantFrom('', '0', '1', '-1', 'chunked', 'close', 'keep-alive', '100-continue', 'websocket', 'Bearer x', 'application/json', 'identity, chunked', ' folded'),
    authority,
    fc.string({ unit: 'binary-ascii', maxLength: 60 }),
    fc.integer({ min: 1, max: 20_000 }).map((n) => 'v'.repeat(n)),
  ),
  fc.constantFrom(': ', ':', ' : ', ':\t'),
).map(([name, value, sep]) => `${name}${sep}${value}`);

/** A block of header lines (the request's), sometimes with duplicates of the framing headers. */
export const headerBlock: fc.Arbitrary<string[]> = fc.array(headerLine, { maxLength: 12 });

/** Absolute-form targets (`http://host:port/path`) with hostile hosts, userinfo, odd schemes and paths. */
export const absoluteUrl: fc.Arbitrary<string> = fc.tuple(
  fc.constantFrom('http://', 'HTTP://', 'https://', 'http:/', 'http:\\\\', 'ftp://', '//', ''),
  fc.option(fc.constantFrom('user@', 'user:pass@', '@', ':@'), { nil: undefined }),
  authority,
  fc.oneof(fc.webPath(), fc.constantFrom('/', '/..', '/%2e%2e/', '/%00', '/\\', '?q', '#f', ''), fc.string({ unit: 'binary-ascii', maxLength: 40 })),
).map(([scheme, user, auth, path]) => `${scheme}${user ?? ''}${auth}${path}`);

/** HTTP methods, common and not. */
export const method: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE', 'TRACK', 'get', 'PRI', 'M-SEARCH'),
  fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 12 }),
);

/** JSON documents: random values, and rule-shaped objects whose fields hold hostile values. */
export const jsonBody: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue(),
  fc.record({
    id: fc.oneof(fc.string(), fc.integer({ min: 1, max: 5000 }).map((n) => 'r'.repeat(n))),
    hosts: fc.array(fc.oneof(hostish, fc.jsonValue()), { maxLength: 4 }),
    ports: fc.option(fc.array(fc.oneof(fc.integer(), fc.double(), fc.string()), { maxLength: 3 }), { nil: undefined }),
    methods: fc.option(fc.array(method, { maxLength: 3 }), { nil: undefined }),
    paths: fc.option(fc.array(fc.oneof(fc.webPath(), fc.string()), { maxLength: 3 }), { nil: undefined }),
    allowPrivate: fc.option(fc.jsonValue(), { nil: undefined }),
    credentials: fc.option(fc.jsonValue(), { nil: undefined }),
  }, { requiredKeys: [] }),
).map((v) => v as unknown);
