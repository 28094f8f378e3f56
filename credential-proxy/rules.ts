// Egress rules: the schema (zod), host normalisation and host-pattern parsing, and rule-set
// validation that lists every problem at once. Pure: no I/O, so the admin API, the rules file
// loader, the Redis store and decide() all agree on what a rule is.
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { createRequire } from 'node:module';
import type * as Tldts from 'tldts';
import { z } from 'zod';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { problemsFromZod, type ConfigProblem } from '../lib/config.ts';
import type { CredentialCatalog } from './credential-catalog.ts';
import type { CredentialSpec } from './credential-spec.ts';

export const DEFAULT_CONNECT_PORT = 443;
export const DEFAULT_HTTP_PORT = 80;

/** What a host string is once normalised. */
export type NormalisedHost =
  | { kind: 'name'; host: string }
  | { kind: 'ip'; host: string; family: 4 | 6 }
  | { kind: 'invalid'; reason: string };

// A raw host may only hold what a DNS name or an IP literal can hold; anything else ('%', '@',
// '/', spaces, control characters) is a parser-differential attempt, not a name. Non-ASCII letters
// are allowed: IDN names arrive in Unicode from some clients.
const HOST_CHARS = /^[\p{L}\p{M}\p{N}._-]+$/u;
const MAX_HOST_LENGTH = 253;

/**
 * Lower-cases, drops one trailing dot, converts IDN to punycode, and recognises IP literals in
 * every form the WHATWG host parser accepts (`127.1`, `0x7f.0.0.1`, `2130706433`, `[::1]`), so
 * no spelling of an address can pass as a name.
 */
export function normaliseHost(raw: string): NormalisedHost {
  if (raw.length === 0) return { kind: 'invalid', reason: 'empty host' };
  // RFC 6874 zone ids (`[fe80::1%25eth0]`, `[::1%lo]`) name an interface of the sender's host:
  // meaningless for an upstream, and the WHATWG URL parser (our canonicaliser) rejects them.
  if (raw.includes('%') && (raw.startsWith('[') || raw.includes(':'))) return { kind: 'invalid', reason: 'IPv6 zone identifiers (%) are not allowed in a host' };
  if (raw.startsWith('[') && raw.endsWith(']')) {
    const inner = raw.slice(1, -1);
    const host = isIP(inner) === 6 ? canonicalIPv6(inner) : undefined;
    if (host !== undefined) return { kind: 'ip', host, family: 6 };
    return { kind: 'invalid', reason: 'malformed IPv6 literal' };
  }
  if (isIP(raw) === 6) {
    const host = canonicalIPv6(raw);
    return host === undefined ? { kind: 'invalid', reason: 'malformed IPv6 literal' } : { kind: 'ip', host, family: 6 };
  }
  if (!HOST_CHARS.test(raw)) return { kind: 'invalid', reason: 'host contains characters a DNS name cannot hold' };
  const trimmed = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  if (trimmed.length === 0 || trimmed.endsWith('.') || trimmed.startsWith('.') || trimmed.includes('..')) {
    return { kind: 'invalid', reason: 'empty label in host' };
  }
  const ascii = domainToASCII(trimmed);
  if (ascii === '') return { kind: 'invalid', reason: 'not a valid host name' };
  if (isIP(ascii) === 4) return { kind: 'ip', host: ascii, family: 4 };
  if (ascii.length > MAX_HOST_LENGTH) return { kind: 'invalid', reason: 'host name too long' };
  if (ascii.split('.').some((label) => label.length > 63)) return { kind: 'invalid', reason: 'host label too long' };
  return { kind: 'name', host: ascii.toLowerCase() };
}

/**
 * `::FFFF:7F00:1` → `::ffff:7f00:1`: one spelling per address, through the URL serialiser.
 * Undefined for anything node:net accepts but the URL parser does not: no input may throw here.
 */
function canonicalIPv6(address: string): string | undefined {
  return URL.parse(`http://[${address}]/`)?.hostname.slice(1, -1);
}

/** A parsed host pattern: an exact name, or `*.suffix` matching every name below suffix (not suffix itself). */
export type HostPattern = { kind: 'exact'; host: string } | { kind: 'wildcard'; suffix: string };

export function parseHostPattern(raw: string): HostPattern | { kind: 'invalid'; reason: string } {
  if (raw.startsWith('*.')) {
    const rest = raw.slice(2);
    if (rest.includes('*')) return { kind: 'invalid', reason: 'only one leading "*." is allowed' };
    const n = normaliseHost(rest);
    if (n.kind === 'invalid') return n;
    if (n.kind === 'ip') return { kind: 'invalid', reason: 'a wildcard must be over a domain name, not an IP address' };
    // `*.com` would open a whole TLD; require at least two labels under the wildcard.
    if (!n.host.includes('.')) return { kind: 'invalid', reason: 'a wildcard needs at least two labels after "*." (e.g. *.example.com)' };
    // `*.co.uk` or `*.github.io` would match names registered by unrelated parties: refuse a
    // wildcard over any suffix on the Public Suffix List (ICANN and private sections).
    if (isPublicSuffix(n.host)) return { kind: 'invalid', reason: `${n.host} is a public suffix (Public Suffix List): a wildcard over it matches names owned by unrelated parties; name the hosts` };
    return { kind: 'wildcard', suffix: n.host };
  }
  if (raw.includes('*')) return { kind: 'invalid', reason: '"*" is only allowed as a whole leading label ("*.example.com")' };
  const n = normaliseHost(raw);
  if (n.kind === 'invalid') return n;
  if (n.kind === 'ip') return { kind: 'invalid', reason: 'IP addresses are not allowed in rules: name the host' };
  return { kind: 'exact', host: n.host };
}

/** True when `host` is itself a public suffix (`co.uk`, `github.io`, `s3.amazonaws.com`). */
// tldts (the Public Suffix List, ~7 MB resident once loaded) is loaded on the first wildcard
// checked: a proxy whose rules name exact hosts never pays for it.
let tldts: typeof Tldts | undefined;
export function isPublicSuffix(host: string): boolean {
  tldts ??= createRequire(import.meta.url)('tldts') as typeof Tldts;
  return tldts.getPublicSuffix(host, { allowPrivateDomains: true }) === host;
}

/** True when every name `inner` matches is also matched by `outer`. */
export function patternCovers(outer: HostPattern, inner: HostPattern): boolean {
  if (inner.kind === 'exact') return hostMatches(outer, inner.host);
  return outer.kind === 'wildcard' && (inner.suffix === outer.suffix || inner.suffix.endsWith(`.${outer.suffix}`));
}

export function hostMatches(pattern: HostPattern, host: string): boolean {
  if (pattern.kind === 'exact') return pattern.host === host;
  return host.length > pattern.suffix.length + 1 && host.endsWith(`.${pattern.suffix}`);
}

const METHOD = /^[A-Z]+$/;
export const CREDENTIAL_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Paths are exact (`/v1/models`) or a prefix ending in `*` (`/model/*`); compared without the query string. */
const pathPattern = z.string().min(1).refine((p) => p.startsWith('/'), 'must start with "/"')
  .refine((p) => !p.slice(0, -1).includes('*'), '"*" is only allowed at the end')
  .refine((p) => !/[?#]/.test(p), 'must not contain "?" or "#"');

const hostPatternSchema = z.string().min(1, 'must not be empty').superRefine((value, ctx) => {
  const parsed = parseHostPattern(value);
  if (parsed.kind === 'invalid') ctx.addIssue({ code: 'custom', message: parsed.reason });
});

export const ruleSchema = z.object({
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:*-]{0,127}$/, 'must be 1-128 characters of letters, digits, ".", "_", ":", "*", "-"'),
  hosts: z.array(hostPatternSchema).min(1, 'must name at least one host'),
  ports: z.array(z.number().int().min(1, 'must be 1-65535').max(65535, 'must be 1-65535')).min(1).optional(),
  methods: z.array(z.string().transform((m) => m.toUpperCase()).pipe(z.string().regex(METHOD, 'must be an HTTP method'))).min(1).optional(),
  paths: z.array(pathPattern).min(1).optional(),
  allowPrivate: z.boolean().optional(),
  /**
   * The name of a credential declared in the sidecar's CREDENTIALS_FILE. A rule never carries a
   * credential or says where one comes from: it can only point at one the sidecar declares, for
   * hosts that credential allows.
   */
  credential: z.string().regex(CREDENTIAL_NAME, 'must be the name of a credential declared in the sidecar\'s CREDENTIALS_FILE').optional(),
}).strict();

export type RuleInput = z.input<typeof ruleSchema>;
/** A rule as written (API, rules file, store). */
export type RuleSpec = z.output<typeof ruleSchema>;
/** A rule as enforced: `credentials` is the declared credential `credential` names, resolved by compileRule. */
export type Rule = RuleSpec & { readonly credentials?: CredentialSpec };

export const ruleListSchema = z.array(ruleSchema);

/** A rule with its host patterns parsed once, for decide(). */
export interface CompiledRule {
  readonly rule: Rule;
  readonly patterns: readonly HostPattern[];
  readonly source: RuleSource;
}

export type RuleSource = 'env' | 'file' | 'global' | 'api';

export function compileRule(rule: RuleSpec, source: RuleSource, catalog: CredentialCatalog = new Map()): CompiledRule {
  const patterns = rule.hosts.map((h) => {
    const p = parseHostPattern(h);
    if (p.kind === 'invalid') throw new WorkspaceSandboxError('WS_ERR_VALIDATION', `rule ${rule.id}: host ${h}: ${p.reason}`);
    return p;
  });
  let enforced: Rule = rule;
  if (rule.credential !== undefined) {
    const declared = catalog.get(rule.credential);
    const problem = credentialProblem(rule, patterns, catalog);
    if (!declared || problem) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', `rule ${rule.id}: ${problem ?? 'unknown credential'}`);
    enforced = { ...rule, credentials: declared.inject };
  }
  return Object.freeze({ rule: enforced, patterns: Object.freeze(patterns), source });
}

/** Why `rule` may not use the credential it names (unknown, or hosts beyond the credential's), or undefined. */
function credentialProblem(rule: RuleSpec, patterns: readonly HostPattern[], catalog: CredentialCatalog): string | undefined {
  if (rule.credential === undefined) return undefined;
  const declared = catalog.get(rule.credential);
  if (!declared) {
    const known = [...catalog.keys()];
    return `credential "${rule.credential}" is not declared in this sidecar's CREDENTIALS_FILE (declared: ${known.length ? known.join(', ') : 'none'})`;
  }
  const wider = rule.hosts.filter((_, i) => !declared.patterns.some((outer) => patternCovers(outer, patterns[i]!)));
  if (wider.length > 0) return `credential "${rule.credential}" may only be sent to ${declared.hosts.join(', ')}: ${wider.join(', ')} ${wider.length === 1 ? 'is' : 'are'} outside`;
  return undefined;
}

export class RuleSetError extends WorkspaceSandboxError {
  readonly problems: readonly ConfigProblem[];

  constructor(source: string, problems: ConfigProblem[]) {
    const lines = problems.map((p) => `  - ${p.field}: ${p.message}`);
    super('WS_ERR_VALIDATION', `invalid rule set (${source}): ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${lines.join('\n')}`, { details: problems.map(({ field, message }) => ({ field, message })) });
    this.name = 'RuleSetError';
    this.problems = problems;
  }
}

/**
 * Validates a whole rule set: schema, then duplicate ids within it and against `reservedIds`
 * (rules from other sources), then each named credential against `catalog` (declared, and only
 * for hosts it allows; skipped without a catalog, as on the backend, which does not know each
 * sidecar's). Throws one RuleSetError with every problem; returns parsed rules.
 */
export function validateRules(input: unknown, source: string, reservedIds: ReadonlySet<string> = new Set(), catalog?: CredentialCatalog): RuleSpec[] {
  const parsed = ruleListSchema.safeParse(input);
  const problems: ConfigProblem[] = parsed.success ? [] : problemsFromZod(parsed.error, input);
  if (Array.isArray(input)) {
    const seen = new Map<string, number>();
    input.forEach((r: unknown, i) => {
      if (r !== null && typeof r === 'object' && 'credentials' in r) {
        problems.push({ field: `[${i}].credentials`, value: '(not shown)', message: 'a rule cannot carry a credential or say where one comes from: declare it in the sidecar\'s CREDENTIALS_FILE and name it with "credential": "<name>"' });
      }
      const id = (r as { id?: unknown } | null)?.id;
      if (typeof id !== 'string') return;
      if (seen.has(id)) problems.push({ field: `[${i}].id`, value: id, message: `duplicate id (also at [${seen.get(id)}])` });
      else seen.set(id, i);
      if (reservedIds.has(id)) problems.push({ field: `[${i}].id`, value: id, message: 'id is already used by a rule from ALLOWED_DOMAINS, the rules file or the global set' });
    });
  }
  if (parsed.success && catalog) {
    parsed.data.forEach((rule, i) => {
      const patterns = rule.hosts.map((h) => parseHostPattern(h) as HostPattern);
      const problem = credentialProblem(rule, patterns, catalog);
      if (problem) problems.push({ field: `[${i}].credential`, value: rule.credential, message: problem });
    });
  }
  if (problems.length > 0 || !parsed.success) throw new RuleSetError(source, problems);
  return parsed.data;
}

/** `ALLOWED_DOMAINS=a.example.com,*.b.example.com:8443` → one tunnel-only rule per entry. */
export function rulesFromAllowedDomains(entries: readonly string[]): RuleSpec[] {
  const input = entries.map((entry) => {
    const m = /^(.*?)(?::(\d+))?$/.exec(entry)!;
    const host = m[1]!;
    return { id: `env:${host}${m[2] ? `:${m[2]}` : ''}`, hosts: [host], ...(m[2] ? { ports: [Number(m[2])] } : {}) };
  });
  return validateRules(input, 'ALLOWED_DOMAINS');
}

