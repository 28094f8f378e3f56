// The egress gateway's configuration: environment only, validated once into one frozen object with
// every problem listed. The only module of the gateway that reads process.env.
import { isIP } from 'node:net';
import { z } from 'zod';
import { env, parseConfig, pickEnv, ConfigError, type DeepReadonly } from '../lib/config.ts';
import { GATEWAY_AUDIENCE, NAMESPACES, PORTS } from '../lib/constants.ts';
import { maxTunnelsFor, tunnelCapProblem } from '../credential-proxy/memory.ts';
import { rulesFromAllowedDomains, RuleSetError, type Rule } from '../credential-proxy/rules.ts';
import { parseLabCidr, type Cidr } from './lab-ranges.ts';

const MiB = 1024 * 1024;

/** The gateway container's memory limit in the base manifests: 2 GiB. */
export const GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES = 2048 * MiB;

/**
 * Memory the gateway holds before any tunnel: Node, the Kubernetes client, the token cache, the
 * allocator's keep after bursts. Measured idle RSS 107 MiB from the bundle, about 150 MiB after
 * traffic (test/bench/README.md, bench:gateway), so 192 MiB leaves GC headroom.
 */
export const GATEWAY_RESERVE_BYTES = 192 * MiB;

/**
 * The tunnel cap a memory limit allows: all of it above the reserve, at the credential proxy's
 * worst case per tunnel (both relay with lib/relay.ts; the worst is an upload to an upstream that
 * never reads; a download to a client that never reads measured ~80 KiB here).
 */
export const gatewayMaxTunnelsFor = (limitBytes: number): number => maxTunnelsFor(limitBytes, GATEWAY_RESERVE_BYTES, 1);

export const gatewayEnvSchema = z.object({
  GATEWAY_HOST: env.string().default('0.0.0.0'),
  GATEWAY_PORT: env.port().default(PORTS.gateway),
  GATEWAY_METRICS_HOST: env.string().default('0.0.0.0'),
  GATEWAY_METRICS_PORT: env.port().default(PORTS.gatewayMetrics),
  /** The audience a sidecar's projected ServiceAccount token must carry. */
  GATEWAY_AUDIENCE: env.string().min(1).default(GATEWAY_AUDIENCE),
  /** Namespaces whose pods may use the gateway. */
  GATEWAY_NAMESPACES: env.list().pipe(z.array(z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'each must be a namespace name')).min(1, 'must name at least one namespace')).default([NAMESPACES.sandboxes]),
  /** The connection must come from the address of the pod the token is bound to. */
  GATEWAY_BIND_SOURCE_ADDRESS: env.bool().default(true),
  /** Destination ports any tunnel may use. */
  GATEWAY_PORTS: env.list().pipe(z.array(z.string().regex(/^\d{1,5}$/, 'each must be a port number').transform(Number).pipe(z.number().int().min(1, 'ports are 1-65535').max(65535, 'ports are 1-65535'))).min(1, 'must name at least one port')).default([443, 80]),
  /** The cluster-wide ceiling: the most any workspace may reach (`host`, `*.suffix`, optional `:port`); empty: no ceiling. */
  GATEWAY_CEILING: env.list().default([]),
  /** Lab only: documentation/benchmarking ranges treated as public (e.g. a TEST-NET upstream). */
  GATEWAY_LAB_CIDRS: env.list().default([]),
  /** `name=address` pairs answered without DNS; the answers are still SSRF-checked. */
  GATEWAY_STATIC_HOSTS: env.list().pipe(z.array(z.string().regex(/^[A-Za-z0-9.-]+=[0-9A-Fa-f:.]+$/, 'each entry must be name=address'))
    .refine((l) => l.every((e) => isIP(e.slice(e.indexOf('=') + 1)) !== 0), 'each address must be an IPv4 or IPv6 literal')).default([]),
  /** A kubeconfig file; unset: the in-cluster ServiceAccount. */
  KUBECONFIG: env.string().optional(),
  /** A validated token is trusted this long (never past its own expiry) before it is reviewed again. */
  TOKEN_CACHE_TTL_MS: env.int(0, 3600_000).default(60_000),
  /** Refused tokens are remembered this long, so a client repeating one does not cost a review each time. */
  TOKEN_NEGATIVE_TTL_MS: env.int(0, 600_000).default(5_000),
  TOKEN_CACHE_MAX: env.int(1, 1_000_000).default(20_000),
  /** TokenReviews in flight at once; more → 503 (the API server is shared with the whole cluster). */
  TOKEN_REVIEWS_MAX_PENDING: env.int(1, 100_000).default(256),
  TOKEN_REVIEW_TIMEOUT_MS: env.int(100, 60_000).default(5_000),
  /** The container's memory limit (from limits.memory); the tunnel cap derives from it. */
  MEMORY_LIMIT_BYTES: env.int(GATEWAY_RESERVE_BYTES + 64 * MiB, 2 ** 40).default(GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES),
  /** Default: what MEMORY_LIMIT_BYTES allows at the worst case per tunnel; a set value may only be lower. */
  MAX_TUNNELS: env.int(1, 1_000_000).optional(),
  MAX_TUNNELS_PER_POD: env.int(1, 1_000_000).default(1024),
  /** Pods whose series are kept in the per-pod metrics; the least recently seen is dropped beyond. */
  METRICS_MAX_PODS: env.int(1, 100_000).default(2000),
  IDLE_TIMEOUT_MS: env.int(1000, 24 * 3600_000).default(300_000),
  HEADER_TIMEOUT_MS: env.int(100, 600_000).default(10_000),
  UPSTREAM_CONNECT_TIMEOUT_MS: env.int(100, 600_000).default(10_000),
  DRAIN_TIMEOUT_MS: env.int(0, 600_000).default(10_000),
  LOG_LEVEL: env.logLevel().default('info'),
}).superRefine((c, ctx) => {
  if (c.GATEWAY_PORT !== 0 && c.GATEWAY_PORT === c.GATEWAY_METRICS_PORT) {
    ctx.addIssue({ code: 'custom', path: ['GATEWAY_METRICS_PORT'], message: 'must differ from GATEWAY_PORT' });
  }
  const problem = c.MAX_TUNNELS === undefined ? undefined : tunnelCapProblem(c.MEMORY_LIMIT_BYTES, c.MAX_TUNNELS, gatewayMaxTunnelsFor(c.MEMORY_LIMIT_BYTES));
  if (problem) ctx.addIssue({ code: 'custom', path: ['MAX_TUNNELS'], message: problem });
  c.GATEWAY_LAB_CIDRS.forEach((entry, i) => {
    const parsed = parseLabCidr(entry);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', path: ['GATEWAY_LAB_CIDRS', i], message: parsed });
  });
});

export type GatewayEnv = z.output<typeof gatewayEnvSchema>;

export interface GatewayConfig extends Omit<DeepReadonly<GatewayEnv>, 'MAX_TUNNELS'> {
  /** Set, or derived from MEMORY_LIMIT_BYTES. */
  readonly MAX_TUNNELS: number;
  readonly ceiling: readonly Rule[] | undefined;
  readonly labCidrs: readonly Cidr[];
}

export const GATEWAY_ENV_HELP: Readonly<Record<keyof GatewayEnv, string>> = {
  GATEWAY_HOST: 'CONNECT listener address (0.0.0.0)',
  GATEWAY_PORT: `CONNECT listener port (${PORTS.gateway})`,
  GATEWAY_METRICS_HOST: 'address of /healthz /readyz /metrics (0.0.0.0)',
  GATEWAY_METRICS_PORT: `port of /healthz /readyz /metrics (${PORTS.gatewayMetrics})`,
  GATEWAY_AUDIENCE: `audience the sidecars' projected ServiceAccount tokens carry (${GATEWAY_AUDIENCE})`,
  GATEWAY_NAMESPACES: `comma-separated namespaces whose pods may use the gateway (${NAMESPACES.sandboxes})`,
  GATEWAY_BIND_SOURCE_ADDRESS: 'refuse a token presented from any address but its pod\'s IPs (true)',
  GATEWAY_PORTS: 'comma-separated destination ports any tunnel may use (443,80)',
  GATEWAY_CEILING: 'cluster-wide ceiling: comma-separated hosts (host, *.suffix, optional :port, default port 443) no workspace may exceed; empty: no ceiling',
  GATEWAY_LAB_CIDRS: 'lab only: documentation/benchmarking CIDRs (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 198.18.0.0/15, 2001:db8::/32 or inside them) treated as public',
  GATEWAY_STATIC_HOSTS: 'name=address pairs answered without DNS (answers are still SSRF-checked)',
  KUBECONFIG: 'kubeconfig file for TokenReview and pod reads (default: in-cluster ServiceAccount)',
  TOKEN_CACHE_TTL_MS: 'how long a validated token is trusted before it is reviewed again, never past its expiry (60000)',
  TOKEN_NEGATIVE_TTL_MS: 'how long a refused token is remembered (5000)',
  TOKEN_CACHE_MAX: 'tokens remembered at most (20000)',
  TOKEN_REVIEWS_MAX_PENDING: 'TokenReviews in flight at once; more get 503 (256)',
  TOKEN_REVIEW_TIMEOUT_MS: 'TokenReview and pod read timeout (5000)',
  MEMORY_LIMIT_BYTES: `the container's memory limit (${GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES} = 2 GiB); the tunnel cap derives from it: set it from the container's limits.memory`,
  MAX_TUNNELS: `open tunnels allowed at once; more get 429 (default: derived from MEMORY_LIMIT_BYTES, ${gatewayMaxTunnelsFor(GATEWAY_DEFAULT_MEMORY_LIMIT_BYTES)} at 2 GiB; a set value may only be lower)`,
  MAX_TUNNELS_PER_POD: 'open tunnels one pod may hold; more get 429 (1024)',
  METRICS_MAX_PODS: 'pods kept in the per-pod metric series (2000)',
  IDLE_TIMEOUT_MS: 'close tunnels idle this long (300000)',
  HEADER_TIMEOUT_MS: 'time allowed for a client to send the CONNECT request (10000)',
  UPSTREAM_CONNECT_TIMEOUT_MS: 'upstream TCP connect timeout (10000)',
  DRAIN_TIMEOUT_MS: 'graceful shutdown limit (10000)',
  LOG_LEVEL: 'fatal|error|warn|info|debug|trace|silent (info)',
};

/** Parses `source` (default: the process environment) into the gateway's frozen config. */
export function loadGatewayConfig(source: Record<string, string | undefined> = process.env): GatewayConfig {
  const parsed = parseConfig(gatewayEnvSchema, pickEnv(gatewayEnvSchema, source), 'gateway environment');
  let ceiling: Rule[] | undefined;
  try {
    ceiling = parsed.GATEWAY_CEILING.length > 0 ? rulesFromAllowedDomains(parsed.GATEWAY_CEILING) : undefined;
  } catch (err) {
    if (err instanceof RuleSetError) {
      throw new ConfigError('gateway environment', err.problems.map((p) => ({ field: 'GATEWAY_CEILING', value: parsed.GATEWAY_CEILING.join(','), message: p.message })));
    }
    throw err;
  }
  const labCidrs = parsed.GATEWAY_LAB_CIDRS.map((e) => parseLabCidr(e) as Cidr);
  const maxTunnels = parsed.MAX_TUNNELS ?? gatewayMaxTunnelsFor(parsed.MEMORY_LIMIT_BYTES);
  return Object.freeze({ ...parsed, MAX_TUNNELS: maxTunnels, ceiling: ceiling && Object.freeze(ceiling), labCidrs: Object.freeze(labCidrs) });
}
