// The proxy's memory budget. Whatever clients do (open tunnels and never read, upload to an
// upstream that never reads, send bodies to sign), the proxy's memory stays under the limit it is
// configured with (MEMORY_LIMIT_BYTES, the sidecar container's limit), because every buffer it
// fills is bounded and every multiplier of a buffer is capped by a number derived from the limit:
//
//   limit = reserve (runtime, modules, CA, leaf cache: measured idle RSS plus headroom)
//         + tunnels × TUNNEL_WORST_CASE_BYTES       (≤ TUNNEL_SHARE of what is left)
//         + bodies buffered for SigV4 signing      (≤ the rest: the signing budget)
//
// and, as a safety net for anything the arithmetic missed, new tunnels and requests are shed
// with 503 once the resident set passes SHED_FRACTION of the limit. Figures: docs/security.md.
import { WorkspaceSandboxError } from '../lib/errors.ts';

/** The sidecar's memory limit in the injected Pod spec (webhook default): 256 MiB. */
export const DEFAULT_MEMORY_LIMIT_BYTES = 256 * 1024 * 1024;

/**
 * Memory the proxy needs before any tunnel: Node and the module graph, the per-pod CA, the upstream
 * trust store, the leaf cache. Measured idle RSS 86-115 MiB (test/bench/README.md; source run
 * here), so 128 MiB leaves room for GC headroom.
 */
export const RESERVE_BYTES = 128 * 1024 * 1024;

/**
 * The most one tunnel can hold whatever its client and upstream do, as measured (resident set
 * growth per tunnel, plain tunnels, the proxy as the bin runs it): a client that never reads
 * ~150 KiB (the download relay's buffers in flight, RELAY_BUFFERS × RELAY_BUFFER_BYTES of lib/relay.ts, plus
 * sockets and bookkeeping); a client uploading to an upstream that never reads 190-460 KiB (the
 * upload pipe's read and write queues, ~230 KiB of it Buffers, the rest allocator slack). Checked
 * by test/credential-proxy/memory.test.ts; figures in docs/security.md.
 */
export const TUNNEL_WORST_CASE_BYTES = 384 * 1024;

/** Share of the memory above the reserve that tunnels may fill; the rest bounds bodies held for signing. */
export const TUNNEL_SHARE = 0.75;

/** Above this fraction of the limit (resident set), new tunnels and requests get 503. */
export const SHED_FRACTION = 0.9;

export interface MemoryBudget {
  readonly limitBytes: number;
  /** Open tunnels (plain, intercepted) plus plain-HTTP requests in flight; more get 429. */
  readonly maxTunnels: number;
  /** Bytes of request bodies held for SigV4 signing at once, across all tunnels; more get 503. */
  readonly signingBudgetBytes: number;
  /** Resident set size above which new work is shed with 503. */
  readonly shedAtBytes: number;
}

/**
 * The tunnel cap a memory limit allows: `share` of what is above `reserve`, at the worst case per
 * tunnel. The proxy's defaults; the egress gateway, which relays the same way, passes its own.
 */
export function maxTunnelsFor(limitBytes: number, reserve = RESERVE_BYTES, share = TUNNEL_SHARE): number {
  return Math.max(1, Math.floor(((limitBytes - reserve) * share) / TUNNEL_WORST_CASE_BYTES));
}

/** Why `maxTunnels` is more than `limitBytes` allows, or undefined when it is not. */
export function tunnelCapProblem(limitBytes: number, maxTunnels: number, allowed: number): string | undefined {
  if (maxTunnels <= allowed) return undefined;
  return `at most ${allowed} with MEMORY_LIMIT_BYTES=${limitBytes} (${TUNNEL_WORST_CASE_BYTES / 1024} KiB per tunnel at worst); raise the memory limit or lower the cap`;
}

/**
 * The budget for `limitBytes`, with `maxTunnels` when the operator set one (it may only be lower
 * than what the limit allows). Throws a message naming the bound otherwise.
 */
export function memoryBudget(limitBytes: number, maxTunnels?: number): MemoryBudget {
  if (limitBytes <= RESERVE_BYTES) {
    throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `must be more than the proxy's ${RESERVE_BYTES / 1048576} MiB reserve`);
  }
  const allowed = maxTunnelsFor(limitBytes);
  const problem = maxTunnels === undefined ? undefined : tunnelCapProblem(limitBytes, maxTunnels, allowed);
  if (problem) throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', problem);
  const tunnels = maxTunnels ?? allowed;
  return Object.freeze({
    limitBytes,
    maxTunnels: tunnels,
    signingBudgetBytes: Math.floor((limitBytes - RESERVE_BYTES) * (1 - TUNNEL_SHARE)),
    shedAtBytes: Math.floor(limitBytes * SHED_FRACTION),
  });
}

/** Bytes reserved against a fixed budget (bodies held for signing); reserve before buffering. */
export class ByteBudget {
  readonly capacity: number;
  #used = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get used(): number {
    return this.#used;
  }

  /** Takes `n` bytes when they fit; false (nothing taken) when they do not. */
  tryTake(n: number): boolean {
    if (this.#used + n > this.capacity) return false;
    this.#used += n;
    return true;
  }

  give(n: number): void {
    this.#used = Math.max(0, this.#used - n);
  }
}

/**
 * The resident set, sampled at most every `sampleMs` (reading it costs a /proc read): `pressure()`
 * says why new work must be shed, or undefined.
 */
export function createMemoryPressure(shedAtBytes: number, options: { sampleMs?: number; rss?: () => number } = {}): { pressure(): string | undefined } {
  const sampleMs = options.sampleMs ?? 100;
  const rss = options.rss ?? (() => process.memoryUsage.rss());
  let last = 0;
  let value = 0;
  return {
    pressure() {
      const now = performance.now();
      if (now - last >= sampleMs) {
        value = rss();
        last = now;
      }
      if (value < shedAtBytes) return undefined;
      return `the proxy is near its memory limit (${Math.round(value / 1048576)} of ${Math.round(shedAtBytes / SHED_FRACTION / 1048576)} MiB): retry later`;
    },
  };
}
