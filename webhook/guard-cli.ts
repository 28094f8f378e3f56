// `workspace-sandbox guard [--config FILE]`: prints the ValidatingAdmissionPolicy and its binding
// built from the rule table for an injection config (the manifests hold this output).
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { formatCliError, parseArgsProblem } from '../lib/cli-errors.ts';
import { PRODUCT } from '../lib/constants.ts';
import { DEFAULT_INJECTION_CONFIG, loadInjectionConfigFile } from './config.ts';
import { guardYaml } from './guard.ts';

export function usage(): string {
  return [
    `Usage: ${PRODUCT} guard [--config FILE]`,
    '',
    'Prints the ValidatingAdmissionPolicy (and its binding) that admits, in injection-enabled',
    'namespaces, only Pods in the shape the webhook gives them under this injection config.',
    'It is built from the same rule table the webhook enforces (webhook/rules.ts).',
    '',
    'Options:',
    '      --config FILE     injection config (default: the built-in config)',
    '  -h, --help            show this help',
  ].join('\n');
}

export async function main(argv: string[], io: { stdout: Writable; stderr: Writable } = process): Promise<number> {
  let args;
  try {
    args = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (err) {
    io.stderr.write(`${formatCliError('guard', { code: 'WS_ERR_USAGE', message: parseArgsProblem(err) })}\n\n${usage()}\n`);
    return 2;
  }
  if (args.help) {
    io.stdout.write(`${usage()}\n`);
    return 0;
  }
  const configFile = args.config;
  try {
    const config = configFile === undefined ? DEFAULT_INJECTION_CONFIG : loadInjectionConfigFile(configFile);
    io.stdout.write(guardYaml(config, configFile ?? '(built-in config)'));
    return 0;
  } catch (err) {
    io.stderr.write(`${formatCliError('guard', err)}\n`);
    return 1;
  }
}
