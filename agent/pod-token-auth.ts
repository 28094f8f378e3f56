// Per-pod agent tokens in the cluster: the backend mints, with its private key, a token for one
// Pod UID (lib/pod-token.ts, purpose `agent`); the agent holds only the public keys (a ConfigMap
// the webhook mounts, several keys allowed for rotation, re-read on change) and its own UID (the
// downward API). A token for another workspace, for /rules, expired or forged is refused, so a Pod
// that reaches this port (another workspace, anything in `backend` but the backend) cannot run
// commands here.
import { PodTokenVerifier, type PodTokenResult } from '../lib/pod-token.ts';

export interface PodTokenAuthConfig {
  readonly publicKeysFile: string;
  readonly podUid: string;
}

export type AgentTokenCheck = (authorization: string | undefined) => Promise<PodTokenResult>;

/** Checks `Authorization: Bearer <token>` against the public keys for this Pod's UID. */
export function podTokenAuth(config: PodTokenAuthConfig): AgentTokenCheck {
  const verifier = new PodTokenVerifier(config.publicKeysFile);
  return async (authorization) => {
    const m = authorization === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (m === null) return { ok: false, reason: 'no bearer token' };
    return verifier.verify(m[1], { purpose: 'agent', podUid: config.podUid });
  };
}
