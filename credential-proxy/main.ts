// `workspace-sandbox proxy`: start the CA key, then load and run the program.
// Only node:crypto is imported up front, so the key is generating on the thread pool while the
// module graph loads (see ca-key.ts).
import { startCAKey } from './ca-key.ts';

export async function main(argv: string[]): Promise<number | void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    const { usage } = await import('./usage.ts');
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const caKey = startCAKey();
  // An invalid config ends the program before the key is used: don't report that as unhandled.
  caKey.catch(() => undefined);
  const { runProxy } = await import('./run.ts');
  await runProxy(caKey);
}
