// `workspace-sandbox inject`: the webhook's injection, offline, like `istioctl kube-inject`.
// Reads manifests (multi-document YAML or JSON), injects every Pod and every workload's Pod
// template with the same `inject` the webhook runs, and prints the result, the JSON Patch, or an
// explanation. The namespace fence is not applied: a manifest is rendered wherever it will go.
import { readFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { parseArgs as parseArgv } from 'node:util';
import { parseAllDocuments, stringify } from 'yaml';
import { formatCliError, parseArgsProblem } from '../lib/cli-errors.ts';
import { PRODUCT } from '../lib/constants.ts';
import { DEFAULT_INJECTION_CONFIG, loadInjectionConfigFile, type InjectionConfig } from './config.ts';
import { inject, type InjectResult, type Json } from './inject.ts';
import { diff } from './patch.ts';
import { isObject } from './shape.ts';

export function usage(): string {
  return [
    `Usage: ${PRODUCT} inject -f FILE|- [--config FILE] [-o yaml|json|patch] [--explain]`,
    '',
    'Injects the workspace sidecar and hardening into Pods and into the Pod templates of',
    'Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, exactly as the webhook does.',
    'Other documents pass through unchanged.',
    '',
    'Options:',
    '  -f, --filename FILE   manifest file (multi-document YAML or JSON); - reads stdin',
    '      --config FILE     injection config (default: the built-in config; see',
    '                        webhook/injection-config.example.yaml)',
    '  -o, --output FORMAT   yaml (default), json, or patch (one JSON Patch per document, one per line)',
    '      --explain         print what would change, or why the Pod would be denied',
    '  -h, --help            show this help',
    '',
    'Exit status: 0 when every document was rendered, 1 when one was denied or a file is invalid, 2 on usage errors.',
  ].join('\n');
}

export interface CliIO {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

interface Args {
  file?: string;
  config?: string;
  output: 'yaml' | 'json' | 'patch';
  explain: boolean;
  help: boolean;
}

const OUTPUTS = ['yaml', 'json', 'patch'] as const;

/** The arguments, or the usage problem as a sentence. */
function parseArgs(argv: string[]): Args | string {
  let parsed;
  try {
    parsed = parseArgv({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        filename: { type: 'string', short: 'f' },
        config: { type: 'string' },
        output: { type: 'string', short: 'o', default: 'yaml' },
        explain: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    return parseArgsProblem(err);
  }
  const output = parsed.output as Args['output'];
  if (!OUTPUTS.includes(output)) return `-o/--output must be yaml, json or patch (got '${parsed.output}')`;
  return { file: parsed.filename, config: parsed.config, output, explain: parsed.explain ?? false, help: parsed.help ?? false };
}

async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

/** Where the Pod spec of a document lives. */
function podTemplatePath(doc: Json): string[] | undefined {
  switch (doc.kind) {
    case 'Pod': return [];
    case 'Deployment': case 'StatefulSet': case 'DaemonSet': case 'ReplicaSet': case 'ReplicationController': case 'Job':
      return ['spec', 'template'];
    case 'CronJob': return ['spec', 'jobTemplate', 'spec', 'template'];
    default: return undefined;
  }
}

function getPath(doc: Json, path: string[]): unknown {
  let cur: unknown = doc;
  for (const k of path) cur = isObject(cur) ? cur[k] : undefined;
  return cur;
}

interface Rendered {
  label: string;
  original: Json;
  output: Json;
  result?: InjectResult;
  patch: unknown[];
}

/** Injects one document; documents without a Pod pass through. */
export function injectDocument(doc: Json, config: InjectionConfig): Rendered {
  const meta = isObject(doc.metadata) ? doc.metadata : {};
  const label = `${String(doc.kind ?? 'document')} ${meta.namespace ? `${String(meta.namespace)}/` : ''}${String(meta.name ?? meta.generateName ?? '(unnamed)')}`;
  const path = podTemplatePath(doc);
  if (path === undefined) return { label, original: doc, output: doc, patch: [] };
  const namespace = typeof meta.namespace === 'string' ? meta.namespace : undefined;
  if (path.length === 0) {
    const result = inject(doc, config, { ignoreNamespaces: true, ...(namespace ? { namespace } : {}) });
    const output = result.denied ? doc : result.pod;
    return { label, original: doc, output, result, patch: result.denied ? [] : diff(doc, output) };
  }
  const template = getPath(doc, path);
  const t = isObject(template) ? template : {};
  const pseudoPod = { apiVersion: 'v1', kind: 'Pod', metadata: t.metadata ?? {}, spec: t.spec };
  const result = inject(pseudoPod, config, { ignoreNamespaces: true, ...(namespace ? { namespace } : {}) });
  if (result.denied) return { label, original: doc, output: doc, result, patch: [] };
  const output = JSON.parse(JSON.stringify(doc)) as Json;
  const target = getPath(output, path) as Json;
  target.metadata = result.pod.metadata;
  target.spec = result.pod.spec;
  return { label, original: doc, output, result, patch: diff(doc, output) };
}

function explain(r: Rendered): string {
  const lines: string[] = [];
  if (!r.result) return `${r.label}: no Pod to inject; passed through unchanged\n`;
  if (r.result.denied) {
    lines.push(`${r.label}: would be DENIED (${r.result.code === 400 ? 'not a valid Pod' : 'policy'})`);
    for (const v of r.result.violations) lines.push(`  - [${v.rule}] ${v.message}`);
    return `${lines.join('\n')}\n`;
  }
  lines.push(`${r.label}: would be injected (${r.patch.length} patch operation${r.patch.length === 1 ? '' : 's'})`);
  if (r.result.notes.length > 0) lines.push('  notes:', ...[...new Set(r.result.notes)].map((n) => `    - ${n}`));
  if (r.result.warnings.length > 0) lines.push('  warnings:', ...r.result.warnings.map((w) => `    - ${w}`));
  if (r.patch.length > 0) {
    lines.push('  changes:');
    for (const op of r.patch as { op: string; path: string; value?: unknown }[]) {
      const value = op.value === undefined ? '' : ` = ${JSON.stringify(op.value)}`;
      lines.push(`    ${op.op.padEnd(7)} ${op.path}${value.length > 90 ? `${value.slice(0, 87)}...` : value}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export async function main(argv: string[], io: CliIO = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const fail = (code: 'WS_ERR_USAGE' | 'WS_ERR_VALIDATION' | 'WS_ERR_CONFIG_INVALID', message: string, withUsage = false): number => {
    io.stderr.write(`${formatCliError('inject', { code, message })}\n${withUsage ? `\n${usage()}\n` : ''}`);
    return code === 'WS_ERR_USAGE' ? 2 : 1;
  };
  const args = parseArgs(argv);
  if (typeof args === 'string') return fail('WS_ERR_USAGE', args, true);
  if (args.help) {
    io.stdout.write(`${usage()}\n`);
    return 0;
  }
  if (args.file === undefined) return fail('WS_ERR_USAGE', '-f FILE (or -f - for stdin) is required', true);
  let config = DEFAULT_INJECTION_CONFIG;
  let text: string;
  try {
    if (args.config !== undefined) config = loadInjectionConfigFile(args.config);
  } catch (err) {
    return fail('WS_ERR_CONFIG_INVALID', (err as Error).message);
  }
  try {
    text = args.file === '-' ? await readAll(io.stdin) : readFileSync(args.file, 'utf8');
  } catch (err) {
    return fail('WS_ERR_VALIDATION', `cannot read ${args.file === '-' ? 'standard input' : args.file}: ${(err as Error).message}`);
  }
  const source = args.file === '-' ? 'standard input' : args.file;
  const docs: Json[] = [];
  for (const [i, d] of parseAllDocuments(text).entries()) {
    if ('errors' in d && d.errors.length > 0) {
      const e = d.errors[0]!;
      // The yaml package ends its first line with a colon that introduces a source excerpt.
      const where = e.linePos ? ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})` : '';
      return fail('WS_ERR_VALIDATION', `${source}: document ${i + 1} is not valid YAML: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '').replace(/:$/, '')}${where}`);
    }
    const value: unknown = d.toJSON();
    if (value === null || value === undefined) continue;
    if (!isObject(value)) return fail('WS_ERR_VALIDATION', `${source}: document ${i + 1} is not an object`);
    if (value.kind === 'List' && Array.isArray(value.items)) docs.push(...value.items.filter(isObject));
    else docs.push(value);
  }
  if (docs.length === 0) return fail('WS_ERR_VALIDATION', `${source} holds no manifest (it is empty or only comments)`);

  const rendered = docs.map((d) => injectDocument(d, config));
  let denied = 0;
  for (const r of rendered) {
    if (r.result?.denied) {
      denied++;
      if (!args.explain) io.stderr.write(`${formatCliError('inject', { code: 'WS_ERR_FORBIDDEN', message: `${r.label}: denied: ${r.result.message}` })}\n`);
    }
  }
  if (args.explain) {
    io.stdout.write(rendered.map(explain).join(''));
  } else if (args.output === 'patch') {
    io.stdout.write(rendered.filter((r) => !r.result?.denied).map((r) => `${JSON.stringify(r.patch)}\n`).join(''));
  } else {
    const outputs = rendered.filter((r) => !r.result?.denied).map((r) => r.output);
    if (args.output === 'json') {
      const value = outputs.length === 1 ? outputs[0] : { apiVersion: 'v1', kind: 'List', items: outputs };
      io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    } else {
      io.stdout.write(outputs.map((o) => stringify(o, { lineWidth: 0, aliasDuplicateObjects: false })).join('---\n'));
    }
  }
  return denied > 0 ? 1 : 0;
}
