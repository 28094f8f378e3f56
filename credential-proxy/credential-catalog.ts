// The credentials this sidecar may ever inject, declared in its own configuration
// (CREDENTIALS_FILE): name → how it is injected, where its value comes from, and the only hosts it
// may be sent to. Rules (from any source, including /rules) refer to a credential by name and can
// neither choose its source nor widen its hosts: a leaked /rules token can at most send a
// credential to a host its declaration already allows.
//
//   credentials:
//     github:
//       hosts: [api.github.com]
//       type: header
//       header: authorization
//       value: { file: /var/run/secrets/github/token }
//       format: "Bearer {value}"
//     bedrock:
//       hosts: [bedrock-runtime.us-east-1.amazonaws.com]
//       type: aws-sigv4
//       service: bedrock
//       region: us-east-1
import { z } from 'zod';
import { ConfigError, problemsFromZod, readConfigFile } from '../lib/config.ts';
import { awsSigV4CredentialSchema, headerCredentialSchema, type CredentialSpec } from './credential-spec.ts';
import { CREDENTIAL_NAME, parseHostPattern, type HostPattern } from './rules.ts';

export interface DeclaredCredential {
  readonly name: string;
  /** Host patterns as declared (`api.example.com`, `*.example.com`). */
  readonly hosts: readonly string[];
  readonly patterns: readonly HostPattern[];
  /** What the interceptor does with it. */
  readonly inject: CredentialSpec;
}

export type CredentialCatalog = ReadonlyMap<string, DeclaredCredential>;

export const EMPTY_CATALOG: CredentialCatalog = new Map();

const hostsSchema = z.array(z.string().min(1).superRefine((value, ctx) => {
  const parsed = parseHostPattern(value);
  if (parsed.kind === 'invalid') ctx.addIssue({ code: 'custom', message: parsed.reason });
})).min(1, 'must name at least one host the credential may be sent to');

// The file's shape: `header` names the header (the injection spec calls it `name`, which here is
// the credential's own name).
const declarationSchema = z.discriminatedUnion('type', [
  headerCredentialSchema.omit({ name: true }).extend({ hosts: hostsSchema, header: headerCredentialSchema.shape.name }).strict(),
  awsSigV4CredentialSchema.extend({ hosts: hostsSchema }).strict(),
]);

export const credentialsFileSchema = z.object({
  credentials: z.record(z.string().regex(CREDENTIAL_NAME, 'credential names are 1-63 characters of a-z, 0-9, ".", "_", "-"'), declarationSchema),
}).strict();

/** Validates a parsed CREDENTIALS_FILE document (every problem at once) into a frozen catalog. */
export function parseCredentialCatalog(input: unknown, source: string): CredentialCatalog {
  const parsed = credentialsFileSchema.safeParse(input);
  if (!parsed.success) throw new ConfigError(source, problemsFromZod(parsed.error, input));
  const catalog = new Map<string, DeclaredCredential>();
  for (const [name, d] of Object.entries(parsed.data.credentials)) {
    const inject: CredentialSpec = d.type === 'header'
      ? { type: 'header', name: d.header, value: d.value, ...(d.format !== undefined ? { format: d.format } : {}) }
      : { type: 'aws-sigv4', service: d.service, region: d.region };
    catalog.set(name, Object.freeze({
      name,
      hosts: Object.freeze([...d.hosts]),
      patterns: Object.freeze(d.hosts.map((h) => parseHostPattern(h) as HostPattern)),
      inject: Object.freeze(inject),
    }));
  }
  return catalog;
}

export function loadCredentialCatalog(path: string): CredentialCatalog {
  return parseCredentialCatalog(readConfigFile(path), `credentials file ${path}`);
}
