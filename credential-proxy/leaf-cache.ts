// Leaf certificates for intercepted hosts, minted on first use and kept in a small LRU.
//
// One key serves every leaf of the process, and minting a leaf is one CA signature. The cache holds ready TLS contexts, so a new
// intercepted connection to a known host costs only the handshake.
import type { SecureContext } from 'node:tls';
import { tls } from '../lib/builtins.ts';
import { issueCertificate, type CertificateAuthority, type KeyPair } from '../lib/certs.ts';

export const LEAF_CACHE_SIZE = 256;
/** A leaf this close to its end is re-minted (unless the CA itself ends first). */
const RENEW_BEFORE_MS = 10 * 60_000;

export interface Leaf {
  readonly host: string;
  readonly certPem: string;
  readonly notAfter: Date;
  readonly context: SecureContext;
}

export interface LeafCacheOptions {
  ca: CertificateAuthority;
  /** The process's one leaf key (the proxy uses ECDSA P-256: cheap handshakes, made in well under 1 ms). */
  keyPair: KeyPair;
  max?: number;
  /** Capped at the CA's end by issueCertificate. */
  validityMs?: number;
  now?: () => number;
}

export class LeafCache {
  readonly #ca: CertificateAuthority;
  readonly #keyPair: KeyPair;
  readonly #max: number;
  readonly #validityMs: number;
  readonly #now: () => number;
  // A Map iterates in insertion order: re-inserting on use makes the first key the least recent.
  readonly #leaves = new Map<string, Leaf>();
  #minted = 0;

  constructor(options: LeafCacheOptions) {
    this.#ca = options.ca;
    this.#keyPair = options.keyPair;
    this.#max = Math.max(1, options.max ?? LEAF_CACHE_SIZE);
    this.#validityMs = options.validityMs ?? 24 * 3600_000;
    this.#now = options.now ?? Date.now;
  }

  /** The leaf for `host` (already normalised by the proxy: lower case, no trailing dot, punycode). */
  get(host: string): Leaf {
    const cached = this.#leaves.get(host);
    if (cached && !this.#dueForRenewal(cached)) {
      this.#leaves.delete(host);
      this.#leaves.set(host, cached);
      return cached;
    }
    const leaf = this.#mint(host);
    this.#leaves.delete(host);
    this.#leaves.set(host, leaf);
    while (this.#leaves.size > this.#max) {
      const oldest = this.#leaves.keys().next().value as string;
      this.#leaves.delete(oldest);
    }
    return leaf;
  }

  get size(): number {
    return this.#leaves.size;
  }

  /** Leaves minted since start (cache misses and renewals). */
  get minted(): number {
    return this.#minted;
  }

  has(host: string): boolean {
    return this.#leaves.has(host);
  }

  #dueForRenewal(leaf: Leaf): boolean {
    const end = leaf.notAfter.getTime();
    return end - this.#now() < RENEW_BEFORE_MS && end < this.#ca.notAfter.getTime();
  }

  #mint(host: string): Leaf {
    const issued = issueCertificate(this.#ca, { hosts: [host], validityMs: this.#validityMs, keyPair: this.#keyPair });
    this.#minted++;
    const context = tls().createSecureContext({ key: this.#keyPair.privateKeyPem, cert: issued.certPem, minVersion: 'TLSv1.2' });
    return { host, certPem: issued.certPem, notAfter: issued.notAfter, context };
  }
}
