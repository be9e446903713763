// broker-client against the real server (node:test). The binary comes from $BROKER_BIN
// (tests/ts_client.rs passes cargo's); each test starts its own server on loopback with a
// fresh data directory and stops it at the end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { EventSource } from 'eventsource';
import { Broker, BrokerError } from '../dist/index.js';

const BIN = process.env.BROKER_BIN;
const ADMIN = 'letmein';
if (!BIN) throw new Error('set BROKER_BIN to the broker binary (tests/ts_client.rs does)');

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Starts the binary; resolves once it prints its address. */
async function startServer(db, port) {
  const child = spawn(BIN, ['--db', db, '--listen', '127.0.0.1', '--port', String(port),
    '--ntp', 'false', '--sse_retry_ms', '100'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start in 30 s')), 30000);
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    lines.on('line', (line) => {
      const m = line.match(/^broker listening on (.*)$/);
      if (m) { clearTimeout(timer); resolve(m[1].trim()); }
    });
  });
  return {
    url,
    child,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function withServer(t) {
  const db = mkdtempSync(join(tmpdir(), 'broker-ts-'));
  const port = await freePort();
  let server = await startServer(db, port);
  t.after(async () => { await server.stop(); rmSync(db, { recursive: true, force: true }); });
  return {
    get url() { return server.url; },
    async restart() { await server.stop(); server = await startServer(db, port); },
  };
}

async function admin(url, path, body) {
  const r = await fetch(`${url}${path}`, { method: 'POST', body: JSON.stringify({ admin_token: ADMIN, ...body }) });
  assert.equal(r.status, 200, `${path}: ${await r.clone().text()}`);
  return r.json();
}

/** Waits (bounded) until `events` has `n` entries. */
async function until(events, n, what) {
  const deadline = Date.now() + 20000;
  while (events.length < n) {
    if (Date.now() > deadline) assert.fail(`only ${events.length} of ${n} ${what}: ${JSON.stringify(events)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('login, insert, typed subscription: snapshot, live, and exact resume across a restart', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'ts', password: 'pw', tenant_name: 'web' });
  const broker = await Broker.login(s.url, 'ts', 'pw');
  await broker.insert('greeting', 'old');
  const first = await broker.insert('greeting', { text: 'hello' });
  assert.equal(typeof first.id, 'string');
  assert.ok(first.cursor > 0);

  const seen = [];
  const errors = [];
  const sub = broker.subscribe({ minRetryMs: 100, maxRetryMs: 500 })
    .on('greeting', (data, { id }) => seen.push({ id: Number(id), data }))
    .on('counter', (n, { id }) => seen.push({ id: Number(id), data: n }))
    .onError((e, willRetry) => errors.push({ message: e.message, willRetry }));
  t.after(() => sub.close());
  await until(seen, 1, 'snapshot events');
  assert.deepEqual(seen[0], { id: first.cursor, data: { text: 'hello' } });
  for (let i = 0; i < 3; i++) await broker.insert('counter', i);
  await until(seen, 4, 'live events');

  await s.restart();
  for (let i = 3; i < 6; i++) await broker.insert('counter', i);
  await until(seen, 7, 'events after the restart');
  await new Promise((r) => setTimeout(r, 300)); // nothing more may come
  assert.deepEqual(seen.slice(1).map((e) => e.data), [0, 1, 2, 3, 4, 5]);
  assert.ok(seen.every((e, i) => i === 0 || e.id > seen[i - 1].id), JSON.stringify(seen));
  assert.equal(sub.lastEventId, String(seen[6].id));
  assert.ok(errors.length >= 1 && errors.every((e) => e.willRetry), JSON.stringify(errors));
});

test('onAny sees every name; lastEventId resumes without the snapshot', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'any', password: 'pw', tenant_name: 'web' });
  const broker = new Broker(`${s.url}/`).useBasic('any', 'pw');
  const a = await broker.insert('a', 1);
  await broker.insert('b', 2);
  await broker.insert('c', { deep: [3] });
  const seen = [];
  const sub = broker.subscribe({ lastEventId: a.cursor }).onAny((e) => seen.push(e));
  t.after(() => sub.close());
  await until(seen, 2, 'events after the cursor');
  assert.deepEqual(seen.map((e) => [e.event, e.data]), [['b', 2], ['c', { deep: [3] }]]);
});

test('errors carry the status and the server sentence; revocation ends a subscription', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'err', password: 'pw', tenant_name: 'web' });
  await assert.rejects(Broker.login(s.url, 'err', 'wrong'), (e) =>
    e instanceof BrokerError && e.status === 401 && /wrong username or password/.test(e.message));
  const broker = await Broker.login(s.url, 'err', 'pw');
  await assert.rejects(broker.insert('bad\nname', 1), (e) =>
    e instanceof BrokerError && e.status === 400 && /event/.test(e.message));
  await assert.rejects(new Broker(s.url).insert('x', 1), (e) => e instanceof BrokerError && e.status === 401);
  await assert.rejects(new Broker('http://127.0.0.1:1').useBasic('a', 'b').insert('x', 1),
    (e) => e instanceof BrokerError && e.status === 0);

  const errors = [];
  const sub = broker.subscribe({ minRetryMs: 100 })
    .onOpen(() => errors.push('open'))
    .onError((e, willRetry) => errors.push({ status: e.status, willRetry }));
  await until(errors, 1, 'opens');
  await admin(s.url, '/revoke_user', { username: 'err' });
  await Promise.race([sub.done, new Promise((_, reject) => setTimeout(() => reject(new Error('still subscribed')), 10000))]);
  const last = errors.at(-1);
  assert.deepEqual(last, { status: 401, willRetry: false }, JSON.stringify(errors));
});

test('tickets: a native EventSource transport resumes across a restart with fresh tickets', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'es', password: 'pw', tenant_name: 'web' });
  const broker = await Broker.login(s.url, 'es', 'pw');
  const ticket = await broker.sseTicket();
  assert.equal(ticket.expires_in, 30);
  assert.match(ticket.ticket, /^[A-Za-z0-9_-]{43}$/);
  const url = await broker.eventSourceUrl(5);
  assert.ok(url.startsWith(`${s.url}/sse?ticket=`) && url.endsWith('&last_event_id=5'), url);

  await broker.insert('n', 0);
  const seen = [];
  const sub = broker.subscribe({ transport: 'eventsource', EventSource, minRetryMs: 100, maxRetryMs: 400 })
    .on('n', (n, { id }) => seen.push({ id: Number(id), n }));
  t.after(() => sub.close());
  assert.throws(() => sub.onAny(() => {}), /fetch transport/);
  await until(seen, 1, 'snapshot');
  await broker.insert('n', 1);
  await until(seen, 2, 'live');
  await s.restart();
  await broker.insert('n', 2);
  await broker.insert('n', 3);
  await until(seen, 4, 'after the restart');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(seen.map((e) => e.n), [0, 1, 2, 3]);
});
