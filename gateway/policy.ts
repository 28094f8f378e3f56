// "May this pod's tunnel to host:port leave the cluster?", the gateway's whole answer in one place.
// The sidecar already applied the pod's own rules; the gateway trusts none of that and re-applies
// what holds for every workspace: names only (never an IP literal), the allowed ports, the optional
// cluster-wide ceiling (through the proxy's decide()), and the SSRF guard on the addresses it
// resolves itself. The address returned is the one to dial: the name is never looked up again.
import { decide } from '../credential-proxy/decide.ts';
import { classifyAddress, isLocalAddress, type AddressClass } from '../credential-proxy/address.ts';
import { parseAuthority } from '../credential-proxy/connect.ts';
import type { Resolver, ResolvedAddress } from '../credential-proxy/resolve.ts';
import { compileRule, normaliseHost, type CompiledRule, type Rule } from '../credential-proxy/rules.ts';
import { cidrContains, type Cidr } from './lab-ranges.ts';

export interface PolicyOptions {
  ports: readonly number[];
  ceiling: readonly Rule[] | undefined;
  labCidrs: readonly Cidr[];
  resolver: Resolver;
  /** This host's interface addresses: never dialled, whatever their class (a gateway on a public IP). */
  localAddresses: ReadonlySet<string>;
}

export type Verdict =
  | { ok: true; host: string; port: number; address: string; family: 4 | 6 }
  | { ok: false; status: 400 | 403 | 502; reason: string; host: string; port: number; addressClass?: AddressClass };

export interface Policy {
  check(authority: string): Promise<Verdict>;
}

export function createPolicy(o: PolicyOptions): Policy {
  const ceiling: readonly CompiledRule[] | undefined = o.ceiling?.map((r) => compileRule(r, 'env'));
  const allowed = (address: string) => {
    const c = classifyAddress(address);
    return { c, ok: c.public || (c.class !== 'invalid' && o.labCidrs.some((cidr) => cidrContains(cidr, address))) };
  };
  return {
    async check(authority) {
      const a = parseAuthority(authority);
      if (!a) return { ok: false, status: 400, reason: 'CONNECT needs an authority-form target (host:port)', host: authority.slice(0, 300), port: 0 };
      const n = normaliseHost(a.host);
      if (n.kind === 'invalid') return { ok: false, status: 400, reason: `invalid host: ${n.reason}`, host: a.host.slice(0, 300), port: a.port };
      if (n.kind === 'ip') return { ok: false, status: 403, reason: 'IP addresses are never allowed: connect by host name', host: n.host, port: a.port };
      const host = n.host;
      if (!o.ports.includes(a.port)) return { ok: false, status: 403, reason: `port ${a.port} is not open at the gateway (allowed: ${o.ports.join(', ')})`, host, port: a.port };
      if (ceiling) {
        const d = decide({ kind: 'connect', host, port: a.port }, ceiling);
        if (d.action === 'deny') return { ok: false, status: 403, reason: `beyond the cluster-wide ceiling: ${d.reason}`, host, port: a.port };
      }
      let answers: ResolvedAddress[];
      try {
        answers = await o.resolver(host);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        return { ok: false, status: 502, reason: `cannot resolve ${host}: ${code === 'ENOTFOUND' || code === 'ENODATA' ? 'no such host' : 'name resolution failed'}`, host, port: a.port };
      }
      if (answers.length === 0) return { ok: false, status: 502, reason: `cannot resolve ${host}: no addresses`, host, port: a.port };
      // One bad answer taints the name: a round-robin with a private member is a rebinding attempt.
      for (const answer of answers) {
        const { c, ok } = allowed(answer.address);
        if (!ok) return { ok: false, status: 403, reason: `${host} resolves to a non-public address (${c.class})`, host, port: a.port, addressClass: c.class };
        if (isLocalAddress(answer.address, o.localAddresses)) return { ok: false, status: 403, reason: `${host} resolves to the gateway's own host`, host, port: a.port, addressClass: c.class };
      }
      const first = answers[0]!;
      return { ok: true, host, port: a.port, address: first.address, family: first.family };
    },
  };
}
