// Bundles each server program into one ES module entry (plus the chunks it imports lazily), so its
// process loads only what that program uses (no node_modules, no package resolution at start-up),
// plus an SBOM of what went in. Programs: `proxy` (the credential proxy and the egress gateway,
// which share one image) and `webhook`.
//
//   dist/bundle/<program>/workspace-sandbox.mjs   `node workspace-sandbox.mjs <command>` (the bin,
//                                                 with the commands of other programs left out)
//   dist/bundle/<program>/chunks/                 modules loaded on demand (dynamic import())
//   dist/bundle/<program>/sbom.json               CycloneDX 1.5: the npm packages in the bundle,
//                                                 with versions and licenses (from esbuild's metafile)
//
//   npm run build:bundles            (or: node scripts/bundle.ts [--out DIR] [program...])
//
// Lazy paths stay lazy: a dynamic import() of a bundled module becomes a function that evaluates
// that module on the first call, and `createRequire(import.meta.url)('pkg')` (the synchronous lazy
// load lib/config.ts uses for yaml) becomes a bundled require with the same timing. Only the
// program's commands are kept: lib/cli.ts's other loaders resolve to a module whose main() refuses,
// so `--help`, `--version` and the error shape stay the bin's own.
import { build, version as esbuildVersion, type Metafile, type Plugin } from 'esbuild';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pkg from '../package.json' with { type: 'json' };

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const DEFAULT_BUNDLE_DIR = join(ROOT, 'dist', 'bundle');
export const BUNDLE_FILE = 'workspace-sandbox.mjs';
export const SBOM_FILE = 'sbom.json';

/** The module lib/cli.ts loads for each server command. */
const COMMAND_MODULES = {
  proxy: '../credential-proxy/main.ts',
  webhook: '../webhook/main.ts',
  gateway: '../gateway/main.ts',
} as const;
export type Command = keyof typeof COMMAND_MODULES;

/**
 * Each bundle and the commands it keeps. The egress gateway ships in the credential proxy's image
 * (its Deployment runs that image with `gateway`); code splitting keeps each program's modules in
 * chunks the other never loads.
 */
export const PROGRAMS = {
  proxy: ['proxy', 'gateway'],
  webhook: ['webhook'],
} as const satisfies Record<string, readonly Command[]>;
export type Program = keyof typeof PROGRAMS;

/** lib/cli.ts's loaders of other commands resolve to this: the command is not in this build. */
const absentCommand = (program: Program) => `
export async function main() {
  throw Object.assign(new Error('this build holds ${PROGRAMS[program].join(' and ')} only'), { code: 'WS_ERR_USAGE' });
}`;

function onlyProgram(program: Program): Plugin {
  const cli = join(ROOT, 'lib', 'cli.ts');
  const kept = new Set<string>(PROGRAMS[program].map((c) => COMMAND_MODULES[c]));
  return {
    name: 'only-program',
    setup(b) {
      b.onResolve({ filter: /\/main\.ts$|-cli\.ts$/ }, (args) => {
        if (args.importer !== cli || kept.has(args.path)) return undefined;
        return { path: args.path, namespace: 'absent-command' };
      });
      b.onLoad({ filter: /.*/, namespace: 'absent-command' }, () => ({ contents: absentCommand(program), loader: 'js' }));
    },
  };
}

/** `createRequire(import.meta.url)('pkg')` in our sources → `require('pkg')`, which esbuild bundles lazily. */
const LAZY_REQUIRE = /createRequire\(import\.meta\.url\)\(('[^']+')\)/g;
const lazyRequire: Plugin = {
  name: 'lazy-require',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, (args) => {
      if (args.path.includes('/node_modules/')) return undefined;
      const text = readFileSync(args.path, 'utf8');
      if (!LAZY_REQUIRE.test(text)) return undefined;
      return { contents: text.replace(LAZY_REQUIRE, 'require($1)'), loader: 'ts' };
    });
  },
};

/**
 * prom-client's entry with only the parts the programs use. Its index also loads the Pushgateway
 * (node:https, so node:tls: ~7 MiB resident) and the cluster AggregatorRegistry (node:cluster,
 * node:child_process), which a program that serves its own /metrics never calls.
 */
const PROM_CLIENT_ENTRY = `'use strict';
exports.register = require('./lib/registry').globalRegistry;
exports.Registry = require('./lib/registry');
exports.Counter = require('./lib/counter');
exports.Gauge = require('./lib/gauge');
exports.Histogram = require('./lib/histogram');
exports.Summary = require('./lib/summary');
exports.collectDefaultMetrics = require('./lib/defaultMetrics');
`;
export const promClientCore: Plugin = {
  name: 'prom-client-core',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]prom-client[\\/]index\.js$/ }, (args) => ({
      contents: PROM_CLIENT_ENTRY, loader: 'js', resolveDir: join(args.path, '..'),
    }));
  },
};

/** The package a bundled file belongs to: the path after its last node_modules/. */
function packageOf(input: string): string | undefined {
  const i = input.lastIndexOf('node_modules/');
  if (i < 0) return undefined;
  const parts = input.slice(i + 'node_modules/'.length).split('/');
  return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
}

interface Component { type: 'library'; name: string; version: string; purl: string; licenses: { expression: string }[] }

/** CycloneDX 1.5 JSON of the npm packages whose files are in the bundle (with at least one byte kept). */
export function sbomFromMetafile(meta: Metafile, program: Program): object {
  const dirs = new Map<string, string>();
  for (const [outFile, out] of Object.entries(meta.outputs)) {
    if (!outFile.endsWith('.mjs')) continue;
    for (const [input, { bytesInOutput }] of Object.entries(out.inputs)) {
      const name = packageOf(input);
      if (name && bytesInOutput > 0) dirs.set(name, input.slice(0, input.lastIndexOf('node_modules/') + 'node_modules/'.length + name.length));
    }
  }
  const components: Component[] = [...dirs].sort(([a], [b]) => a.localeCompare(b)).map(([name, dir]) => {
    const p = JSON.parse(readFileSync(resolve(ROOT, dir, 'package.json'), 'utf8')) as { version: string; license?: string | { type: string } };
    const license = typeof p.license === 'string' ? p.license : p.license?.type ?? 'NOASSERTION';
    return { type: 'library', name, version: p.version, purl: `pkg:npm/${name.replace('@', '%40')}@${p.version}`, licenses: [{ expression: license }] };
  });
  return {
    bomFormat: 'CycloneDX',
    specVersion: '1.5',
    version: 1,
    metadata: {
      component: { type: 'application', name: `${pkg.name}-${program}`, version: pkg.version, licenses: [{ expression: pkg.license }] },
      tools: { components: [{ type: 'application', name: 'esbuild', version: esbuildVersion }] },
    },
    components,
  };
}

/** Builds one program's bundle and SBOM into `outDir`; resolves with the bundle's path. */
export async function bundleProgram(program: Program, outDir: string): Promise<string> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const result = await build({
    entryPoints: [join(ROOT, 'bin', 'workspace-sandbox.ts')],
    // Code splitting: what a program loads only on some paths (ioredis, http-proxy-3, the AWS SDK)
    // sits in chunks that are read and compiled when first imported. Measured on the proxy at idle:
    // 82 MiB RSS split, 88 MiB as one file, 95 MiB from tsc's dist/ (test/bench/programs.ts).
    outdir: outDir,
    splitting: true,
    outExtension: { '.js': '.mjs' },
    entryNames: 'workspace-sandbox',
    chunkNames: 'chunks/[name]-[hash]',
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    minifySyntax: true,
    minifyWhitespace: true,
    legalComments: 'eof',
    metafile: true,
    logLevel: 'warning',
    // CommonJS packages in an ES module bundle call require() for built-ins: give them one.
    banner: { js: "import { createRequire as __wsCreateRequire } from 'node:module'; const require = __wsCreateRequire(import.meta.url);" },
    plugins: [onlyProgram(program), lazyRequire, promClientCore],
  });
  writeFileSync(join(outDir, SBOM_FILE), `${JSON.stringify(sbomFromMetafile(result.metafile, program), null, 2)}\n`);
  return join(outDir, BUNDLE_FILE);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const outAt = args.indexOf('--out');
  const base = outAt >= 0 ? resolve(args[outAt + 1] ?? '') : DEFAULT_BUNDLE_DIR;
  const named = outAt >= 0 ? args.filter((_, i) => i !== outAt && i !== outAt + 1) : args;
  const unknown = named.filter((a) => !Object.hasOwn(PROGRAMS, a));
  if (unknown.length) {
    process.stderr.write(`bundle: unknown program ${unknown.join(', ')} (one of ${Object.keys(PROGRAMS).join(', ')})\n`);
    process.exit(2);
  }
  for (const program of (named.length ? named : Object.keys(PROGRAMS)) as Program[]) {
    const file = await bundleProgram(program, join(base, program));
    process.stdout.write(`${relative(process.cwd(), file)}\n`);
  }
}
