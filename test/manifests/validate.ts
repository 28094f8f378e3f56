// Offline schema validation of rendered objects, in three layers:
//  1. the kind's model from kubernetes-models / @kubernetes-models/{cert-manager,karpenter,
//     argo-cd,prometheus-operator} (their generated validators check types, required fields,
//     most enums and patterns);
//  2. unknown fields: those validators accept any extra key (the API server would prune or
//     reject it, so a typo such as `readOnlyRootFileSystem` silently does nothing). We run the
//     same validator over a recording Proxy of the object: a generated validator reads every
//     property its schema declares (`data.x !== undefined`) and enumerates only maps
//     (`for (key in data)`). A key of a non-map object that the validator never read is not
//     in the schema. This covers every kind we validate, at any depth, from the models' own
//     schemas; it cannot see fields the schema marks x-kubernetes-preserve-unknown-fields
//     (none of our kinds use one), and it trusts KNOWN_UNREAD for properties the generator drops
//     (it strips every schema key named `description`, taking PriorityClass.description along);
//  3. our own value checks for enums and formats the models do not enforce (listed in VALUE_RULES;
//     each was checked to pass through the model unnoticed).
import type { Model } from '@kubernetes-models/base';
import * as admissionregistration from 'kubernetes-models/admissionregistration.k8s.io/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';
import * as core from 'kubernetes-models/v1';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as node from 'kubernetes-models/node.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as scheduling from 'kubernetes-models/scheduling.k8s.io/v1';
import * as argoCd from '@kubernetes-models/argo-cd/argoproj.io/v1alpha1';
import * as certManager from '@kubernetes-models/cert-manager/cert-manager.io/v1';
import * as karpenterAws from '@kubernetes-models/karpenter/karpenter.k8s.aws/v1';
import * as karpenter from '@kubernetes-models/karpenter/karpenter.sh/v1';
import * as monitoring from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import type { K8sObject } from './render.ts';

// `never`: each model's constructor takes its own data type; we hand it parsed YAML.
type ModelClass = { new (data: never): Model<unknown>; prototype: Model<unknown> };

/** apiVersion/kind → model. A kind missing here fails validation: every rendered kind is checked. */
export const MODELS: Record<string, ModelClass> = {
  'v1/Namespace': core.Namespace,
  'v1/ServiceAccount': core.ServiceAccount,
  'v1/ConfigMap': core.ConfigMap,
  'v1/Service': core.Service,
  'v1/ResourceQuota': core.ResourceQuota,
  'v1/LimitRange': core.LimitRange,
  'v1/Pod': core.Pod,
  'apps/v1/Deployment': apps.Deployment,
  'apps/v1/DaemonSet': apps.DaemonSet,
  'autoscaling/v2/HorizontalPodAutoscaler': autoscaling.HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': policy.PodDisruptionBudget,
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': admissionregistration.MutatingWebhookConfiguration,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': admissionregistration.ValidatingAdmissionPolicy,
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': admissionregistration.ValidatingAdmissionPolicyBinding,
  'node.k8s.io/v1/RuntimeClass': node.RuntimeClass,
  'scheduling.k8s.io/v1/PriorityClass': scheduling.PriorityClass,
  'networking.k8s.io/v1/NetworkPolicy': networking.NetworkPolicy,
  'rbac.authorization.k8s.io/v1/Role': rbac.Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': rbac.RoleBinding,
  'rbac.authorization.k8s.io/v1/ClusterRole': rbac.ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': rbac.ClusterRoleBinding,
  'cert-manager.io/v1/Issuer': certManager.Issuer,
  'cert-manager.io/v1/Certificate': certManager.Certificate,
  'karpenter.sh/v1/NodePool': karpenter.NodePool,
  'karpenter.k8s.aws/v1/EC2NodeClass': karpenterAws.EC2NodeClass,
  'argoproj.io/v1alpha1/Application': argoCd.Application,
  'argoproj.io/v1alpha1/AppProject': argoCd.AppProject,
  'monitoring.coreos.com/v1/ServiceMonitor': monitoring.ServiceMonitor,
  'monitoring.coreos.com/v1/PodMonitor': monitoring.PodMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': monitoring.PrometheusRule,
};

/** Properties the models' schemas lose in generation, per kind (JSON pointer with `*` for indexes). */
const KNOWN_UNREAD: Record<string, readonly string[]> = {
  PriorityClass: ['/description'],
  AppProject: ['/spec/description'],
};

const escapeToken = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');

/** Model validation: the generated validator's messages, empty when valid. */
export function modelProblems(obj: K8sObject): string[] {
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (Model === undefined) return [`no schema known for ${obj.apiVersion} ${obj.kind}`];
  try {
    new Model(obj as never).validate();
    return [];
  } catch (err) {
    return [(err as Error).message];
  }
}

/** JSON pointers of the keys the kind's schema does not declare. Run on objects that pass modelProblems. */
export function unknownFields(obj: K8sObject): string[] {
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (Model === undefined) return [];
  const reads = new Map<string, Set<string>>();
  const maps = new Set<string>();
  const record = (path: string, key: string | symbol) => {
    if (typeof key !== 'string') return;
    let s = reads.get(path);
    if (s === undefined) reads.set(path, (s = new Set()));
    s.add(key);
  };
  const track = (value: unknown, path: string): unknown => {
    if (Array.isArray(value)) return value.map((v, i) => track(v, `${path}/${i}`));
    if (value === null || typeof value !== 'object') return value;
    const copy: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) copy[k] = track(v, `${path}/${escapeToken(k)}`);
    return new Proxy(copy, {
      get(target, key, receiver) { record(path, key); return Reflect.get(target, key, receiver); },
      has(target, key) { record(path, key); return Reflect.has(target, key); },
      ownKeys(target) { maps.add(path); return Reflect.ownKeys(target); },
    });
  };
  // The prototype's validate runs the generated validator on `this`, here the recording Proxy.
  Model.prototype.validate.call(track(obj, ''));
  const unknown: string[] = [];
  const walk = (value: unknown, path: string) => {
    if (Array.isArray(value)) { value.forEach((v, i) => walk(v, `${path}/${i}`)); return; }
    if (value === null || typeof value !== 'object') return;
    const read = reads.get(path) ?? new Set<string>();
    for (const [k, v] of Object.entries(value)) {
      if (!maps.has(path) && !read.has(k)) unknown.push(`${path}/${escapeToken(k)}`);
      walk(v, `${path}/${escapeToken(k)}`);
    }
  };
  walk(obj, '');
  const known = KNOWN_UNREAD[obj.kind] ?? [];
  return unknown.filter((p) => !known.includes(p.replace(/\/\d+(?=\/|$)/g, '/*')));
}

// ---------------------------------------------------------------------------------------------
// Value checks the generated validators lack.

interface ValueRule {
  kinds?: string[];
  /** Matched against the JSON pointer of each scalar. */
  path: RegExp;
  /** Check the path's first capture group (a map key) instead of the value. */
  checkKey?: boolean;
  allowed?: readonly string[];
  pattern?: RegExp;
  why: string;
}

const GO_DURATION = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;
const EC2_SIZES = ['nano', 'micro', 'small', 'medium', 'large', 'xlarge', '2xlarge', '3xlarge', '4xlarge', '6xlarge', '8xlarge',
  '9xlarge', '10xlarge', '12xlarge', '16xlarge', '18xlarge', '24xlarge', '32xlarge', '48xlarge', 'metal'];
const QUOTA_KEYS = ['pods', 'requests.cpu', 'requests.memory', 'limits.cpu', 'limits.memory', 'cpu', 'memory',
  'requests.ephemeral-storage', 'limits.ephemeral-storage', 'services', 'services.loadbalancers', 'services.nodeports',
  'persistentvolumeclaims', 'requests.storage', 'configmaps', 'secrets', 'replicationcontrollers', 'resourcequotas'];

export const VALUE_RULES: readonly ValueRule[] = [
  { path: /\/(initContainers|containers)\/\d+\/restartPolicy$/, allowed: ['Always'], why: 'container restartPolicy can only be Always' },
  { path: /\/emptyDir\/medium$/, allowed: ['', 'Memory'], why: 'emptyDir medium' },
  { kinds: ['LimitRange'], path: /^\/spec\/limits\/\d+\/type$/, allowed: ['Container', 'Pod', 'PersistentVolumeClaim'], why: 'LimitRange type' },
  { kinds: ['ResourceQuota'], path: /^\/spec\/hard\/(.*)$/, checkKey: true, allowed: QUOTA_KEYS, why: 'ResourceQuota resource name' },
  { kinds: ['MutatingWebhookConfiguration'], path: /^\/webhooks\/\d+\/sideEffects$/, allowed: ['None', 'NoneOnDryRun'], why: 'sideEffects (v1)' },
  { kinds: ['ValidatingAdmissionPolicy'], path: /^\/spec\/validations\/\d+\/reason$/, allowed: ['Unauthorized', 'Forbidden', 'Invalid', 'RequestEntityTooLarge'], why: 'validation reason' },
  { kinds: ['Namespace'], path: /^\/metadata\/labels\/pod-security\.kubernetes\.io~1(enforce|warn|audit)$/, allowed: ['privileged', 'baseline', 'restricted'], why: 'Pod Security level' },
  { kinds: ['Namespace'], path: /^\/metadata\/labels\/pod-security\.kubernetes\.io~1(enforce|warn|audit)-version$/, pattern: /^(latest|v1\.[0-9]+)$/, why: 'Pod Security version' },
  { kinds: ['Certificate'], path: /^\/spec\/(duration|renewBefore)$/, pattern: GO_DURATION, why: 'Go duration' },
  { kinds: ['NodePool'], path: /^\/spec\/template\/spec\/terminationGracePeriod$/, pattern: /^([0-9]+(s|m|h))+$/, why: 'Karpenter duration' },
];

/** Karpenter requirement values for well-known keys (the CRD accepts any string; Karpenter then matches nothing). */
const REQUIREMENT_VALUES: Record<string, (v: string) => boolean> = {
  'karpenter.sh/capacity-type': (v) => ['spot', 'on-demand', 'reserved'].includes(v),
  'kubernetes.io/arch': (v) => ['amd64', 'arm64'].includes(v),
  'kubernetes.io/os': (v) => ['linux', 'windows'].includes(v),
  'karpenter.k8s.aws/instance-size': (v) => EC2_SIZES.includes(v),
  'karpenter.k8s.aws/instance-family': (v) => /^[a-z]+[0-9]+[a-z0-9-]*$/.test(v),
};

export function valueProblems(obj: K8sObject): string[] {
  const problems: string[] = [];
  const rules = VALUE_RULES.filter((r) => r.kinds === undefined || r.kinds.includes(obj.kind));
  const walk = (value: unknown, path: string) => {
    if (Array.isArray(value)) { value.forEach((v, i) => walk(v, `${path}/${i}`)); return; }
    if (value !== null && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) walk(v, `${path}/${escapeToken(k)}`);
      return;
    }
    for (const rule of rules) {
      const m = rule.path.exec(path);
      if (m === null) continue;
      const subject = rule.checkKey ? m[1]!.replace(/~1/g, '/').replace(/~0/g, '~') : String(value);
      const ok = (rule.allowed === undefined || rule.allowed.includes(subject)) && (rule.pattern === undefined || rule.pattern.test(subject));
      if (!ok) problems.push(`${path}: ${JSON.stringify(subject)} is not a valid ${rule.why}`);
    }
  };
  walk(obj, '');
  if (obj.kind === 'NodePool') {
    const spec = (obj as { spec?: { template?: { spec?: { requirements?: { key: string; values?: string[] }[] } } } }).spec;
    for (const [i, r] of (spec?.template?.spec?.requirements ?? []).entries()) {
      const check = REQUIREMENT_VALUES[r.key];
      for (const v of r.values ?? []) {
        if (check !== undefined && !check(v)) problems.push(`/spec/template/spec/requirements/${i}: ${JSON.stringify(v)} is not a value of ${r.key}`);
      }
    }
  }
  return problems;
}

/** Every problem of one object: model, unknown fields, values. */
export function objectProblems(obj: K8sObject): string[] {
  const model = modelProblems(obj);
  if (model.length > 0) return model;
  return [...unknownFields(obj).map((p) => `${p}: unknown field`), ...valueProblems(obj)];
}
