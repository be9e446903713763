// Subscribes to Broker's /sse with the npm `eventsource` package and prints one JSON line when
// the stream opens and one per `broker.closed` frame (why the server ended the stream), then
// exits once the reconnect it attempts is refused (the token is void after a revocation).
// Usage: node closed_reason_client.mjs <base-url> <jwt> <timeout-ms>
import { EventSource } from 'eventsource';

const [base, jwt, timeoutText] = process.argv.slice(2);
let closed = false;

const source = new EventSource(`${base}/sse`, {
  fetch: (input, init) =>
    fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${jwt}` } }),
});

const timer = setTimeout(() => {
  console.error('timed out');
  source.close();
  process.exit(1);
}, Number(timeoutText));

source.addEventListener('open', () => console.log(JSON.stringify({ open: true })));
source.addEventListener('broker.closed', (event) => {
  closed = true;
  console.log(JSON.stringify({ id: event.lastEventId, event: event.type, data: JSON.parse(event.data) }));
});
source.addEventListener('error', () => {
  // After broker.closed the client reconnects by itself; the revoked token gets 401, which
  // ends an EventSource for good (readyState CLOSED).
  if (closed && source.readyState === EventSource.CLOSED) {
    clearTimeout(timer);
    console.log(JSON.stringify({ gave_up: true }));
    process.exit(0);
  }
});
