// `workspace-sandbox <command>`: dispatch to the programs. Each program's module is loaded only
// when its command runs, so `agent` does not pay for the webhook's dependencies.
import { parseArgs } from 'node:util';
import { formatCliError, parseArgsProblem, serverArgumentsProblem } from './cli-errors.ts';
import { PRODUCT } from './constants.ts';
import { VERSION } from './version.ts';

export interface Command {
  summary: string;
  /** Servers take no arguments but --help (see serverArgumentsProblem). */
  server: boolean;
  load: () => Promise<{ main: (argv: string[]) => Promise<number | void> }>;
}

export const COMMANDS: Record<string, Command> = {
  webhook: { summary: 'the mutating admission webhook (HTTPS /mutate, metrics on 9090)', server: true, load: () => import('../webhook/main.ts') },
  inject: { summary: 'inject Pods and Pod templates offline, like the webhook (-f pod.yaml)', server: false, load: () => import('../webhook/inject-cli.ts') },
  guard: { summary: 'print the ValidatingAdmissionPolicy built from the webhook\'s rules for an injection config', server: false, load: () => import('../webhook/guard-cli.ts') },
  proxy: { summary: 'the credential proxy sidecar (egress allowlist, SSRF guard, /rules API)', server: true, load: () => import('../credential-proxy/main.ts') },
  gateway: { summary: 'the egress gateway (CONNECT with the sidecar\'s projected token, SSRF guard, ceiling)', server: true, load: () => import('../gateway/main.ts') },
  agent: { summary: 'the workspace agent (/health, /execute, /files over TCP or a Unix socket)', server: true, load: () => import('../agent/main.ts') },
};

const MIN_NODE_MAJOR = 24;

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length), '--version'.length);
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return [
    `Usage: ${PRODUCT} <command> [options]`,
    '',
    'Commands:',
    ...lines,
    '',
    'Options:',
    `  ${'--help'.padEnd(width)}  show this help, or a command's with '<command> --help'`,
    `  ${'--version'.padEnd(width)}  print the version`,
    '',
    'Each program is configured by environment variables; see its --help.',
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < MIN_NODE_MAJOR) {
    process.stderr.write(`${PRODUCT} needs Node.js ${MIN_NODE_MAJOR} or newer; this is ${process.version}.\n`);
    return 1;
  }
  // Options before the command are this dispatcher's; everything from the command on is the command's.
  const at = argv.findIndex((a) => !a.startsWith('-'));
  let own;
  try {
    own = parseArgs({ args: at === -1 ? argv : argv.slice(0, at), strict: true, options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } } }).values;
  } catch (err) {
    process.stderr.write(`${formatCliError(undefined, { code: 'WS_ERR_USAGE', message: parseArgsProblem(err) })}\n\n${usage()}\n`);
    return 2;
  }
  const name = at === -1 ? undefined : argv[at]!;
  if (own.help || name === 'help') {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  if (own.version) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  if (name === undefined) {
    process.stdout.write(`${usage()}\n`);
    return 2;
  }
  const rest = argv.slice(at + 1);
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`${formatCliError(undefined, { code: 'WS_ERR_USAGE', message: `unknown command '${name}'` })}\n\n${usage()}\n`);
    return 2;
  }
  if (rest.includes('--version')) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const problem = command.server ? serverArgumentsProblem(name, rest) : undefined;
  if (problem) {
    process.stderr.write(`${problem}\n`);
    return 2;
  }
  const mod = await command.load();
  return (await mod.main(rest)) ?? 0;
}
