// Generates docs/configuration.md from the programs' zod schemas: every field of every program,
// with its type, default, constraints and description. `npm run docs:config` rewrites the file;
// test/docs/configuration.test.ts fails when the committed file is stale.
//
// Types, defaults and constraints come from `z.toJSONSchema` of each schema (input side: what an
// operator writes). Descriptions come, in order, from the schema itself (`.describe()`/`.meta()`),
// the program's `--help` table, or the table below; a field with none of them fails the run, so a
// new setting cannot ship undocumented.
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { AGENT_ENV_HELP, agentEnvSchema } from '../agent/config.ts';
import { PROXY_ENV_HELP, proxyEnvSchema } from '../credential-proxy/config.ts';
import { GATEWAY_ENV_HELP, gatewayEnvSchema } from '../gateway/config.ts';
import { PRODUCT } from '../lib/constants.ts';
import { VERSION } from '../lib/version.ts';
import { LOCAL_ENV_SCHEMA } from '../local/config.ts';
import { ENV_HELP as WEBHOOK_ENV_HELP, envSchema as webhookEnvSchema, injectionConfigSchema } from '../webhook/config.ts';
import { SDK_ENV_HELP, sdkEnvSchema } from '../sdk/config.ts';

export const OUTPUT = fileURLToPath(new URL('../docs/configuration.md', import.meta.url));

type Json = Record<string, unknown>;

/**
 * Descriptions of fields whose schema and `--help` carry none, keyed by section id and field
 * (dotted paths for the injection config file). Mostly from webhook/injection-config.example.yaml.
 */
const DESCRIPTIONS: Record<string, Record<string, string>> = {
  'webhook-injection': {
    namespaces: 'Namespaces this webhook injects, a second fence behind the MutatingWebhookConfiguration\'s namespaceSelector; Pods of other namespaces are allowed untouched. Empty: every namespace the API server sends.',
    workspaceContainerName: 'The container that runs the workspace (agent port, /workspace volume, startup, readiness and liveness probes). A single-container Pod\'s container is the workspace whatever its name; a Pod with several containers and none of this name is denied.',
    'runtime.runtimeClassName': 'RuntimeClass of every Pod; null leaves `spec.runtimeClassName` unset (local clusters without gVisor).',
    'runtime.allowedFallbacks': 'RuntimeClasses the Pod annotation `workspace-sandbox.io/runtime` may select instead, for workloads gVisor cannot run; any other value is denied.',
    workspaceServiceAccount: 'spec.serviceAccountName every workspace Pod must have (the Pod Identity association\'s subject; refused otherwise, never set: the backend creates the Pod with it); null: not checked.',
    priorityClassName: 'PriorityClass of every Pod (the computed priority of the old class is dropped so the Priority admission plugin recomputes it); null keeps the Pod\'s own.',
    'activeDeadlineSeconds.default': '`spec.activeDeadlineSeconds` of a Pod that sets none; the annotation `workspace-sandbox.io/ttl-seconds` replaces it, and of a Pod\'s own value and the annotation the lower wins.',
    'activeDeadlineSeconds.max': 'Nothing goes above this: larger values are clamped with a warning. Must be >= `activeDeadlineSeconds.default`.',
    'allowedDomains.domains': '`ALLOWED_DOMAINS` of every credential-proxy sidecar: the hosts a workspace may reach (`host`, `*.suffix`, optionally `:port`, lower case).',
    'allowedDomains.allowAnnotation': 'Whether the Pod annotation `workspace-sandbox.io/allowed-domains` (comma-separated) may add domains for that Pod; it never removes any. When false the annotation is ignored with a warning.',
    'sidecar.image': 'Image of the credential-proxy native sidecar.',
    'sidecar.imagePullPolicy': 'Pull policy of the sidecar image.',
    'sidecar.runAsUser': 'runAsUser and runAsGroup of the sidecar (non-root).',
    'sidecar.resources': 'Requests and limits of the sidecar (`cpu` and `memory` under both).',
    'sidecar.startupTimeoutSeconds': 'How long the proxy may take to turn ready (its startupProbe, one probe per second) before the kubelet restarts it; the workspace starts only once the proxy is ready.',
    'sidecar.redisUrl': '`REDIS_URL` of the proxy\'s shared rules store (`RULES_SCOPE` is then the Pod UID); null keeps rules in the sidecar\'s memory.',
    'sidecar.rulesTokenSecret': 'Secret (`secretName`, `key`) holding the bearer token of the proxy\'s `/rules` API, mounted into the sidecar only as `RULES_TOKEN_FILE`; null: no token (writes then disabled).',
    'sidecar.upstreamCaBundle': 'A CA bundle ConfigMap (`configMapName`, `key`) the proxy trusts for upstreams besides the system roots (a corporate API, a TLS-inspecting egress); mounted into the sidecar alone as `UPSTREAM_CA_FILE`; null: none.',
    'sidecar.stateSizeLimit': 'sizeLimit of the sidecar\'s memory-backed state volume (its CA key pair and rule set survive a sidecar restart there; mounted into the sidecar alone).',
    'podTokens': 'ConfigMap of public keys (`publicKeysConfigMap`, `key`) that verify per-pod tokens; mounted into the workspace (the agent accepts only tokens for its own Pod UID) and the sidecar; null: none (local development only, the agent is then open).',
    'sidecar.env': 'Extra plain environment of the sidecar, as `{name, value}` items (e.g. `LOG_LEVEL`).',
    'workspace.runAsUser': 'runAsUser of every container but the sidecar, where the container sets none.',
    'workspace.runAsGroup': 'runAsGroup of every container but the sidecar, where the container sets none.',
    'workspace.fsGroup': '`spec.securityContext.fsGroup` of the Pod.',
    'workspace.capabilities': 'Capabilities a container may add after dropping ALL (names without the `CAP_` prefix), and what it gets when it names none.',
    'workspace.resources': 'Requests and limits of containers that set none (`cpu` and `memory` under both).',
    'workspace.maxResources': 'Requests and limits above these are clamped, with a warning.',
    'workspace.noProxy': '`NO_PROXY` entries added after `localhost,127.0.0.1,::1`.',
    'workspace.workspaceSizeLimit': 'sizeLimit of the `/workspace` emptyDir.',
    'workspace.tmpSizeLimit': 'sizeLimit of the `/tmp` emptyDir (medium: Memory).',
    'workspace.startupTimeoutSeconds': 'How long the agent may take to answer `/health` (the workspace container\'s startupProbe, one probe per second) before the kubelet restarts the container; readiness and liveness probes start only once it has answered.',
    'credentials.moveEnv': 'Environment variables that carry cloud credentials (EKS Pod Identity, IRSA, static keys): moved from every workspace container to the sidecar.',
    'credentials.copyEnv': 'Environment variables the sidecar needs too (e.g. the SigV4 region): copied to the sidecar and left in place. Must not repeat `moveEnv`.',
    'credentials.moveVolumes': 'Volumes that carry credentials (token projections of the EKS Pod Identity and IRSA webhooks): their mounts move to the sidecar. Any other Secret or token volume mounted into a workspace container is denied.',
  },
  local: {
    LOCAL_STATE_DIR: 'Where the stack keeps its state: the generated TLS pair and CA of the webhook, the admin token, the dev rules and the agent\'s workspace.',
    LOCAL_WEBHOOK_PORT: 'HTTPS port of the webhook (`/mutate`).',
    LOCAL_WEBHOOK_METRICS_PORT: 'Port of the webhook\'s `/metrics`.',
    LOCAL_PROXY_PORT: 'Port of the credential proxy (`HTTP_PROXY` of commands run through the agent).',
    LOCAL_PROXY_ADMIN_PORT: 'Port of the proxy\'s admin API (`/healthz`, `/readyz`, `/metrics`, `/rules`).',
    LOCAL_AGENT_PORT: 'Port of the agent (`/health`, `/execute`, `/files`), on loopback.',
    LOCAL_DEMO_API_PORT: 'Port of the demo\'s fake credentialed API, named in the default dev rules.',
    LOCAL_RULES_FILE: 'Rules file of the proxy (YAML/JSON); unset: the stack\'s small dev rules.',
    LOCAL_LOG_LEVEL: 'Log level of the three programs: fatal, error, warn, info, debug, trace or silent.',
    LOCAL_RESTART_BACKOFF_MS: 'First restart delay after a program crashes; it doubles on each crash up to 30 s.',
    LOCAL_READY_TIMEOUT_MS: 'How long the stack waits for every program to turn ready before it gives up.',
  },
};

export interface Section {
  id: string;
  title: string;
  /** Where and how the values are given. */
  intro: string;
  schema: z.ZodType;
  /** Descriptions from the program's `--help`. */
  help: Record<string, string>;
  /** Nested objects are flattened into dotted names (config files); env sections are flat. */
  nested: boolean;
}

export function sections(): Section[] {
  return [
    {
      id: 'agent', title: 'Agent (`workspace-sandbox agent`)', nested: false,
      intro: 'Environment variables of the workspace agent, the main process of every workspace container.',
      schema: agentEnvSchema, help: Object.fromEntries(AGENT_ENV_HELP.map(([name, , text]) => [name, text])),
    },
    {
      id: 'credential-proxy', title: 'Credential proxy (`workspace-sandbox proxy`)', nested: false,
      intro: 'Environment variables of the credential-proxy sidecar. The rules file it names holds a list of rules (or `{rules: [...]}`) as `PUT /rules` takes them (openapi/proxy-admin.yaml).',
      schema: proxyEnvSchema, help: { ...PROXY_ENV_HELP },
    },
    {
      id: 'gateway', title: 'Egress gateway (`workspace-sandbox gateway`)', nested: false,
      intro: 'Environment variables of the egress gateway Deployment: the only way out of the cluster for workspaces (docs/security.md, docs/operations.md).',
      schema: gatewayEnvSchema, help: { ...GATEWAY_ENV_HELP },
    },
    {
      id: 'webhook', title: 'Webhook (`workspace-sandbox webhook`): environment', nested: false,
      intro: 'Environment variables of the mutating admission webhook.',
      schema: webhookEnvSchema, help: { ...WEBHOOK_ENV_HELP },
    },
    {
      id: 'webhook-injection', title: 'Webhook: injection config file (`WEBHOOK_CONFIG_FILE`)', nested: true,
      intro: 'A YAML file (a ConfigMap mount), validated at start and hot-reloaded: an invalid new file keeps the previous config and is reported. Every field is optional; unknown fields are errors. Nested fields are written as YAML mappings (`runtime.runtimeClassName` is `runtimeClassName:` under `runtime:`). webhook/injection-config.example.yaml shows every field; `workspace-sandbox inject --config FILE -f pod.yaml --explain` checks a file offline.',
      schema: injectionConfigSchema, help: {},
    },
    {
      id: 'sdk', title: 'Workspace SDK (`sdk/`, the backend service)', nested: false,
      intro: 'Environment variables read by `loadSdkConfig()` in the backend service that creates workspaces (examples/backend/ uses them). `CONTAINER_BACKEND` switches between Kubernetes and Docker.',
      schema: sdkEnvSchema, help: { ...SDK_ENV_HELP },
    },
    {
      id: 'local', title: 'Local stack (`npm start`, `npm run demo`)', nested: false,
      intro: 'Environment variables of the local stack that runs the three programs on one machine. Ports default to the in-pod ones plus 10000.',
      schema: LOCAL_ENV_SCHEMA, help: {},
    },
  ];
}

export interface Field {
  name: string;
  type: string;
  defaultText: string;
  constraints: string[];
  description: string;
}

/** Values that depend on the machine or the release are written symbolically, so the file is stable. */
function stable(value: string): string {
  const tmp = tmpdir();
  let v = value.endsWith(`:${VERSION}`) ? `${value.slice(0, -VERSION.length)}<version>` : value;
  if (v === tmp || v.startsWith(`${tmp}/`)) v = `<tmpdir>${v.slice(tmp.length)}`;
  return v;
}

function typeOf(s: Json): string {
  if (Array.isArray(s.anyOf) || Array.isArray(s.oneOf)) {
    const parts = ((s.anyOf ?? s.oneOf) as Json[]).map(typeOf);
    return [...new Set(parts)].join(' \\| ');
  }
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return (s.enum as unknown[]).map((e) => JSON.stringify(e)).join(' \\| ');
  if (s.type === 'array') return `list of ${typeOf((s.items as Json | undefined) ?? {})}`;
  if (s.type === 'object') {
    if (s.additionalProperties && typeof s.additionalProperties === 'object') return `map of ${typeOf(s.additionalProperties as Json)}`;
    return 'object';
  }
  if (typeof s.type === 'string') return s.type;
  if (Array.isArray(s.type)) return (s.type as string[]).join(' \\| ');
  return 'any';
}

const BOOL_WORDS = ['0', '1', 'false', 'no', 'true', 'yes'];

/** Env values are text: a comma-separated list or a boolean word is named as what it becomes. */
function envType(s: Json, value: unknown): string | undefined {
  if (s.type === 'string' && Array.isArray(value)) return 'comma-separated list';
  if (Array.isArray(s.enum) && [...(s.enum as string[])].sort().join() === BOOL_WORDS.join()) return 'boolean';
  return undefined;
}

/** `proxy listener port (8080)` → `proxy listener port`: the default has its own column. */
function withoutRepeatedDefault(text: string, value: unknown): string {
  const m = / \(([^()]*)\)$/.exec(text);
  if (!m || value === undefined) return text;
  const shown = Array.isArray(value) ? value.join(',') : String(value);
  return m[1] === shown ? text.slice(0, m.index) : text;
}

const KIB = 1024;
const UNITS: [number, string][] = [[KIB ** 4, 'TiB'], [KIB ** 3, 'GiB'], [KIB ** 2, 'MiB'], [KIB, 'KiB']];

/** `1048576` → `1048576 (1 MiB)` for byte sizes, `60000` → `60000 (60 s)` for durations. */
function humanNumber(name: string, n: number): string {
  if (/BYTES/.test(name)) {
    for (const [size, unit] of UNITS) if (n >= size && n % size === 0) return `${n} (${n / size} ${unit})`;
  }
  if (/_MS$/.test(name) && n >= 1000 && n % 1000 === 0) {
    const s = n / 1000;
    return `${n} (${s % 3600 === 0 ? `${s / 3600} h` : s % 60 === 0 && s >= 60 ? `${s / 60} min` : `${s} s`})`;
  }
  return String(n);
}

function defaultText(name: string, s: Json, nested: boolean, parsed: unknown): string {
  // JSON Schema output omits some defaults (values whose schema transforms, e.g. quantities):
  // then the value the schema itself produces for an empty input is the default.
  if (!('default' in s) && parsed === undefined) return '';
  const d = 'default' in s ? s.default : parsed;
  if (Array.isArray(d) && !nested) return d.length === 0 ? '(empty)' : `\`${stable(d.join(','))}\``;
  if (typeof d === 'string') return `\`${stable(d)}\``;
  if (typeof d === 'number') return humanNumber(name, d);
  if (typeof d === 'boolean') return `\`${d}\``;
  if (Array.isArray(d) && d.length === 0) return '`[]`';
  return `\`${stable(JSON.stringify(d))}\``;
}

function constraintsOf(name: string, s: Json): string[] {
  const out: string[] = [];
  const min = s.minimum as number | undefined;
  const max = s.maximum as number | undefined;
  if (min !== undefined && max !== undefined && max < Number.MAX_SAFE_INTEGER) out.push(`${humanNumber(name, min)}–${humanNumber(name, max)}`);
  else if (min !== undefined) out.push(`≥ ${humanNumber(name, min)}`);
  else if (max !== undefined) out.push(`≤ ${humanNumber(name, max)}`);
  if (s.exclusiveMinimum !== undefined) out.push(`> ${s.exclusiveMinimum as number}`);
  const chars = (n: number) => `${n} character${n === 1 ? '' : 's'}`;
  if (s.minLength !== undefined) out.push(`at least ${chars(s.minLength as number)}`);
  if (s.maxLength !== undefined) out.push(`at most ${chars(s.maxLength as number)}`);
  if (s.minItems !== undefined) out.push(`at least ${s.minItems as number} item${s.minItems === 1 ? '' : 's'}`);
  if (typeof s.pattern === 'string') out.push(`matches \`${s.pattern.replace(/\|/g, '\\|')}\``);
  for (const key of ['items', 'additionalProperties'] as const) {
    const sub = s[key];
    if (sub && typeof sub === 'object') out.push(...constraintsOf(name, sub as Json).map((c) => `each ${c}`));
  }
  for (const alt of ((s.anyOf ?? s.oneOf) as Json[] | undefined) ?? []) out.push(...constraintsOf(name, alt));
  return out;
}

/**
 * A nested object is a section to list field by field when it defaults to `{}` (each field then
 * has its own default); an object with a whole default value (resources) is one field.
 */
function isSection(s: Json): boolean {
  if (s.type !== 'object' || !s.properties) return false;
  const d = s.default;
  return typeof d === 'object' && d !== null && !Array.isArray(d) && Object.keys(d).length === 0;
}

function valueAt(value: unknown, path: string[]): unknown {
  return path.reduce<unknown>((cur, key) => (cur !== null && typeof cur === 'object' ? (cur as Json)[key] : undefined), value);
}

export function fieldsOf(section: Section): Field[] {
  const root = z.toJSONSchema(section.schema, { io: 'input', unrepresentable: 'any' }) as Json;
  // What the schema produces for an empty input: the defaults as the program sees them (a
  // schema whose output is reshaped, like the local stack's, simply yields none here).
  const parsed = section.schema.safeParse({}).data;
  const fields: Field[] = [];
  const missing: string[] = [];
  const walk = (s: Json, prefix: string) => {
    for (const [key, raw] of Object.entries((s.properties as Record<string, Json> | undefined) ?? {})) {
      const name = prefix ? `${prefix}.${key}` : key;
      if (section.nested && isSection(raw)) {
        walk(raw, name);
        continue;
      }
      const description = (raw.description as string | undefined) ?? section.help[name] ?? DESCRIPTIONS[section.id]?.[name];
      if (!description) missing.push(`${section.id}: ${name}`);
      const value = valueAt(parsed, name.split('.'));
      const shown = defaultText(name, raw, section.nested, value);
      fields.push({
        name,
        type: envType(raw, value) ?? typeOf(raw),
        defaultText: shown,
        constraints: constraintsOf(name, raw),
        description: withoutRepeatedDefault(description ?? '', raw.default ?? value),
      });
    }
  };
  walk(root, '');
  if (missing.length > 0) {
    throw new Error(`configuration fields without a description (add .describe() to the schema, a --help entry, or an entry in scripts/gen-config-docs.ts DESCRIPTIONS):\n  ${missing.join('\n  ')}`);
  }
  return fields;
}

const cell = (text: string) => text.replace(/\n/g, ' ').replace(/\|/g, '\\|').replace(/\\\\\|/g, '\\|');

function table(fields: Field[]): string {
  const rows = fields.map((f) => {
    const type = f.type.replace(/(?<!\\)\|/g, '\\|');
    const limits = f.constraints.length ? f.constraints.join('; ') : '';
    return `| \`${f.name}\` | ${type} | ${f.defaultText || '—'} | ${cell(limits) || '—'} | ${cell(f.description)} |`;
  });
  return ['| Name | Type | Default | Constraints | Description |', '|---|---|---|---|---|', ...rows].join('\n');
}

/** The whole document; throws when a field lacks a description. */
export function renderConfigurationDocs(): string {
  const all = sections();
  const problems: string[] = [];
  const parts: string[] = [];
  for (const s of all) {
    try {
      parts.push(`## ${s.title}\n\n${s.intro}\n\n${table(fieldsOf(s))}\n`);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length > 0) throw new Error(problems.join('\n'));
  return [
    '<!-- Generated by scripts/gen-config-docs.ts from the zod schemas; do not edit. Run `npm run docs:config`. -->',
    '# Configuration',
    '',
    `Every setting of every ${PRODUCT} program, generated from the schemas that validate them. Each program`,
    'reads its environment once at start and refuses to start, listing every problem, when a value is invalid.',
    'An empty environment variable counts as unset. Booleans take `true`/`false` (also `1`/`0`, `yes`/`no`);',
    'lists are comma-separated. `<tmpdir>` is the operating system\'s temporary directory and `<version>` the',
    'package version.',
    '',
    ...all.map((s) => `- [${s.title.replace(/`/g, '')}](#${s.id})`),
    '',
    ...parts.map((p, i) => `<a id="${all[i]!.id}"></a>\n\n${p}`),
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    writeFileSync(OUTPUT, renderConfigurationDocs());
    process.stdout.write(`wrote ${OUTPUT}\n`);
  } catch (err) {
    process.stderr.write(`gen-config-docs: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
