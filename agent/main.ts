// `workspace-sandbox agent`: load config, take care of PID 1, listen, shut down on SIGTERM.
// Bundled into one CommonJS file for the single executable: no top-level await, no import.meta,
// no files read relative to the source.
import { lstatSync, unlinkSync } from 'node:fs';
import { PRODUCT } from '../lib/constants.ts';
import { installProcessSafetyNet } from '../lib/guard.ts';
import { createLogger } from '../lib/log.ts';
import { createMetricsRegistry } from '../lib/metrics.ts';
import { exitOnSignals, listen } from '../lib/server.ts';
import { AGENT_ENV_HELP, loadAgentConfig, SOCKET_MODE } from './config.ts';
import { becomeReaperIfPid1 } from './init-reaper.ts';
import { createProxyRelay, RELAY_ADDRESS } from './relay.ts';
import { createAgentServer } from './server.ts';

function usage(): string {
  const width = Math.max(...AGENT_ENV_HELP.map(([n]) => n.length));
  return [
    `Usage: ${PRODUCT} agent`,
    '',
    'The workspace agent: runs commands (/execute) and moves files (/files) inside the workspace',
    'container, over TCP or a Unix socket. GET /health is open; everything else needs the bearer',
    'token when AGENT_TOKEN_FILE is set.',
    '',
    'Environment:',
    ...AGENT_ENV_HELP.map(([name, def, what]) => `  ${name.padEnd(width)}  ${what} (default: ${def})`),
  ].join('\n');
}

/** Removes our socket file at exit (only if it is still a socket: never someone's regular file). */
function removeSocketAtExit(path: string): void {
  process.once('exit', () => {
    try {
      if (lstatSync(path).isSocket()) unlinkSync(path);
    } catch {
      // already gone
    }
  });
}

export async function main(argv: string[]): Promise<number | void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const config = loadAgentConfig();
  const logger = createLogger({ name: 'agent', level: config.logLevel, secrets: config.token ? [config.token] : [] });
  becomeReaperIfPid1(config.initReaper, logger);
  const registry = createMetricsRegistry({ program: 'agent' });
  // An error that escaped every handler guard is logged and counted (uncaught_errors_total): the
  // agent is the workspace container's main process, and its exit restarts the workspace.
  installProcessSafetyNet({ logger, registry });
  const agent = createAgentServer(config, { logger, registry });
  const target = config.listen.mode === 'tcp'
    ? { port: config.listen.port, host: config.listen.host }
    : { path: config.listen.path, mode: SOCKET_MODE };
  const address = await listen(agent.server, target);
  if (config.listen.mode === 'uds') removeSocketAtExit(config.listen.path);
  // The relay dies with the process: it holds no state worth draining.
  const relay = config.proxyRelay === undefined ? undefined : await listen(createProxyRelay(config.proxyRelay, logger).server, RELAY_ADDRESS);
  exitOnSignals(agent.shutdown, logger);
  logger.info({
    address: address.display,
    workspaceRoot: agent.workspace.root,
    auth: config.token ? 'bearer' : 'none',
    processIsolation: agent.processIsolation,
    maxConcurrent: config.maxConcurrent,
    ...(relay ? { proxyRelay: `${relay.display} -> ${config.proxyRelay}` } : {}),
  }, 'agent listening');
}
