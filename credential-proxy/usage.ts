// `workspace-sandbox proxy --help`.
import { PRODUCT } from '../lib/constants.ts';
import { PROXY_ENV_HELP } from './config.ts';

export function usage(): string {
  const width = Math.max(...Object.keys(PROXY_ENV_HELP).map((k) => k.length));
  return [
    `Usage: ${PRODUCT} proxy`,
    '',
    'The credential proxy sidecar: an egress allowlist proxy for the workspace (HTTP_PROXY/HTTPS_PROXY),',
    'with an SSRF guard, CONNECT tunnels, plain-HTTP forwarding and the /rules admin API.',
    '',
    'Environment:',
    ...Object.entries(PROXY_ENV_HELP).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
  ].join('\n');
}
