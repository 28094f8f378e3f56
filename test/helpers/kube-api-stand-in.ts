// A stand-in for the two Kubernetes API endpoints the egress gateway calls, because no real API
// server runs here. It follows the documented behaviour of kube-apiserver:
//  - POST /apis/authentication.k8s.io/v1/tokenreviews: a projected ServiceAccount token is
//    authenticated when its signature is the issuer's, it is within nbf..exp, one of its audiences
//    is in spec.audiences (status.audiences is that intersection), and the pod it is bound to still
//    exists with the same UID; the user is system:serviceaccount:<ns>:<sa> with
//    extra authentication.kubernetes.io/pod-name and pod-uid. Otherwise authenticated is false
//    with an error, and the HTTP status is still 201.
//    (https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-review-v1/,
//    https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-tokens)
//  - GET /api/v1/namespaces/{ns}/pods/{name}: the pod, or a 404 Status.
// Tokens are minted here as real JWTs (EdDSA over the standard claims of a projected token). It
// serves HTTPS with a CA made at test time, named in the kubeconfig it writes, like a real cluster.
import { createPrivateKey, generateKeyPairSync, randomUUID, sign, verify, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { listen } from '../../lib/server.ts';
import { makeTestPki } from './tls.ts';

export interface StandInPod {
  namespace: string;
  name: string;
  uid: string;
  serviceAccount: string;
  podIPs: string[];
}

export interface MintOptions {
  audiences?: string[];
  /** Seconds from now; negative for an expired token. */
  expiresIn?: number;
  /** Sign with another key (a forged token). */
  key?: KeyObject;
}

export interface KubeApiStandIn {
  readonly url: string;
  readonly server: Server;
  /** Requests seen, by kind: for asserting on caching. */
  readonly calls: { tokenReviews: number; podReads: number };
  addPod(pod: Omit<StandInPod, 'uid' | 'serviceAccount'> & Partial<Pick<StandInPod, 'uid' | 'serviceAccount'>>): StandInPod;
  deletePod(namespace: string, name: string): void;
  mint(pod: StandInPod, options?: MintOptions): string;
  /** A kubeconfig naming this server, written into `dir`. */
  writeKubeconfig(dir: string): string;
  close(): Promise<void>;
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

export async function startKubeApiStandIn(host = '127.0.0.1'): Promise<KubeApiStandIn> {
  const issuer = generateKeyPairSync('ed25519');
  const pods = new Map<string, StandInPod>();
  const calls = { tokenReviews: 0, podReads: 0 };
  const key = (ns: string, name: string) => `${ns}/${name}`;

  const review = (token: string, audiences: string[]) => {
    const unauth = (error: string) => ({ authenticated: false, error });
    const parts = token.split('.');
    if (parts.length !== 3) return unauth('invalid bearer token');
    if (!verify(null, Buffer.from(`${parts[0]}.${parts[1]}`), issuer.publicKey, Buffer.from(parts[2]!, 'base64url'))) {
      return unauth('invalid bearer token, square/go-jose: error in cryptographic primitive');
    }
    const c = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as {
      aud: string[]; exp: number; nbf: number; sub: string;
      'kubernetes.io': { namespace: string; pod: { name: string; uid: string }; serviceaccount: { name: string } };
    };
    const now = Math.floor(Date.now() / 1000);
    if (now >= c.exp) return unauth('invalid bearer token, service account token has expired');
    if (now < c.nbf) return unauth('invalid bearer token, service account token is not valid yet');
    const matched = audiences.length === 0 ? c.aud : c.aud.filter((a) => audiences.includes(a));
    if (matched.length === 0) return unauth('invalid bearer token, token audiences are invalid for the target audiences');
    const k8s = c['kubernetes.io'];
    const pod = pods.get(key(k8s.namespace, k8s.pod.name));
    if (!pod) return unauth(`invalid bearer token, pods "${k8s.pod.name}" not found`);
    if (pod.uid !== k8s.pod.uid) return unauth(`invalid bearer token, pod UID (${pod.uid}) does not match claim (${k8s.pod.uid})`);
    return {
      authenticated: true,
      audiences: matched,
      user: {
        username: c.sub,
        uid: randomUUID(),
        groups: ['system:serviceaccounts', `system:serviceaccounts:${k8s.namespace}`, 'system:authenticated'],
        extra: { 'authentication.kubernetes.io/pod-name': [k8s.pod.name], 'authentication.kubernetes.io/pod-uid': [k8s.pod.uid] },
      },
    };
  };

  const pki = makeTestPki([host]);
  const server = createServer({ cert: pki.certPem, key: pki.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      const url = (req.url ?? '').split('?')[0]!;
      if (req.method === 'POST' && url === '/apis/authentication.k8s.io/v1/tokenreviews') {
        calls.tokenReviews++;
        const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as { spec?: { token?: string; audiences?: string[] } };
        return send(201, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: body.spec, status: review(body.spec?.token ?? '', body.spec?.audiences ?? []) });
      }
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url);
      if (req.method === 'GET' && m) {
        calls.podReads++;
        const pod = pods.get(key(m[1]!, m[2]!));
        if (!pod) return send(404, { apiVersion: 'v1', kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404, message: `pods "${m[2]}" not found` });
        return send(200, {
          apiVersion: 'v1', kind: 'Pod', metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid },
          spec: { serviceAccountName: pod.serviceAccount }, status: { phase: 'Running', podIP: pod.podIPs[0], podIPs: pod.podIPs.map((ip) => ({ ip })) },
        });
      }
      send(404, { kind: 'Status', code: 404, reason: 'NotFound' });
    });
  });
  const bound = await listen(server, { port: 0, host });
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${bound.port}`;

  return {
    url,
    server,
    calls,
    addPod(p) {
      const pod = { uid: randomUUID(), serviceAccount: 'default', ...p };
      pods.set(key(pod.namespace, pod.name), pod);
      return pod;
    },
    deletePod(namespace, name) {
      pods.delete(key(namespace, name));
    },
    mint(pod, options = {}) {
      const now = Math.floor(Date.now() / 1000);
      const header = b64({ alg: 'EdDSA', kid: 'stand-in' });
      const payload = b64({
        aud: options.audiences ?? ['workspace-sandbox-gateway'],
        exp: now + (options.expiresIn ?? 3600), iat: now, nbf: now - (options.expiresIn !== undefined && options.expiresIn < 0 ? 7200 : 0),
        iss: 'https://kubernetes.default.svc.cluster.local',
        sub: `system:serviceaccount:${pod.namespace}:${pod.serviceAccount}`,
        'kubernetes.io': { namespace: pod.namespace, pod: { name: pod.name, uid: pod.uid }, serviceaccount: { name: pod.serviceAccount, uid: randomUUID() } },
      });
      const signature = sign(null, Buffer.from(`${header}.${payload}`), options.key ?? issuer.privateKey).toString('base64url');
      return `${header}.${payload}.${signature}`;
    },
    writeKubeconfig(dir) {
      const path = join(dir, 'kubeconfig.json');
      writeFileSync(path, JSON.stringify({
        apiVersion: 'v1', kind: 'Config', 'current-context': 'stand-in',
        clusters: [{ name: 'stand-in', cluster: { server: url, 'certificate-authority-data': Buffer.from(pki.caPem).toString('base64') } }],
        users: [{ name: 'gateway', user: { token: 'gateway-service-account-token' } }],
        contexts: [{ name: 'stand-in', context: { cluster: 'stand-in', user: 'gateway' } }],
      }));
      return path;
    },
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** An Ed25519 key the stand-in's issuer does not know: tokens signed with it are forgeries. */
export function foreignKey(): KeyObject {
  const { privateKey } = generateKeyPairSync('ed25519');
  return createPrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' }));
}
