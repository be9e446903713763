// Chromium's native EventSource against Broker, from a page of another origin (CORS), in
// headless Chromium driven by playwright-core. Four subscribers run side by side:
//  - "ticket": POST /sse_ticket with the JWT, then EventSource('/sse?ticket=…'); when the
//    browser's own reconnection is refused (a ticket works once), a new ticket resumes with
//    ?last_event_id=;
//  - "cookie": POST /login {session_cookie: true} with credentials, then
//    EventSource('/sse', {withCredentials: true}); the browser reconnects by itself, sending
//    the cookie and Last-Event-ID;
//  - "broker-client": clients/js (its compiled dist/, served with the page) in the browser,
//    fetch with the Authorization header, resuming by itself;
//  - "broker-client-es": the same client's `eventsource` transport (Chromium's EventSource,
//    a fresh ticket per connection), logged in by the client itself.
// Before subscribing, the page inserts one event with broker-client (its Idempotency-Key header
// passes the CORS preflight).
// Prints one JSON line per event: {client, id, event, data}.
// Usage: node chromium_eventsource.mjs <base-url> <jwt> <count> <timeout-ms> <username> <password> <page-port>
// with $BROKER_CLIENT_DIST naming clients/js/dist.
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, jwt, countText, timeoutText, username, password, pagePort] = process.argv.slice(2);
const want = Number(countText);
const names = ['greeting', 'counter'];

// The page's origin: a different port is a different origin (so CORS applies) on the same
// site (so the SameSite=Strict cookie may be sent).
const dist = process.env.BROKER_CLIENT_DIST;
if (!dist) throw new Error('set BROKER_CLIENT_DIST to clients/js/dist');
const pages = http.createServer((req, res) => {
  if (req.url === '/broker-client/index.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(readFileSync(join(dist, 'index.js')));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>app</title><p>app');
});
await new Promise((resolve) => pages.listen(Number(pagePort), '127.0.0.1', resolve));

const profile = mkdtempSync(join(tmpdir(), 'broker-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.BROKER_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const counts = { ticket: 0, cookie: 0, 'broker-client': 0, 'broker-client-es': 0 };
let finished = false;
async function finish(code, why) {
  if (finished) return;
  finished = true;
  if (why) console.error(why);
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  pages.close();
  process.exit(code);
}
const timer = setTimeout(() => finish(1, `timed out: ${JSON.stringify(counts)} of ${want} each`),
  Number(timeoutText));

const page = browser.pages()[0] ?? await browser.newPage();
page.on('console', (msg) => console.error(`page: ${msg.text()}`));
await page.exposeFunction('report', (line) => {
  const event = JSON.parse(line);
  console.log(line);
  counts[event.client] += 1;
  if (Object.values(counts).every((n) => n === want)) {
    clearTimeout(timer);
    finish(0);
  }
});
await page.goto(`http://127.0.0.1:${pagePort}/`);
await page.evaluate(async ({ base, jwt, username, password, names }) => {
  const emit = (client, e) =>
    window.report(JSON.stringify({ client, id: e.lastEventId, event: e.type, data: JSON.parse(e.data) }));

  // Ticket flow: what an app does when the Authorization header is not available.
  let lastId = null;
  async function openWithTicket() {
    let ticket;
    try {
      const r = await fetch(`${base}/sse_ticket`, { method: 'POST', headers: { authorization: `Bearer ${jwt}` } });
      if (!r.ok) throw new Error(`sse_ticket ${r.status}`);
      ({ ticket } = await r.json());
    } catch (e) {
      console.log(`ticket: ${e.message}; retrying`);
      setTimeout(openWithTicket, 200);
      return;
    }
    const resume = lastId === null ? '' : `&last_event_id=${lastId}`;
    const source = new EventSource(`${base}/sse?ticket=${ticket}${resume}`);
    for (const name of names) {
      source.addEventListener(name, (e) => { lastId = e.lastEventId; emit('ticket', e); });
    }
    source.onerror = () => {
      // CLOSED: the browser gave up (its reconnection reused the spent ticket and got 401).
      if (source.readyState === EventSource.CLOSED) setTimeout(openWithTicket, 200);
    };
  }
  await openWithTicket();

  // Cookie flow: the browser handles everything, reconnection included.
  const login = await fetch(`${base}/login`, {
    method: 'POST',
    credentials: 'include',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password, session_cookie: true }),
  });
  if (!login.ok) throw new Error(`login ${login.status}`);
  const source = new EventSource(`${base}/sse`, { withCredentials: true });
  for (const name of names) source.addEventListener(name, (e) => emit('cookie', e));

  // broker-client, as a page would use it.
  const { Broker } = await import('/broker-client/index.js');
  // Its inserts carry an Idempotency-Key, which CORS must let through from this origin (an
  // event of a name no subscriber here listens to).
  const stored = await new Broker(base, { jwt }).insert('from-page', { ok: true });
  if (!(stored.cursor > 0)) throw new Error(`insert from the page: ${JSON.stringify(stored)}`);
  const sub = new Broker(base, { jwt }).subscribe({ minRetryMs: 100, maxRetryMs: 500 });
  for (const name of names) {
    sub.on(name, (data, { id, event }) =>
      window.report(JSON.stringify({ client: 'broker-client', id, event, data })));
  }
  const own = await Broker.login(base, username, password, { sessionCookie: true });
  const es = own.subscribe({ transport: 'eventsource', minRetryMs: 100, maxRetryMs: 500 });
  for (const name of names) {
    es.on(name, (data, { id, event }) =>
      window.report(JSON.stringify({ client: 'broker-client-es', id, event, data })));
  }
}, { base, jwt, username, password, names });
console.error('subscribed');
