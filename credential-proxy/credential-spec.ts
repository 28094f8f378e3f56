// How a declared credential is injected into an intercepted request. Declared only in the
// sidecar's CREDENTIALS_FILE (credential-catalog.ts); rules name a credential, never a spec.
import { z } from 'zod';

/** A header name per RFC 9110 token syntax; lower-cased so comparisons are exact. */
const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be an HTTP header name').transform((s) => s.toLowerCase());

/**
 * Where a secret value comes from: the sidecar's environment or a file mounted into it. There is
 * no literal form: a value that travels in a rule would be stored and replayed wherever the rule
 * is (a store, a state file, a log), and could be steered by whoever writes rules.
 */
export const secretSourceSchema = z.union([
  z.object({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }).strict(),
  z.object({ file: z.string().startsWith('/', 'must be an absolute path') }).strict(),
]);

export const headerCredentialSchema = z.object({
  type: z.literal('header'),
  name: headerName,
  value: secretSourceSchema,
  /** Template with `{value}`, e.g. `Bearer {value}`; default: the value alone. */
  format: z.string().includes('{value}', { message: 'must contain {value}' })
    .refine((f) => !/[\r\n\0]/.test(f), 'must not contain CR, LF or NUL (header injection)').optional(),
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
