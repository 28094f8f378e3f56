// Loaded into every test process (tap's node-arg in package.json): the process gets a temporary
// root of its own and TMPDIR points at it, so every os.tmpdir() directory a test, a helper or a
// child it starts makes lands inside, and the whole root is removed when the process exits,
// whether or not the test removed what it made. World-traversable (0755) like /tmp itself: tests
// run commands as uid 1000 in directories they open up on purpose.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = mkdtempSync(join(tmpdir(), 'ws-test-'));
chmodSync(root, 0o755);
process.env.TMPDIR = root;
process.on('exit', () => {
  try {
    rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  } catch {
    // A mount still in place (a sandbox a failed test left) keeps its directory; nothing else to do.
  }
});
