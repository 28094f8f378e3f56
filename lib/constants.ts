// Every name, port and path that two programs, the manifests or the backend agree on.
// Manifests are cross-checked against this module in tests: change a value here, not there.

export const PRODUCT = 'workspace-sandbox';
export const PREFIX = 'workspace-sandbox.io/';

export const LABEL_INJECTION = `${PREFIX}injection`;
export const LABEL_INJECTION_ENABLED = 'enabled';
export const LABEL_WORKSPACE = `${PREFIX}workspace`;
/** Set by the workspace SDK on what it creates: which backend owns it (list, GC), whose conversation, which warm pool. */
export const LABEL_OWNER = `${PREFIX}owner`;
export const LABEL_CONVERSATION = `${PREFIX}conversation`;
export const LABEL_POOL = `${PREFIX}pool`;

export const ANNOTATION_STATUS = `${PREFIX}status`;
export const ANNOTATION_RUNTIME = `${PREFIX}runtime`;
export const ANNOTATION_ALLOWED_DOMAINS = `${PREFIX}allowed-domains`;
export const ANNOTATION_TTL_SECONDS = `${PREFIX}ttl-seconds`;

export const CONTAINER_PROXY = 'credential-proxy';
export const CONTAINER_WORKSPACE = 'workspace';

export const PORTS = Object.freeze({
  proxy: 8080,
  agent: 8081,
  proxyAdmin: 8082,
  webhook: 8443,
  webhookMetrics: 9090,
  gateway: 3128,
  gatewayMetrics: 9091,
});

export const PROXY_LOOPBACK_HOST = '127.0.0.1';
export const PROXY_URL = `http://${PROXY_LOOPBACK_HOST}:${PORTS.proxy}`;

export const SHARED_DIR = '/var/run/workspace-sandbox';
export const CA_CERT_FILE = 'ca.crt';
export const CA_BUNDLE_FILE = 'ca-bundle.crt';

export const WEBHOOK_PATHS = Object.freeze({ mutate: '/mutate', healthz: '/healthz', readyz: '/readyz', metrics: '/metrics' });
export const PROXY_ADMIN_PATHS = Object.freeze({ healthz: '/healthz', readyz: '/readyz', metrics: '/metrics', rules: '/rules' });
export const AGENT_PATHS = Object.freeze({ health: '/health', execute: '/execute', files: '/files', metrics: '/metrics' });
/** The workspace directory of the workspace container: the agent's default cwd and the root of `/files`. */
export const WORKSPACE_ROOT = '/workspace';
/** The agent's Unix socket in the local Docker mode (`AGENT_LISTEN_MODE=uds`). */
export const AGENT_SOCKET_PATH = `${SHARED_DIR}/agent.sock`;

/** Header on every proxy denial so a person reading curl's output learns why. */
export const HEADER_DENY_REASON = 'X-Workspace-Sandbox-Deny-Reason';

/** Header names whose values are credentials: redacted from every log line. */
export const SECRET_HEADERS = Object.freeze([
  'authorization',
  'proxy-authorization',
  'x-api-key',
  'cookie',
  'set-cookie',
  'x-amz-security-token',
]);

// Cluster-side names shared by the manifests, the webhook's config and the backend.
export const NAMESPACES = Object.freeze({
  system: 'workspace-sandbox-system',
  sandboxes: 'sandboxes',
  backend: 'backend',
  capacity: 'sandbox-capacity',
});
export const WEBHOOK_SERVICE = 'workspace-sandbox-webhook';
/** ServiceAccount (in `backend`) of the service that drives workspaces through the SDK; its Role is in `sandboxes`. */
export const SERVICE_ACCOUNT_BACKEND = 'workspace-sandbox-backend';
export const RUNTIME_CLASS_GVISOR = 'gvisor';
export const RUNTIME_CLASS_RUNC = 'runc';
export const PRIORITY_CLASS_WORKSPACE = 'workspace';
export const PRIORITY_CLASS_OVERPROVISIONING = 'overprovisioning';
/** Secret (key `token`) holding the bearer token of the proxy's `/rules` API; mounted into the sidecar only. */
export const RULES_TOKEN_SECRET = 'workspace-sandbox-rules-token';
export const RULES_TOKEN_KEY = 'token';
/** Node label and NoSchedule taint of the gVisor node pool; the `gvisor` RuntimeClass selects and tolerates them. */
export const NODE_LABEL_GVISOR = `${PREFIX}gvisor`;

/** The node-local EKS Pod Identity agent: the sidecar's AWS credential source, never a workspace destination. */
export const POD_IDENTITY_AGENT = Object.freeze({ ipv4: '169.254.170.23', ipv6: 'fd00:ec2::23', port: 80 });

/** ServiceAccount workspace pods run as in `sandboxes`; its Pod Identity association gives the sidecar AWS credentials. */
export const SERVICE_ACCOUNT_WORKSPACE = 'workspace-sandbox-workspace';

/**
 * Per-pod tokens (lib/pod-token.ts): the backend's Ed25519 signing key lives in a Secret in
 * `backend`; the public keys, which verify but cannot mint, in a ConfigMap in `sandboxes` that the
 * webhook mounts read-only where a token is checked.
 */
export const POD_TOKEN_SIGNING_SECRET = 'workspace-sandbox-pod-token-signing-key';
export const POD_TOKEN_SIGNING_KEY = 'private.pem';
export const POD_TOKEN_PUBLIC_KEYS_CONFIGMAP = 'workspace-sandbox-pod-token-public-keys';
export const POD_TOKEN_PUBLIC_KEYS_KEY = 'public.pem';
export const POD_TOKEN_PUBLIC_KEYS_DIR = '/etc/workspace-sandbox/pod-token';

/** The egress gateway: its namespace, Service, and the audience of the sidecar's projected token. */
export const GATEWAY_NAMESPACE = 'workspace-sandbox-egress';
export const GATEWAY_SERVICE = 'workspace-sandbox-gateway';
export const GATEWAY_AUDIENCE = 'workspace-sandbox-gateway';
/** The sidecar's projected ServiceAccount token for the gateway (a volume of the credential-proxy container alone). */
export const GATEWAY_TOKEN_VOLUME = 'workspace-sandbox-gateway-token';
export const GATEWAY_TOKEN_DIR = '/var/run/secrets/workspace-sandbox/gateway';
export const GATEWAY_TOKEN_FILE = `${GATEWAY_TOKEN_DIR}/token`;

/**
 * Environment the credential proxy reads (credential-proxy/config.ts owns the schema) that the
 * webhook or an operator sets: per-pod /rules tokens and signed rule sets checked with the
 * pod-token public keys, this pod's UID, the sidecar-only state volume, declared credentials and
 * the read-only Redis user.
 */
export const PROXY_ENV = Object.freeze({
  podTokenPublicKeysFile: 'POD_TOKEN_PUBLIC_KEYS_FILE',
  rulesScope: 'RULES_SCOPE',
  rulesStateDir: 'RULES_STATE_DIR',
  credentialsFile: 'CREDENTIALS_FILE',
  redisUrl: 'REDIS_URL',
  redisUsername: 'REDIS_USERNAME',
  redisPasswordFile: 'REDIS_PASSWORD_FILE',
  redisCaFile: 'REDIS_CA_FILE',
});
/** Redis ACL users of the rule sets: sidecars read, the backend writes (manifests/redis/users.acl.template). */
export const REDIS_RULES_READER_USER = 'ws-rules-reader';
export const REDIS_RULES_WRITER_USER = 'ws-rules-writer';
/** Secret (key `password`) with the reader's password, mounted into the sidecar only. */
export const REDIS_RULES_READER_SECRET = 'workspace-sandbox-redis-rules-reader';
/** Secret (key `password`) with the writer's password, in `backend` only (the publisher's). */
export const REDIS_RULES_WRITER_SECRET = 'workspace-sandbox-redis-rules-writer';
export const REDIS_PASSWORD_KEY = 'password';

/**
 * The sidecar's own state (its CA key pair, its rule set): a memory-backed volume mounted into the
 * credential-proxy container alone, so a restarted sidecar keeps the CA the workspace already
 * trusts and the rules it was given, and nothing of it outlives the Pod.
 */
export const SIDECAR_STATE_DIR = '/var/lib/workspace-sandbox';
/** Where the sidecar mounts the injection config's upstream CA bundle (UPSTREAM_CA_FILE). */
export const UPSTREAM_CA_DIR = '/etc/workspace-sandbox/upstream-ca';
/**
 * Longest per-pod CA the proxy makes (CA_VALIDITY_SECONDS). The webhook sets the Pod's deadline
 * plus a margin there, so its maximum deadline is bounded by this.
 */
export const MAX_CA_VALIDITY_SECONDS = 7 * 24 * 3600;
/**
 * The webhook gives the sidecar's CA the Pod's deadline plus this: the CA is made once (kept in the
 * sidecar's state volume across restarts), and the sidecar starts a little after the Pod.
 */
export const CA_VALIDITY_MARGIN_SECONDS = 1800;
/** Karpenter never evicts a Pod carrying this to consolidate or expire its node early; every workspace carries it. */
export const ANNOTATION_DO_NOT_DISRUPT = 'karpenter.sh/do-not-disrupt';
