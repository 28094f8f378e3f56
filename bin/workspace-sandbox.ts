#!/usr/bin/env node
// The package's one bin. Kept free of logic so it also runs far enough on an old Node to say so.
import { PRODUCT } from '../lib/constants.ts';
import { run } from '../lib/cli.ts';

run(process.argv.slice(2)).then(
  (code) => {
    // Servers keep the process alive; one-shot commands end here.
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    const e = err as { code?: string; message?: string };
    process.stderr.write(`${PRODUCT}: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
    // A program that failed to start must stop now, not finish background start-up work (such as
    // writing CA files a running sibling relies on).
    process.exit(1);
  },
);
