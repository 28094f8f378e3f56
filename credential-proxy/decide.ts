// decide(target, rules): the whole egress policy as a pure function. No DNS, no sockets: the
// address checks (SSRF guard) happen after a `tunnel`/`intercept` decision, on the resolved
// addresses, in resolve.ts.
import {
  DEFAULT_CONNECT_PORT, DEFAULT_HTTP_PORT, hostMatches, normaliseHost,
  type CompiledRule, type HostPattern, type Rule,
} from './rules.ts';

export type Action = 'tunnel' | 'intercept' | 'deny';

export interface Target {
  /** `connect`: a CONNECT tunnel (method/path invisible); `http`: a plain-HTTP request. */
  kind: 'connect' | 'http';
  /** The host as the client sent it (normalised here). */
  host: string;
  /** Absent: the default port of the kind (443 for CONNECT, 80 for plain HTTP). */
  port?: number;
  method?: string;
  /** Path without the query string; only for `http` (and interception). */
  path?: string;
}

export interface Decision {
  action: Action;
  ruleId?: string;
  /** A short sentence a person can act on; also sent in X-Workspace-Sandbox-Deny-Reason. */
  reason: string;
  /** The normalised host (punycode, lower case) or the raw host when it could not be normalised. */
  host: string;
  port: number;
  /** The matched rule, for tunnel/intercept. */
  rule?: Rule;
  /**
   * Set on a deny when the target is not a host at all (empty, too long, a zone id, characters a
   * name cannot hold): the client sent a malformed request (400), not one the policy refuses (403).
   */
  malformed?: true;
}

/** Higher is more specific: an exact name beats any wildcard, a longer wildcard suffix beats a shorter one. */
function specificity(patterns: readonly HostPattern[], host: string): number {
  let best = -1;
  for (const p of patterns) {
    if (!hostMatches(p, host)) continue;
    best = Math.max(best, p.kind === 'exact' ? Number.MAX_SAFE_INTEGER : p.suffix.length);
  }
  return best;
}

/** A malformed host is echoed in refusals and logs only this far (it may be kilobytes long). */
const MAX_ECHOED_HOST = 300;

export function allowedPorts(rule: Rule, kind: Target['kind']): readonly number[] {
  return rule.ports ?? [kind === 'connect' ? DEFAULT_CONNECT_PORT : DEFAULT_HTTP_PORT];
}

/**
 * Paths are matched as sent, still percent-encoded: `%2F` is an ordinary character inside a
 * segment, never a separator (Bedrock inference-profile model IDs put `%2F` and `%3A` in one
 * segment: `/model/arn%3Aaws%3Abedrock%3A...%3Ainference-profile%2Fus.anthropic.../invoke`). A rule
 * prefix therefore only ever matches a prefix of the raw path, and whatever follows it stays under
 * it for a router that decodes nothing. For a router that decodes (once) before routing, the
 * decoded path must not climb out either, so a path is refused when, raw or decoded, it holds a
 * dot segment (`..`, `.%2e`, `%2e%2E;x`), a backslash (some routers treat it as `/`), a control
 * character, double encoding (`%25`, which a second decode would turn into `%2F` or `%2e`), or
 * percent-encoding that is not valid UTF-8 (overlong forms of `.` and `/`).
 */
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const RAW_UNSAFE = /[\\\x00-\x20\x7f]|%25|%5c/i;
// eslint-disable-next-line no-control-regex -- as above
const DECODED_UNSAFE = /[\\\x00-\x1f\x7f]|(?:^|\/)\.{1,2}(?:;[^/]*)?(?:\/|$)/;

/** False for any path shape that could mean something else to a router that decodes it. */
export function pathIsSafe(path: string): boolean {
  if (RAW_UNSAFE.test(path)) return false;
  if (!path.includes('%')) return !DECODED_UNSAFE.test(path);
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return false;
  }
  return !DECODED_UNSAFE.test(path) && !DECODED_UNSAFE.test(decoded);
}

/** Whether `path` (raw, no query string) is allowed by `paths` (exact, or prefix when ending in `*`). */
export function pathAllowed(paths: readonly string[] | undefined, path: string): boolean {
  if (!paths) return true;
  if (!pathIsSafe(path)) return false;
  return paths.some((p) => (p.endsWith('*') ? path.startsWith(p.slice(0, -1)) : path === p));
}

export function methodAllowed(methods: readonly string[] | undefined, method: string): boolean {
  return !methods || methods.includes(method.toUpperCase());
}

/**
 * TRACE (RFC 9110 §9.3.8) and IIS's TRACK echo the request back, headers included: through an
 * intercepted tunnel that would show the workspace the credential the proxy injected. Never
 * forwarded, whatever a rule lists. Returns the reason, or undefined for any other method.
 */
export function reflectingMethod(method: string): string | undefined {
  const m = method.toUpperCase();
  return m === 'TRACE' || m === 'TRACK' ? `method ${m} is never forwarded: it echoes the request, credentials included` : undefined;
}

export function decide(target: Target, rules: readonly CompiledRule[]): Decision {
  const port = target.port ?? (target.kind === 'connect' ? DEFAULT_CONNECT_PORT : DEFAULT_HTTP_PORT);
  const n = normaliseHost(target.host);
  if (n.kind === 'invalid') return { action: 'deny', reason: `invalid host: ${n.reason}`, host: target.host.slice(0, MAX_ECHOED_HOST), port, malformed: true };
  if (n.kind === 'ip') {
    return { action: 'deny', reason: 'IP addresses are never allowed: connect by host name', host: n.host, port };
  }
  const host = n.host;

  // Candidates in order of preference: most specific host match, then rules that carry
  // credentials (a credential rule for a host must not be shadowed by a plain allowlist entry),
  // then rule order.
  const candidates = rules
    .map((r, index) => ({ r, index, spec: specificity(r.patterns, host) }))
    .filter((c) => c.spec >= 0)
    .sort((a, b) => (b.spec - a.spec)
      || (Number(Boolean(b.r.rule.credentials)) - Number(Boolean(a.r.rule.credentials)))
      || (a.index - b.index));
  if (candidates.length === 0) return { action: 'deny', reason: `host ${host} is not in the allowlist`, host, port };

  let firstMiss: string | undefined;
  let firstMissRule: string | undefined;
  for (const { r } of candidates) {
    const rule = r.rule;
    const miss = (reason: string) => {
      if (firstMiss === undefined) {
        firstMiss = reason;
        firstMissRule = rule.id;
      }
    };
    const ports = allowedPorts(rule, target.kind);
    if (!ports.includes(port)) {
      miss(`port ${port} is not allowed for ${host} (allowed: ${ports.join(', ')})`);
      continue;
    }
    if (target.kind === 'http') {
      if (rule.credentials) {
        miss(`rule ${rule.id} injects credentials, which is only done over HTTPS: use https://${host}`);
        continue;
      }
      const method = (target.method ?? 'GET').toUpperCase();
      const reflecting = reflectingMethod(method);
      if (reflecting) {
        miss(reflecting);
        continue;
      }
      if (!methodAllowed(rule.methods, method)) {
        miss(`method ${method} is not allowed for ${host}`);
        continue;
      }
      if (!pathAllowed(rule.paths, target.path ?? '/')) {
        miss(`path ${target.path ?? '/'} is not allowed for ${host}`);
        continue;
      }
    }
    const action: Action = rule.credentials && target.kind === 'connect' ? 'intercept' : 'tunnel';
    return { action, ruleId: rule.id, reason: action === 'intercept' ? 'credential rule' : 'allowed', host, port, rule };
  }
  return { action: 'deny', ...(firstMissRule ? { ruleId: firstMissRule } : {}), reason: firstMiss!, host, port };
}
