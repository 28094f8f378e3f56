// The gateway's only contact with the Kubernetes API, kept thin: a TokenReview and a pod read,
// through @kubernetes/client-node. Everything that decides lives in token-review.ts.
import type { V1TokenReviewStatus } from '@kubernetes/client-node';

export interface ReviewedToken {
  authenticated: boolean;
  /** The audiences the API server matched (the intersection of ours and the token's). */
  audiences: readonly string[];
  username: string | undefined;
  /** `user.extra`: for a pod-bound token, `authentication.kubernetes.io/pod-name` and `pod-uid`. */
  extra: Readonly<Record<string, readonly string[]>>;
  error: string | undefined;
}

export interface PodRecord {
  uid: string;
  podIPs: readonly string[];
}

export interface KubernetesApi {
  /** POST /apis/authentication.k8s.io/v1/tokenreviews with `spec.audiences`. */
  reviewToken(token: string, audiences: readonly string[]): Promise<ReviewedToken>;
  /** GET /api/v1/namespaces/{namespace}/pods/{name}; undefined when it does not exist. */
  readPod(namespace: string, name: string): Promise<PodRecord | undefined>;
}

export function reviewFromStatus(status: V1TokenReviewStatus | undefined): ReviewedToken {
  return {
    authenticated: status?.authenticated === true,
    audiences: status?.audiences ?? [],
    username: status?.user?.username,
    extra: status?.user?.extra ?? {},
    error: status?.error,
  };
}

/** The API server named by `kubeconfigPath`, or the in-cluster one (ServiceAccount token, CA, env). */
export async function createKubernetesApi(kubeconfigPath: string | undefined): Promise<KubernetesApi> {
  // Loaded here, not at the top: the module graph of client-node is large and only main needs it.
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromCluster();
  const auth = kc.makeApiClient(k8s.AuthenticationV1Api);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  return {
    async reviewToken(token, audiences) {
      const review = await auth.createTokenReview({
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [...audiences] } },
      });
      return reviewFromStatus(review.status);
    },
    async readPod(namespace, name) {
      try {
        const pod = await core.readNamespacedPod({ namespace, name });
        const ips = pod.status?.podIPs?.map((p) => p.ip) ?? (pod.status?.podIP ? [pod.status.podIP] : []);
        return { uid: pod.metadata?.uid ?? '', podIPs: ips };
      } catch (err) {
        if (err instanceof k8s.ApiException && err.code === 404) return undefined;
        throw err;
      }
    },
  };
}
