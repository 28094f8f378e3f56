// The `credentials` part of a proxy rule: what the proxy adds to an intercepted request.
// Shared by the rule schema (validation, /rules API) and the interceptor (injection).
import { z } from 'zod';

/** A header name per RFC 9110 token syntax; lower-cased so comparisons are exact. */
const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be an HTTP header name').transform((s) => s.toLowerCase());

/** Where a secret value comes from. `literal` exists for per-conversation credentials set through /rules. */
export const secretSourceSchema = z.union([
  z.object({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }).strict(),
  z.object({ file: z.string().startsWith('/', 'must be an absolute path') }).strict(),
  z.object({ literal: z.string().min(1, 'must not be empty') }).strict(),
]);

export const headerCredentialSchema = z.object({
  type: z.literal('header'),
  name: headerName,
  value: secretSourceSchema,
  /** Template with `{value}`, e.g. `Bearer {value}`; default: the value alone. */
  format: z.string().includes('{value}', { message: 'must contain {value}' }).optional(),
}).strict();

export const awsSigV4CredentialSchema = z.object({
  type: z.literal('aws-sigv4'),
  /** Signing name: `bedrock` for `bedrock-runtime.*` hosts. */
  service: z.string().regex(/^[a-z0-9-]+$/, 'must be an AWS signing name'),
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'must be an AWS region such as us-east-1'),
}).strict();

export const credentialSpecSchema = z.discriminatedUnion('type', [headerCredentialSchema, awsSigV4CredentialSchema]);

export type CredentialSpec = z.output<typeof credentialSpecSchema>;
export type SecretSource = z.output<typeof secretSourceSchema>;

export const REDACTED_LITERAL = '[REDACTED]';

/** The spec as GET /rules and logs show it: literal secret values never leave the process. */
export function redactCredentialSpec(spec: CredentialSpec): CredentialSpec {
  if (spec.type === 'header' && 'literal' in spec.value) return { ...spec, value: { literal: REDACTED_LITERAL } };
  return spec;
}
