// Name resolution in the proxy, checked: every address the name resolves to must pass the SSRF
// guard (one bad answer taints the name: a round-robin with a private member is an attack), and
// the caller dials the returned address, never the name again (a second lookup is where DNS
// rebinding would swap in 169.254.169.254).
import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { classifyAddress, isLocalAddress, metadataEndpoint, type AddressClass } from './address.ts';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Injectable so tests can map names to local upstreams and stage rebinding attacks. */
export type Resolver = (host: string) => Promise<ResolvedAddress[]>;

const LOOPBACK_ANSWERS: readonly ResolvedAddress[] = Object.freeze([{ address: '127.0.0.1', family: 4 }, { address: '::1', family: 6 }]);

/**
 * The system resolver (getaddrinfo: /etc/hosts, then DNS), all answers in resolver order.
 * `localhost` and `*.localhost` are loopback without asking anyone (RFC 6761 §6.3), so a DNS server
 * can never point them elsewhere; the SSRF guard then refuses them unless a rule allows private.
 */
export const systemResolver: Resolver = async (host) => {
  const name = host.toLowerCase().replace(/\.$/, '');
  if (name === 'localhost' || name.endsWith('.localhost')) return LOOPBACK_ANSWERS.map((a) => ({ ...a }));
  const answers = await lookup(host, { all: true, order: 'verbatim' });
  return answers.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

/** Answers `entries` (`name=address`) itself and asks `fallback` for every other name. */
export function staticHostsResolver(entries: readonly string[], fallback: Resolver): Resolver {
  if (entries.length === 0) return fallback;
  const table = new Map<string, ResolvedAddress[]>();
  for (const entry of entries) {
    const i = entry.indexOf('=');
    const name = entry.slice(0, i).toLowerCase().replace(/\.$/, '');
    const address = entry.slice(i + 1);
    const list = table.get(name) ?? [];
    list.push({ address, family: address.includes(':') ? 6 : 4 });
    table.set(name, list);
  }
  return async (host) => {
    const hit = table.get(host.toLowerCase().replace(/\.$/, ''));
    return hit ? hit.map((a) => ({ ...a })) : fallback(host);
  };
}

export interface OwnListeners {
  /** Ports this process listens on (proxy, admin). */
  ports: ReadonlySet<number>;
  /** Addresses of this host's interfaces: in a Pod, the Pod IP reaches the admin port too. */
  localAddresses: ReadonlySet<string>;
}

export function localInterfaceAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) out.add(i.address.toLowerCase());
  return out;
}

export interface ResolveOptions {
  resolver: Resolver;
  allowPrivate: boolean;
  own: OwnListeners;
  port: number;
}

export type ResolveFailure = 'denied-address' | 'metadata' | 'own-listener' | 'no-address' | 'dns';

/** A resolution that must not be dialled. `status` 403 for policy, 502 for DNS failures. */
export class ResolveError extends WorkspaceSandboxError {
  readonly failure: ResolveFailure;
  readonly addressClass: AddressClass | undefined;

  constructor(failure: ResolveFailure, message: string, addressClass?: AddressClass, cause?: unknown) {
    super(failure === 'dns' || failure === 'no-address' ? 'WS_ERR_BAD_GATEWAY' : 'WS_ERR_FORBIDDEN', message, { cause });
    this.name = 'ResolveError';
    this.failure = failure;
    this.addressClass = addressClass;
  }
}

/** True when dialling address:port would reach one of this proxy's own listeners. */
export function reachesOwnListener(address: string, port: number, own: OwnListeners): boolean {
  return own.ports.has(port) && isLocalAddress(address, own.localAddresses);
}

/**
 * Resolves `host` and checks every answer. Returns the first answer, which is the address to
 * dial. Messages name the class of a refused address, never the address itself.
 */
export async function resolveChecked(host: string, options: ResolveOptions): Promise<ResolvedAddress> {
  let answers: ResolvedAddress[];
  try {
    answers = await options.resolver(host);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOTFOUND' || code === 'ENODATA' ? 'no such host' : 'name resolution failed';
    throw new ResolveError('dns', `cannot resolve ${host}: ${why}`, undefined, err);
  }
  if (answers.length === 0) throw new ResolveError('no-address', `cannot resolve ${host}: no addresses`);
  for (const a of answers) {
    const c = classifyAddress(a.address);
    // Credential endpoints stay closed whatever the rule says, allowPrivate included.
    const metadata = metadataEndpoint(a.address);
    if (metadata) throw new ResolveError('metadata', `${host} resolves to ${metadata}, which the proxy never connects to`, c.class);
    // Even with allowPrivate a rule never reaches the proxy itself (mitmproxy CVE-2025-23217:
    // a workspace tunnelling to the admin port would rewrite its own egress rules).
    if (reachesOwnListener(a.address, options.port, options.own)) {
      throw new ResolveError('own-listener', `${host}:${options.port} is this proxy's own listener`, c.class);
    }
    if (!c.public && !options.allowPrivate) {
      throw new ResolveError('denied-address', `${host} resolves to a non-public address (${c.class})`, c.class);
    }
    if (c.class === 'invalid') throw new ResolveError('denied-address', `${host} resolved to something that is not an IP address`, c.class);
  }
  const first = answers[0]!;
  return { address: first.address, family: first.family };
}
