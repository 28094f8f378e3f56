// The shapes every command's error lines share, in a module of their own (no program imports) so
// the agent's single executable prints them exactly as `workspace-sandbox agent` does.
import { PRODUCT } from './constants.ts';

/** The one shape of every error line: `workspace-sandbox <command>: <CODE>: <message>`. */
export function formatCliError(command: string | undefined, err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' && e.code.startsWith('WS_ERR_') ? e.code : 'WS_ERR_INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return `${PRODUCT}${command ? ` ${command}` : ''}: ${code}: ${message}`;
}

/**
 * A util.parseArgs error as a usage message: its first sentence (the rest tells how to pass the
 * argument anyway with `--`, which no command here takes).
 */
export function parseArgsProblem(err: unknown): string {
  return String((err as Error).message).split('. ')[0]!.replace(/\.$/, '');
}

/**
 * Servers are configured by environment variables only: any argument but --help is refused, in
 * one wording for all. The error line, or undefined when `argv` is fine.
 */
export function serverArgumentsProblem(command: string, argv: readonly string[]): string | undefined {
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) return undefined;
  const message = `unexpected argument '${argv[0]}': the ${command} is configured by environment variables (see '${PRODUCT} ${command} --help')`;
  return formatCliError(command, { code: 'WS_ERR_USAGE', message });
}
