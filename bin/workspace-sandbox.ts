#!/usr/bin/env node
// The package's one bin. Kept free of logic so it also runs far enough on an old Node to say so.
import { formatCliError } from '../lib/cli-errors.ts';
import { COMMANDS, run } from '../lib/cli.ts';

const argv = process.argv.slice(2);
run(argv).then(
  (code) => {
    // Servers keep the process alive; one-shot commands end here.
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    const command = argv[0] !== undefined && Object.hasOwn(COMMANDS, argv[0]) ? argv[0] : undefined;
    process.stderr.write(`${formatCliError(command, err)}\n`);
    // A program that failed to start must stop now, not finish background start-up work (such as
    // writing CA files a running sibling relies on).
    process.exit(1);
  },
);
