// AWS Signature Version 4 for intercepted requests (Bedrock and any AWS API a rule names).
//
// Credentials come from the AWS SDK's default Node chain, which covers EKS Pod Identity
// (AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE), IRSA (web identity
// token) and plain env keys; the chain caches them and refreshes before expiry. The proxy signs
// over the whole buffered body because Bedrock requires the payload hash in the signature.
import type * as SmithySerde from '@smithy/core/serde';
import type * as SmithyHttp from '@smithy/protocol-http';
import type * as SmithySigV4 from '@smithy/signature-v4';
import type { SignatureV4 } from '@smithy/signature-v4';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import type { SecretSet } from '../lib/log.ts';
import type { CredentialSpec } from './credential-spec.ts';

type SigV4Credential = Extract<CredentialSpec, { type: 'aws-sigv4' }>;

export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
  readonly expiration?: Date;
}

/** The shape of every AWS SDK credential provider (memoised by the SDK's chain). */
export type AwsCredentialsProvider = () => Promise<AwsCredentials>;

/**
 * The SDK's default Node chain (@aws-sdk/credential-provider-node: env keys, IRSA web identity,
 * Pod Identity's container endpoint, profiles, IMDS; what `fromNodeProviderChain` of the larger
 * @aws-sdk/credential-providers wraps), loaded on first use: most pods sign nothing, and its
 * module graph is a sizeable part of the proxy's start-up time.
 */
function defaultChain(): AwsCredentialsProvider {
  let chain: Promise<AwsCredentialsProvider> | undefined;
  return async () => {
    chain ??= import('@aws-sdk/credential-provider-node').then((m) => m.defaultProvider() as AwsCredentialsProvider);
    return (await chain)();
  };
}

/** Default cap on a body buffered for signing (BODY_SIGNING_CAP_BYTES). */
export const DEFAULT_SIGNING_BODY_CAP = 10 * 1024 * 1024;

/**
 * The signing name: `bedrock-runtime` is Bedrock's endpoint prefix, but its requests are signed
 * for `bedrock` (a rule naming the endpoint prefix would otherwise get every request rejected).
 */
export function signingName(service: string): string {
  return service === 'bedrock-runtime' ? 'bedrock' : service;
}

export interface SignableRequest {
  readonly method: string;
  /** Host header value (name, plus `:port` when not 443). */
  readonly host: string;
  /** Request target as received: path and raw query string. */
  readonly url: string;
  /** Lower-case names; client credentials and x-amz-* already removed. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export interface SigV4SignerOptions {
  /** Tests inject fixed credentials; production uses the SDK's default chain. */
  credentials?: AwsCredentialsProvider;
  secrets?: SecretSet;
}

export interface SigV4Signer {
  /** The headers to send: the input's plus x-amz-date, x-amz-security-token, authorization. */
  sign(spec: SigV4Credential, request: SignableRequest, signingDate?: Date): Promise<Record<string, string>>;
}

export function createSigV4Signer(options: SigV4SignerOptions = {}): SigV4Signer {
  const provider: AwsCredentialsProvider = options.credentials ?? defaultChain();
  const secrets = options.secrets;
  const credentials: AwsCredentialsProvider = async () => {
    let creds: AwsCredentials;
    try {
      creds = await provider();
    } catch (err) {
      throw new WorkspaceSandboxError('WS_ERR_UNAVAILABLE', `credential unavailable: no AWS credentials: ${(err as Error).message}`, { cause: err });
    }
    secrets?.add(creds.secretAccessKey);
    secrets?.add(creds.sessionToken);
    return creds;
  };
  // The signer modules are loaded when a SigV4 rule first signs: most pods never do, and their
  // module graph is a sizeable part of the proxy's start-up time and memory.
  let modules: Promise<[typeof SmithySigV4, typeof SmithyHttp, typeof SmithySerde]> | undefined;
  const load = () => modules ??= Promise.all([import('@smithy/signature-v4'), import('@smithy/protocol-http'), import('@smithy/core/serde')]);
  const signers = new Map<string, SignatureV4>();
  const signerFor = (Signer: typeof SignatureV4, Hash: typeof SmithySerde.Hash, service: string, region: string) => {
    const key = `${service}\0${region}`;
    let signer = signers.get(key);
    if (!signer) {
      // The SDK's own Node hash (node:crypto), bound to SHA-256 as the SDK's clients bind it: the
      // pure-JS @aws-crypto/sha256-js hashes a 10 MiB body in ~150 ms on this machine kind against
      // ~8 ms here, and would block the event loop for every other request meanwhile.
      // applyChecksum false: like the SDK for every service but S3, no x-amz-content-sha256 header.
      const sha256 = Hash.bind(null, 'sha256');
      signer = new Signer({ service, region, credentials, sha256, uriEscapePath: true, applyChecksum: false });
      signers.set(key, signer);
    }
    return signer;
  };

  return {
    async sign(spec, request, signingDate) {
      const q = request.url.indexOf('?');
      const path = q === -1 ? request.url : request.url.slice(0, q);
      const query = q === -1 ? {} : parseQuery(request.url.slice(q + 1));
      const colon = request.host.lastIndexOf(':');
      const hostname = colon > 0 && !request.host.endsWith(']') ? request.host.slice(0, colon) : request.host;
      const [{ SignatureV4: Signer }, { HttpRequest }, { Hash }] = await load();
      const http = new HttpRequest({
        method: request.method,
        protocol: 'https:',
        hostname,
        path,
        query,
        headers: { ...request.headers, host: request.host },
        body: request.body,
      });
      const signed = await signerFor(Signer, Hash, signingName(spec.service), spec.region).sign(http, signingDate ? { signingDate } : {});
      return signed.headers as Record<string, string>;
    },
  };
}

/**
 * The query as the signer wants it: decoded keys and values (it re-encodes them per RFC 3986, as
 * AWS does on its side). `+` stays a plus: AWS canonicalisation is not form decoding.
 *
 * Not the SDK's parseQueryString (@smithy/core/transport): it is made for URLs the SDK built
 * itself, and on what a workspace sends it would break the signature or the proxy: a key without
 * a value (`?versions`, `?d=`) becomes null, which the signer leaves out of the canonical query
 * while AWS signs it as `d=`; `a=b=c` loses `=c`; and a malformed escape throws a URIError.
 */
export function parseQuery(raw: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decode(eq === -1 ? part : part.slice(0, eq));
    const value = eq === -1 ? '' : decode(part.slice(eq + 1));
    const prev = out[key];
    if (prev === undefined) out[key] = value;
    else out[key] = Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return out;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
