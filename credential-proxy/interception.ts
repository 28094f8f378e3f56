// The seam between the egress proxy (CONNECT handling, decisions, SSRF checks) and TLS
// interception (per-pod CA, credential injection). The proxy decides and checks the address; the
// interceptor takes over the client socket only for CONNECTs whose decision is `intercept`.
import type { Duplex } from 'node:stream';
import type { CredentialSpec } from './credential-spec.ts';

/** What interception needs of the matched rule. */
export interface InterceptRule {
  readonly id: string;
  readonly methods?: readonly string[];
  readonly paths?: readonly string[];
  readonly credentials: CredentialSpec;
}

export interface InterceptTarget {
  /** The CONNECT host, normalised (lower case, no trailing dot, punycode). */
  readonly host: string;
  readonly port: number;
  /** The resolved address that passed the SSRF check: the only address to dial. */
  readonly address: string;
  readonly family: 4 | 6;
  readonly rule: InterceptRule;
}

export interface Interceptor {
  /**
   * Takes over a CONNECT the proxy decided to intercept. Nothing has been written to the socket
   * yet: the interceptor answers `200 Connection Established` itself.
   */
  handleConnect(clientSocket: Duplex, head: Buffer, target: InterceptTarget): void;
  /** Resolves once the CA files are written (gates /readyz). */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}
