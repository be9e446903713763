// Subscribes to Broker's /sse with the npm `eventsource` package (a standard EventSource
// client), passing the JWT through its fetch option, and prints one JSON line per event.
// Usage: node eventsource_client.mjs <base-url> <jwt> <count> <timeout-ms>
import { EventSource } from 'eventsource';

const [base, jwt, countText, timeoutText] = process.argv.slice(2);
const want = Number(countText);
let got = 0;

const source = new EventSource(`${base}/sse`, {
  fetch: (input, init) =>
    fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${jwt}` } }),
});

const timer = setTimeout(() => {
  console.error(`timed out after ${got} of ${want} events`);
  source.close();
  process.exit(1);
}, Number(timeoutText));

const onEvent = (event) => {
  console.log(JSON.stringify({ id: event.lastEventId, event: event.type, data: JSON.parse(event.data) }));
  got += 1;
  if (got === want) {
    clearTimeout(timer);
    source.close();
    process.exit(0);
  }
};

// Broker names every event; EventSource dispatches by name, so listen to the names in use.
for (const name of ['greeting', 'counter']) source.addEventListener(name, onEvent);
source.addEventListener('open', () => console.error('open'));
source.addEventListener('error', () => console.error('error (the client will reconnect)'));
