// Builds dist/workspace-agent: the workspace agent as one Node.js single executable application
// (SEA), so a workspace image needs no Node and no node_modules:
//
//   COPY workspace-agent /usr/local/bin/
//   ENTRYPOINT ["/usr/local/bin/workspace-agent"]
//
// Steps (https://nodejs.org/api/single-executable-applications.html):
//  1. esbuild bundles agent/main.ts and everything it imports into one CommonJS file (a SEA's main
//     script is CommonJS and can require() only built-in modules);
//  2. `node --experimental-sea-config` turns the bundle into a preparation blob (with V8's code
//     cache, so the first /health is not spent compiling);
//  3. a copy of this Node 24 binary gets the blob injected with postject, under the fuse that
//     tells Node the blob is there.
// The binary is for this machine's OS and CPU (x86_64 here; build on an arm64 runner for arm64).
// Do not `strip` it: stripping removes the injected section and the binary becomes plain node.
//
//   npm run build:agent            (or: node scripts/build-agent-sea.ts [--out PATH])
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const AGENT_MAIN = join(ROOT, 'agent', 'main.ts');
const DEFAULT_OUT = join(ROOT, 'dist', 'workspace-agent');
/** The sentinel Node's SEA support looks for; postject flips it when it injects the blob. */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const MIN_NODE_MAJOR = 24;

/**
 * The executable's entry: argv after the binary name go to the agent's main(), as after
 * `workspace-sandbox agent`, with the same argument checks and error lines; `--version` answers
 * without starting anything. Kept here rather than in a file of its own so the repository
 * typechecks before agent/main.ts exists.
 */
const ENTRY = `
import { main } from './agent/main.ts';
import { formatCliError, serverArgumentsProblem } from './lib/cli-errors.ts';
import { VERSION } from './lib/version.ts';

const args = process.argv.slice(2);
const problem = serverArgumentsProblem('agent', args);
if (args.includes('--version') || args[0] === '-v') {
  process.stdout.write(VERSION + '\\n');
} else if (problem) {
  process.stderr.write(problem + '\\n');
  process.exitCode = 2;
} else {
  main(args).then(
    (code) => { if (typeof code === 'number' && code !== 0) process.exitCode = code; },
    (err) => {
      process.stderr.write(formatCliError('agent', err) + '\\n');
      process.exitCode = 1;
    },
  );
}
`;

/** Runs a build step quietly; its output is shown only when it fails. */
function run(step: string, command: string, args: string[], cwd: string): void {
  try {
    execFileSync(command, args, { cwd, stdio: 'pipe' });
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer; message: string };
    throw new Error(`${step} failed: ${e.message}\n${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`, { cause: err });
  }
}

export interface BuildResult {
  output: string;
  bundleBytes: number;
  binaryBytes: number;
}

/** The Node binary to embed: the real file behind the running Node 24 (node_modules/.bin/node). */
function nodeBinary(): string {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < MIN_NODE_MAJOR) throw new Error(`building the agent needs Node ${MIN_NODE_MAJOR}+ (this is ${process.version}); run it through npm or node_modules/.bin/node`);
  return realpathSync(process.execPath);
}

export async function buildAgentSea(output = DEFAULT_OUT): Promise<BuildResult> {
  if (!existsSync(AGENT_MAIN)) throw new Error(`${relative(ROOT, AGENT_MAIN)} does not exist yet: nothing to build`);
  const work = mkdtempSync(join(tmpdir(), 'workspace-agent-sea-'));
  try {
    const bundle = join(work, 'workspace-agent.cjs');
    const result = await build({
      stdin: { contents: ENTRY, resolveDir: ROOT, sourcefile: 'workspace-agent-entry.ts', loader: 'ts' },
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: `node${MIN_NODE_MAJOR}`,
      outfile: bundle,
      // In a CommonJS bundle import.meta is empty; modules that derive paths from it get the
      // executable's own URL instead of undefined.
      define: { 'import.meta.url': '__workspaceAgentUrl' },
      banner: { js: 'const __workspaceAgentUrl = require("node:url").pathToFileURL(process.execPath).href;' },
      legalComments: 'none',
      logLevel: 'silent',
    });
    for (const w of result.warnings) process.stderr.write(`esbuild warning: ${w.text}${w.location ? ` (${w.location.file}:${w.location.line})` : ''}\n`);

    const blob = join(work, 'workspace-agent.blob');
    const seaConfig = join(work, 'sea-config.json');
    writeFileSync(seaConfig, JSON.stringify({
      main: bundle,
      output: blob,
      disableExperimentalSEAWarning: true,
      useCodeCache: true,
      useSnapshot: false,
      // The agent runs in the user's image, whose ENV may set NODE_OPTIONS for the user's own
      // Node programs (--require of a tracing file, --inspect, ...): never let it reach the agent.
      execArgvExtension: 'none',
    }, null, 2));
    const node = nodeBinary();
    run('node --experimental-sea-config', node, ['--experimental-sea-config', seaConfig], work);

    // Inject into a copy next to the output, then rename: the output is never a half-made binary.
    mkdirSync(dirname(output), { recursive: true });
    const partial = `${output}.partial`;
    copyFileSync(node, partial);
    chmodSync(partial, 0o755);
    const postject = createRequire(import.meta.url).resolve('postject/dist/cli.js');
    run('postject', node, [postject, partial, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], work);
    renameSync(partial, output);
    // The binary lives in dist/ beside the package's compiled code: keep it out of `npm pack`
    // (a .npmignore below the package root applies even with package.json "files").
    if (resolve(dirname(output)) === join(ROOT, 'dist')) writeFileSync(join(ROOT, 'dist', '.npmignore'), 'workspace-agent\n*.partial\n');
    return { output, bundleBytes: statSync(bundle).size, binaryBytes: statSync(output).size };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const i = process.argv.indexOf('--out');
  const out = i > 0 && process.argv[i + 1] ? resolve(process.argv[i + 1]!) : DEFAULT_OUT;
  buildAgentSea(out).then(
    (r) => {
      const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
      process.stdout.write(`built ${relative(process.cwd(), r.output) || r.output} (${mb(r.binaryBytes)}; bundle ${mb(r.bundleBytes)})\n`);
    },
    (err: unknown) => {
      process.stderr.write(`build-agent-sea: ${(err as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
