// The guard: a ValidatingAdmissionPolicy built from the rule table (rules.ts) for one injection
// config, so that what the webhook refuses and what the API server refuses cannot drift. The
// manifests hold its output (`workspace-sandbox guard --config <file>`); a test renders every
// overlay and fails when its policy differs from the one built from that overlay's config.
//
// It matches what the webhook matches: Pod CREATE and UPDATE and the ephemeralcontainers
// subresource (`kubectl debug`). An UPDATE that leaves the spec alone (labels, annotations,
// finalizers) is not checked again, so a Pod admitted under an older config can still be
// relabelled; one that changes the spec (an image, an ephemeral container) must comply with the
// current config.
import { stringify } from 'yaml';
import { LABEL_INJECTION, LABEL_INJECTION_ENABLED, POD_TOKEN_PUBLIC_KEYS_DIR, PROXY_URL } from '../lib/constants.ts';
import type { InjectionConfig } from './config.ts';
import { noProxyOf } from './inject.ts';
import { GUARD_RULES, GUARD_VARIABLES, type GuardParams, type GuardRuleId } from './rules.ts';

export const GUARD_NAME = 'workspace-sandbox-guard';
export const GUARD_MESSAGE_PREFIX = 'workspace-sandbox: ';

export function guardParams(config: InjectionConfig): GuardParams {
  if (config.runtime.runtimeClassName === null) {
    throw new Error('an injection config without runtime.runtimeClassName has no guard: the guard requires a RuntimeClass');
  }
  const domains = [...config.allowedDomains.domains];
  return {
    allowedRuntimeClasses: [config.runtime.runtimeClassName, ...config.runtime.allowedFallbacks],
    capabilities: [...config.workspace.capabilities],
    sidecarImage: config.sidecar.image,
    workspaceContainerName: config.workspaceContainerName,
    credentialEnv: [...config.credentials.moveEnv],
    proxyUrl: PROXY_URL,
    noProxy: noProxyOf(config),
    maxDeadlineSeconds: config.activeDeadlineSeconds.max,
    exactDomains: config.allowedDomains.allowAnnotation ? undefined : domains.join(','),
    domains,
    agentPublicKeysFile: config.podTokens ? `${POD_TOKEN_PUBLIC_KEYS_DIR}/${config.podTokens.key}` : undefined,
    serviceAccount: config.workspaceServiceAccount ?? undefined,
  };
}

/** The message of a rule as the API server shows it; it names the field and the rule id. */
export function guardMessage(id: GuardRuleId, p: GuardParams): string {
  return `${GUARD_MESSAGE_PREFIX}${GUARD_RULES[id].message(p)} (rule ${id})`;
}

export interface GuardObjects {
  policy: Record<string, unknown>;
  binding: Record<string, unknown>;
}

export function buildGuard(config: InjectionConfig): GuardObjects {
  const p = guardParams(config);
  const selector = { matchLabels: { [LABEL_INJECTION]: LABEL_INJECTION_ENABLED } };
  const policy = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicy',
    metadata: { name: GUARD_NAME },
    spec: {
      // A CEL error (a Pod shape the expressions did not expect) denies rather than admits.
      failurePolicy: 'Fail',
      matchConstraints: {
        resourceRules: [{
          operations: ['CREATE', 'UPDATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods', 'pods/ephemeralcontainers'], scope: 'Namespaced',
        }],
        namespaceSelector: selector,
      },
      matchConditions: [
        { name: 'creates-or-changes-the-spec', expression: "request.operation != 'UPDATE' || object.spec != oldObject.spec" },
      ],
      variables: GUARD_VARIABLES(p),
      validations: (Object.keys(GUARD_RULES) as GuardRuleId[]).map((id) => ({
        expression: GUARD_RULES[id].cel(p),
        reason: 'Forbidden',
        message: guardMessage(id, p),
      })),
    },
  };
  const binding = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicyBinding',
    metadata: { name: GUARD_NAME },
    spec: { policyName: GUARD_NAME, validationActions: ['Deny'], matchResources: { namespaceSelector: selector } },
  };
  return { policy, binding };
}

export function guardYaml(config: InjectionConfig, source: string): string {
  const { policy, binding } = buildGuard(config);
  const header = [
    '# The guard behind the webhook, built from the rule table (webhook/rules.ts) for the injection config',
    `# ${source}: \`workspace-sandbox guard --config ${source}\`.`,
    '# Do not edit: change the rules or the config and build it again (test/manifests/guard.test.ts',
    '# fails while they differ).',
  ].join('\n');
  // Long CEL is folded to fit the repository's yamllint line length.
  const y = (o: unknown) => stringify(o, { lineWidth: 120, minContentWidth: 40, blockQuote: 'folded' });
  return `${header}\n${y(policy)}---\n${y(binding)}`;
}
