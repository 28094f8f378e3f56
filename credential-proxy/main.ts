// `workspace-sandbox proxy`: load and run the program (its module graph only when it runs).

export async function main(argv: string[]): Promise<number | void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    const { usage } = await import('./usage.ts');
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const { runProxy } = await import('./run.ts');
  await runProxy();
}
