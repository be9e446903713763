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
import { Broker, BrokerError, jwtTimes } from '../dist/index.js';

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
async function startServer(db, port, flags = []) {
  const child = spawn(BIN, ['--db', db, '--listen', '127.0.0.1', '--port', String(port),
    '--ntp', 'false', '--sse_retry_ms', '100', ...flags], { stdio: ['ignore', 'pipe', 'inherit'] });
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

async function withServer(t, flags = []) {
  const db = mkdtempSync(join(tmpdir(), 'broker-ts-'));
  const port = await freePort();
  let server = await startServer(db, port, flags);
  t.after(async () => { await server.stop(); rmSync(db, { recursive: true, force: true }); });
  return {
    get url() { return server.url; },
    async restart() { await server.stop(); server = await startServer(db, port, flags); },
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

/** Waits (bounded) until `check()` is truthy, asking every `every` ms. */
async function waitFor(check, what, ms = 20000, every = 20) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Resolves with `promise`, or fails after `ms`. */
function within(promise, ms, what) {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  })]).finally(() => clearTimeout(timer));
}

/** The whole history of the caller's tenant, oldest first, read with plain fetch. */
async function storedEvents(url, auth) {
  const r = await fetch(`${url}/events?after=0&limit=1000`, { headers: { authorization: auth } });
  assert.equal(r.status, 200);
  return (await r.json()).events;
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
    .onClosed((reason) => errors.push({ closed: reason }))
    .onError((e, willRetry) => errors.push({ status: e.status, willRetry }));
  await until(errors, 1, 'opens');
  await admin(s.url, '/revoke_user', { username: 'err' });
  await within(sub.done, 10000, 'the subscription ending');
  // Told why, and no reconnection attempt (it would only be refused).
  assert.deepEqual(errors, ['open', { closed: 'revoked' }, { status: 401, willRetry: false }]);
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

test('filters: only the named events, on both transports, in the snapshot, live and on resume', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'flt', password: 'pw', tenant_name: 'web' });
  const broker = await Broker.login(s.url, 'flt', 'pw');
  const url = await broker.eventSourceUrl(5, { events: ['a', 'b c'], envelope: true });
  assert.match(url, /^http:\/\/[^?]+\/sse\?ticket=[A-Za-z0-9_-]{43}&last_event_id=5&event=a&event=b\+c&envelope=true$/);

  await broker.insert('a', 'a0');
  await broker.insert('b', 'b0');
  await broker.insert('c', 'c0');
  const seen = { fetch: [], es: [] };
  const push = (list) => (data, { id, event }) => list.push({ id: Number(id), event, data });
  const viaFetch = broker.subscribe({ events: ['a', 'c'], minRetryMs: 100, maxRetryMs: 400 })
    .onAny((e) => seen.fetch.push({ id: Number(e.id), event: e.event, data: e.data }));
  const viaEs = broker.subscribe({ events: ['a', 'c'], transport: 'eventsource', EventSource, minRetryMs: 100, maxRetryMs: 400 })
    .on('a', push(seen.es)).on('b', push(seen.es)).on('c', push(seen.es));
  t.after(() => { viaFetch.close(); viaEs.close(); });
  await until(seen.fetch, 2, 'snapshot (fetch)');
  await until(seen.es, 2, 'snapshot (eventsource)');
  for (const name of ['a', 'b', 'c']) await broker.insert(name, `${name}1`);
  await until(seen.fetch, 4, 'live (fetch)');
  await until(seen.es, 4, 'live (eventsource)');
  await s.restart();
  for (const name of ['b', 'c', 'a']) await broker.insert(name, `${name}2`);
  await until(seen.fetch, 6, 'after the restart (fetch)');
  await until(seen.es, 6, 'after the restart (eventsource)');
  const marker = await broker.insert('c', 'end');
  await until(seen.fetch, 7, 'the marker (fetch)');
  await until(seen.es, 7, 'the marker (eventsource)');
  const expected = ['a0', 'c0', 'a1', 'c1', 'c2', 'a2', 'end'];
  for (const [name, list] of Object.entries(seen)) {
    assert.deepEqual(list.map((e) => e.data), expected, name);
    assert.ok(list.every((e) => e.event === 'a' || e.event === 'c'), name);
    // Cursors stay global: b's cursors are skipped, not renumbered.
    assert.ok(list.every((e, i) => i === 0 || e.id > list[i - 1].id), JSON.stringify(list));
    assert.equal(list.at(-1).id, marker.cursor, name);
  }
  assert.equal(viaFetch.lastEventId, String(marker.cursor));
});

test('envelope: listeners get {id, at, by, data, cursor, event}; by is null for the admin', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'env', password: 'pw', tenant_name: 'web' });
  const broker = await Broker.login(s.url, 'env', 'pw');
  const first = await broker.insert('door', 'open');
  const seen = [];
  const esSeen = [];
  const sub = broker.subscribe({ envelope: true, events: ['door'], minRetryMs: 100 })
    .on('door', (envelope, meta) => seen.push({ envelope, meta }));
  const es = broker.subscribe({ envelope: true, transport: 'eventsource', EventSource, minRetryMs: 100 })
    .on('door', (envelope) => esSeen.push(envelope));
  t.after(() => { sub.close(); es.close(); });
  await until(seen, 1, 'snapshot');
  const { envelope, meta } = seen[0];
  assert.deepEqual(Object.keys(envelope).sort(), ['at', 'by', 'cursor', 'data', 'event', 'id']);
  assert.equal(envelope.id, first.id);
  assert.equal(envelope.cursor, first.cursor);
  assert.equal(envelope.event, 'door');
  assert.equal(envelope.by, 'env');
  assert.equal(envelope.data, 'open');
  assert.ok(Math.abs(Date.parse(envelope.at) - Date.now()) < 60000, envelope.at);
  assert.deepEqual(meta, { id: String(first.cursor), event: 'door' });

  const { cursor } = await admin(s.url, '/admin_insert', { tenant_name: 'web', event: 'door', data: { closed: true } });
  await until(seen, 2, 'the admin insert');
  assert.deepEqual({ ...seen[1].envelope, at: undefined, id: undefined },
    { at: undefined, id: undefined, by: null, data: { closed: true }, cursor, event: 'door' });
  await until(esSeen, 2, 'eventsource envelopes');
  assert.deepEqual(esSeen.map((e) => [e.cursor, e.by, e.data]), [[first.cursor, 'env', 'open'], [cursor, null, { closed: true }]]);
});

test('history: one page has {events, next, head}; historyAll walks the whole tenant once, both ways', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'hist', password: 'pw', tenant_name: 'web' });
  await admin(s.url, '/create_user', { username: 'other', password: 'pw', tenant_name: 'elsewhere' });
  const broker = await Broker.login(s.url, 'hist', 'pw');
  const other = await Broker.login(s.url, 'other', 'pw');
  const inserted = [];
  for (let i = 0; i < 23; i++) {
    inserted.push({ ...(await broker.insert(i % 3 === 0 ? 'x' : 'y', i)), i });
    if (i % 5 === 0) await other.insert('x', 'not yours');
  }
  const cursors = inserted.map((e) => e.cursor);

  const page = await broker.history({ limit: 5 });
  assert.deepEqual(page.events.map((e) => e.cursor), cursors.slice(-5).reverse());
  assert.equal(page.next, cursors.at(-5));
  assert.ok(page.head >= cursors.at(-1));
  const e = page.events[0];
  assert.deepEqual(Object.keys(e).sort(), ['at', 'by', 'cursor', 'data', 'event', 'id']);
  assert.deepEqual([e.id, e.by, e.data, e.event], [inserted.at(-1).id, 'hist', 22, 'y']);

  const ascending = [];
  for await (const ev of broker.historyAll({ after: 0, limit: 4 })) ascending.push(ev.cursor);
  assert.deepEqual(ascending, cursors);
  const descending = [];
  for await (const ev of broker.historyAll({ limit: 7 })) descending.push(ev.cursor);
  assert.deepEqual(descending, [...cursors].reverse());
  const xs = [];
  for await (const ev of broker.historyAll({ after: 0, limit: 2, events: ['x'] })) xs.push(ev.data);
  assert.deepEqual(xs, inserted.filter((e) => e.i % 3 === 0).map((e) => e.i));
  const middle = [];
  for await (const ev of broker.historyAll({ before: cursors[10], limit: 3 })) middle.push(ev.cursor);
  assert.deepEqual(middle, cursors.slice(0, 10).reverse());
  const last = await broker.history({ after: cursors.at(-1) });
  assert.deepEqual([last.events, last.next], [[], null]);
  await assert.rejects(broker.history({ limit: 0 }), (err) => err instanceof BrokerError && err.status === 400);
});

test('broker.closed: deleted and credentials_changed end a subscription without reconnecting; shutdown reconnects', async (t) => {
  const s = await withServer(t);
  for (const username of ['del', 'chg', 'stay']) {
    await admin(s.url, '/create_user', { username, password: 'pw', tenant_name: 'web' });
  }
  const watch = async (username, transport) => {
    const broker = await Broker.login(s.url, username, 'pw');
    const log = [];
    const data = [];
    const sub = broker.subscribe({ transport, EventSource, minRetryMs: 100, maxRetryMs: 400 })
      .on('n', (n) => data.push(n))
      .onOpen(() => log.push('open'))
      .onClosed((reason, { cursor }) => log.push({ closed: reason, cursor: typeof cursor }))
      .onError((e, willRetry) => log.push({ status: e.status, willRetry }));
    t.after(() => sub.close());
    await until(log, 1, `${username}: open`);
    return { broker, sub, log, data };
  };
  const del = await watch('del', 'fetch');
  const chg = await watch('chg', 'eventsource');
  const stay = await watch('stay', 'fetch');

  await admin(s.url, '/delete_user', { username: 'del' });
  await within(del.sub.done, 10000, 'the deleted user\'s subscription ending');
  assert.deepEqual(del.log, ['open', { closed: 'deleted', cursor: 'number' }, { status: 401, willRetry: false }]);
  await admin(s.url, '/update_user', { username: 'chg', password: 'a new pw' });
  await within(chg.sub.done, 10000, 'the changed user\'s subscription ending');
  assert.deepEqual(chg.log, ['open', { closed: 'credentials_changed', cursor: 'number' }, { status: 401, willRetry: false }]);

  await stay.broker.insert('n', 1);
  await until(stay.data, 1, 'before the restart');
  await s.restart();
  await stay.broker.insert('n', 2);
  await until(stay.data, 2, 'after the restart');
  assert.deepEqual(stay.data, [1, 2]);
  assert.deepEqual(stay.log.slice(0, 2), ['open', { closed: 'shutdown', cursor: 'number' }]);
  assert.ok(stay.log.filter((l) => l === 'open').length >= 2, JSON.stringify(stay.log));
  assert.ok(stay.log.every((l) => l.willRetry !== false), JSON.stringify(stay.log));
});

test('token refresh: subscriptions on both transports outlive several JWT expiries and a reconnect', async (t) => {
  const s = await withServer(t, ['--jwt_expiry', '4']);
  await admin(s.url, '/create_user', { username: 'ref', password: 'pw', tenant_name: 'web' });
  const jwts = [];
  const broker = await Broker.login(s.url, 'ref', 'pw', { onJwt: (jwt) => jwts.push(jwt) });
  t.after(() => broker.dispose());
  const original = broker.jwt;
  assert.deepEqual(jwts, [original]);
  const refused = async (jwt) =>
    (await fetch(`${s.url}/verify`, { headers: { authorization: `Bearer ${jwt}` } })).status === 401;

  const opens = [];
  const seen = { fetch: [], es: [] };
  const errors = [];
  const viaFetch = broker.subscribe({ minRetryMs: 100, maxRetryMs: 400 })
    .on('n', (n) => seen.fetch.push(n)).onOpen(() => opens.push('fetch'))
    .onError((e, willRetry) => errors.push({ message: e.message, willRetry }));
  const viaEs = broker.subscribe({ transport: 'eventsource', EventSource, minRetryMs: 100, maxRetryMs: 400 })
    .on('n', (n) => seen.es.push(n)).onOpen(() => opens.push('es'))
    .onError((e, willRetry) => errors.push({ message: e.message, willRetry }));
  t.after(() => { viaFetch.close(); viaEs.close(); });
  await until(opens, 2, 'opens');

  // Insert while tokens come and go, until two refreshes happened and the login's token is
  // refused by the server (expired): more than one expiry period.
  let n = 0;
  await waitFor(async () => {
    await broker.insert('n', n++);
    return jwts.length >= 3 && await refused(original);
  }, 'two refreshes and the login token expiring', 30000, 250);
  // Each token was replaced before it expired.
  for (let i = 1; i < jwts.length; i++) {
    assert.ok(jwtTimes(jwts[i]).iat <= jwtTimes(jwts[i - 1]).exp, `token ${i} came after ${i - 1} expired`);
  }
  assert.equal(broker.jwt, jwts.at(-1));

  // A reconnection now needs the refreshed token (the login's is refused).
  await s.restart();
  for (let i = 0; i < 3; i++) await broker.insert('n', n++);
  const all = Array.from({ length: n }, (_, i) => i);
  await until(seen.fetch, n, 'every event (fetch)');
  await until(seen.es, n, 'every event (eventsource)');
  assert.deepEqual(seen.fetch, all);
  assert.deepEqual(seen.es, all);
  assert.ok(opens.length >= 4, JSON.stringify(opens));
  assert.ok(errors.every((e) => e.willRetry), JSON.stringify(errors));
});

test('token refresh: a 401 is answered by one refresh and one retry, then given up', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'r401', password: 'pw', tenant_name: 'web' });
  const calls = [];
  let spoil = 0;
  const spoiling = (url, init) => {
    const path = new URL(String(url)).pathname;
    calls.push(path);
    // Send a token the server refuses, as if ours had expired in the meantime.
    if (path === '/insert' && spoil > 0) {
      spoil -= 1;
      return fetch(url, { ...init, headers: { ...init.headers, authorization: 'Bearer not.a.token' } });
    }
    return fetch(url, init);
  };
  const jwts = [];
  const broker = await Broker.login(s.url, 'r401', 'pw', { fetch: spoiling, onJwt: (jwt) => jwts.push(jwt) });
  t.after(() => broker.dispose());
  spoil = 1;
  calls.length = 0;
  const stored = await broker.insert('x', 1);
  assert.ok(stored.cursor > 0);
  assert.deepEqual(calls, ['/insert', '/refresh', '/insert']);
  assert.equal(jwts.length, 2); // the login's and the refreshed one

  // Refused again after the refresh: no second refresh, the 401 reaches the caller.
  spoil = 2;
  calls.length = 0;
  await assert.rejects(broker.insert('x', 2), (e) => e instanceof BrokerError && e.status === 401);
  assert.deepEqual(calls, ['/insert', '/refresh', '/insert']);

  // A revoked user's refresh is refused too: one try, then the 401.
  await admin(s.url, '/revoke_user', { username: 'r401' });
  calls.length = 0;
  await assert.rejects(broker.insert('x', 3), (e) => e instanceof BrokerError && e.status === 401);
  assert.deepEqual(calls, ['/insert', '/refresh']);

  // Without autoRefresh, no refresh at all.
  await admin(s.url, '/unrevoke_user', { username: 'r401' });
  const plain = await Broker.login(s.url, 'r401', 'pw', { fetch: spoiling, autoRefresh: false });
  spoil = 1;
  calls.length = 0;
  await assert.rejects(plain.insert('x', 4), (e) => e instanceof BrokerError && e.status === 401);
  assert.deepEqual(calls, ['/insert']);
});

test('idempotent inserts: retries after a lost answer, a timeout or a restart store one event, with one key', async (t) => {
  const s = await withServer(t);
  await admin(s.url, '/create_user', { username: 'idem', password: 'pw', tenant_name: 'web' });
  let keys = [];
  let trouble = null;
  const flaky = async (url, init) => {
    if (new URL(String(url)).pathname !== '/insert') return fetch(url, init);
    keys.push(init.headers['idempotency-key']);
    const now = trouble;
    trouble = null;
    if (now === null) return fetch(url, init);
    // The server gets the request and answers; the client never sees the answer.
    const answer = await fetch(url, { ...init, signal: undefined });
    assert.equal(answer.status, 200);
    await answer.arrayBuffer();
    if (now === 'lost') throw new TypeError('fetch failed: socket hang up');
    if (now === 'restart') {
      await s.restart();
      throw new TypeError('fetch failed: connection reset');
    }
    // 'slow': the answer comes after the client's timeout.
    return new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(init.signal.reason)));
  };
  const broker = await Broker.login(s.url, 'idem', 'pw', { fetch: flaky, insertRetryMs: 20 });
  const auth = `Bearer ${broker.jwt}`;

  const results = {};
  for (const [i, how] of ['lost', 'slow', 'restart'].entries()) {
    keys = [];
    trouble = how;
    results[how] = await broker.insert(`e-${how}`, { i }, how === 'slow' ? { timeoutMs: 300 } : {});
    assert.equal(keys.length, 2, `${how}: ${JSON.stringify(keys)}`);
    assert.equal(keys[0], keys[1], `${how}: the retry reuses the key`);
    assert.match(keys[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  }
  // Two logical inserts: two keys.
  keys = [];
  const one = await broker.insert('plain', 1);
  const two = await broker.insert('plain', 2);
  assert.equal(keys.length, 2);
  assert.notEqual(keys[0], keys[1]);

  const stored = await storedEvents(s.url, auth);
  assert.deepEqual(stored.map((e) => [e.event, e.cursor, e.id]), [
    ['e-lost', results.lost.cursor, results.lost.id],
    ['e-slow', results.slow.cursor, results.slow.id],
    ['e-restart', results.restart.cursor, results.restart.id],
    ['plain', one.cursor, one.id],
    ['plain', two.cursor, two.id],
  ]);

  // A key of the caller's own, reused for other data: 422, not retried.
  keys = [];
  await broker.insert('mine', 1, { idempotencyKey: 'order-1001' });
  await assert.rejects(broker.insert('mine', 2, { idempotencyKey: 'order-1001' }),
    (e) => e instanceof BrokerError && e.status === 422);
  assert.deepEqual(keys, ['order-1001', 'order-1001']);

  // Retries are bounded.
  let tries = 0;
  const nowhere = new Broker('http://127.0.0.1:1', {
    fetch: (url, init) => { tries += 1; return fetch(url, init); },
    insertRetries: 2,
    insertRetryMs: 10,
  }).useBasic('idem', 'pw');
  await assert.rejects(nowhere.insert('x', 1), (e) => e instanceof BrokerError && e.status === 0);
  assert.equal(tries, 3);
});
