// The canonical audit line: one per tunnel, forwarded request or intercepted request, written
// when it ends, with the same field names everywhere so one query finds every egress decision.
// Field names are constants: the interceptor (credential injection) writes the same line for the
// requests it handles, and tests assert on these names.
import type { Logger } from 'pino';
import type { Action } from './decide.ts';

export const AUDIT_MSG = 'CANONICAL-PROXY-DECISION';

export const AUDIT_FIELDS = Object.freeze({
  kind: 'kind', // connect | http | intercepted
  decision: 'decision', // tunnel | intercept | deny
  rule: 'rule',
  host: 'host',
  port: 'port',
  method: 'method',
  path: 'path', // never the query string: it may hold tokens
  address: 'address', // the resolved, checked address that was dialled
  status: 'status',
  reason: 'reason',
  bytesUp: 'bytes_up', // client → upstream
  bytesDown: 'bytes_down', // upstream → client
  durationMs: 'duration_ms',
  pod: 'pod',
  error: 'error',
} as const);

export type AuditKind = 'connect' | 'http' | 'intercepted';

export interface AuditEntry {
  kind: AuditKind;
  decision: Action;
  rule?: string | undefined;
  host: string;
  port: number;
  method?: string | undefined;
  path?: string | undefined;
  address?: string | undefined;
  status: number;
  reason?: string | undefined;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  error?: string | undefined;
}

/** Path without query string or fragment. */
export function pathOnly(target: string): string {
  const i = target.search(/[?#]/);
  return i < 0 ? target : target.slice(0, i);
}

export interface AuditLog {
  (entry: AuditEntry): void;
}

/** Builds the writer; `pod` names the workspace in every line. */
export function createAuditLog(logger: Logger, pod: string | undefined): AuditLog {
  const F = AUDIT_FIELDS;
  return (e) => {
    const line: Record<string, unknown> = {
      [F.kind]: e.kind,
      [F.decision]: e.decision,
      [F.rule]: e.rule ?? null,
      [F.host]: e.host,
      [F.port]: e.port,
      [F.status]: e.status,
      [F.bytesUp]: e.bytesUp,
      [F.bytesDown]: e.bytesDown,
      [F.durationMs]: Math.round(e.durationMs * 1000) / 1000,
      [F.pod]: pod ?? null,
    };
    if (e.method !== undefined) line[F.method] = e.method;
    if (e.path !== undefined) line[F.path] = pathOnly(e.path);
    if (e.address !== undefined) line[F.address] = e.address;
    if (e.reason !== undefined) line[F.reason] = e.reason;
    if (e.error !== undefined) line[F.error] = e.error;
    // Denials are notable; allowed traffic is the normal case.
    if (e.decision === 'deny') logger.warn(line, AUDIT_MSG);
    else logger.info(line, AUDIT_MSG);
  };
}
