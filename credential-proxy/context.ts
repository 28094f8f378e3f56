// What the request handlers share: built once by createProxy, passed explicitly (no globals).
import type { Logger } from 'pino';
import type { Guard } from '../lib/guard.ts';
import type { AuditLog } from './audit.ts';
import type { ProxyConfig } from './config.ts';
import type { Interceptor } from './interception.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { OwnListeners, Resolver } from './resolve.ts';
import type { CompiledRule } from './rules.ts';
import type { Upstream } from './upstream.ts';

export interface ProxyContext {
  readonly config: ProxyConfig;
  readonly logger: Logger;
  readonly audit: AuditLog;
  readonly metrics: ProxyMetrics;
  readonly resolver: Resolver;
  readonly own: OwnListeners;
  /** Resolves and opens every upstream connection: directly, or through the egress gateway. */
  readonly upstream: Upstream;
  readonly interceptor: Interceptor | undefined;
  /** The effective rules now (env + file + global + this pod's), compiled. */
  rules(): readonly CompiledRule[];
  /** The admin listener's bound port (known after listen), for hints in refusals. */
  readonly bound: { adminPort: number };
  /** Open tunnels (plain and intercepted) and plain-HTTP requests in flight, against the memory budget's cap. */
  readonly tunnels: { active: number };
  /** Why new work must be shed now (resident set near the memory limit), or undefined. */
  readonly memory: { pressure(): string | undefined };
  /** Reports unexpected errors in continuations (after the listener's own guarded call returned). */
  readonly guard: Guard;
}
