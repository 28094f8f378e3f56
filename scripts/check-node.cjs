// Runs before every npm entry point (start, demo, test, bench) on whatever `node` npm found, which
// is the devDependency's Node 24 after `npm ci` and the system Node otherwise. Plain CommonJS with
// no syntax newer than Node 10, so an old Node gets this sentence instead of a stack trace.
'use strict';
var required = 24;
var major = Number(process.versions.node.split('.')[0]);
if (major < required) {
  process.stderr.write(
    'workspace-sandbox needs Node.js ' + required + '; `node` here is ' + process.version + '.\n' +
    'Run `npm ci` in the checkout (it installs Node ' + required + ' as a devDependency; do not use --ignore-scripts),\n' +
    'or put Node.js ' + required + ' first on PATH.\n');
  process.exit(1);
}
