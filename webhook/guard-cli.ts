// `workspace-sandbox guard [--config FILE]`: prints the ValidatingAdmissionPolicy and its binding
// built from the rule table for an injection config (the manifests hold this output).
import type { Writable } from 'node:stream';
import { formatCliError } from '../lib/cli-errors.ts';
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
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') {
      io.stdout.write(`${usage()}\n`);
      return 0;
    }
    if (a === '--config' && argv[i + 1] !== undefined) configFile = argv[++i];
    else if (a.startsWith('--config=')) configFile = a.slice('--config='.length);
    else {
      io.stderr.write(`${formatCliError('guard', { code: 'WS_ERR_USAGE', message: `unexpected argument ${JSON.stringify(a)}` })}\n\n${usage()}\n`);
      return 2;
    }
  }
  try {
    const config = configFile === undefined ? DEFAULT_INJECTION_CONFIG : loadInjectionConfigFile(configFile);
    io.stdout.write(guardYaml(config, configFile ?? '(built-in config)'));
    return 0;
  } catch (err) {
    io.stderr.write(`${formatCliError('guard', err)}\n`);
    return 1;
  }
}
