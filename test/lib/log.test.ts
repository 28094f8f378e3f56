import t from 'tap';
import { createLogger, REDACTED } from '../../lib/log.ts';
import { captureLogs } from '../helpers/log-capture.ts';

const SECRET = 'sk-live-7f3a9c21e4b04d7d';

t.test('a configured secret never reaches the output, wherever it appears', async (t) => {
  const cap = captureLogs();
  const log = createLogger({ name: 'test', secrets: [SECRET], destination: cap.destination });
  log.info({ token: SECRET, nested: { deep: [`Bearer ${SECRET}`] } }, `message with ${SECRET} inside`);
  log.error({ err: new Error(`upstream rejected ${SECRET}`) }, 'failure');
  log.child({ component: 'child' }).warn({ url: `https://x.example/?key=${SECRET}` }, 'child line');
  const out = cap.text();
  t.equal(cap.lines().length, 3);
  t.notMatch(out, SECRET);
  t.match(out, REDACTED);
  t.equal(cap.lines()[0]!.token, REDACTED);
});

t.test('secrets added later and JSON-escaped forms are scrubbed', async (t) => {
  const cap = captureLogs();
  const log = createLogger({ name: 'test', destination: cap.destination });
  const tricky = 'pa"ss\\word\n42';
  log.secrets.add(tricky);
  log.secrets.add('abc'); // too short to scrub safely; ignored
  log.info({ value: tricky }, 'after add');
  const out = cap.text();
  t.notMatch(out, JSON.stringify(tricky).slice(1, -1));
  t.equal(cap.lines()[0]!.value, REDACTED);
  t.equal(log.secrets.size, 1);
});

t.test('credential headers are redacted by name', async (t) => {
  const cap = captureLogs();
  const log = createLogger({ name: 'test', destination: cap.destination });
  log.info({
    headers: { authorization: 'Basic Zm9vOmJhcg==', 'x-api-key': 'key-1', accept: 'text/plain' },
    req: { headers: { cookie: 'session=1', 'proxy-authorization': 'Basic eA==' } },
    res: { headers: { 'set-cookie': 'a=b' } },
    upstream: { headers: { 'x-amz-security-token': 'FwoG' } },
  }, 'request');
  const line = cap.lines()[0] as Record<string, Record<string, Record<string, string>>>;
  t.equal(line.headers!.authorization, REDACTED);
  t.equal(line.headers!['x-api-key'], REDACTED);
  t.equal(line.headers!.accept, 'text/plain');
  t.equal(line.req!.headers!.cookie, REDACTED);
  t.equal(line.req!.headers!['proxy-authorization'], REDACTED);
  t.equal(line.res!.headers!['set-cookie'], REDACTED);
  t.equal(line.upstream!.headers!['x-amz-security-token'], REDACTED);
  t.notMatch(cap.text(), /Zm9vOmJhcg|key-1|session=1|FwoG/);
});

t.test('level comes from options', async (t) => {
  const cap = captureLogs();
  const log = createLogger({ name: 'test', level: 'warn', destination: cap.destination });
  log.info('hidden');
  log.warn('shown');
  t.same(cap.lines().map((l) => [l.level, l.msg, l.name]), [['warn', 'shown', 'test']]);
});
