// Subscribes to Broker's /sse with @microsoft/fetch-event-source — the fetch-with-headers
// technique broker-client uses — and prints one JSON line per event.
// Usage: node fetch_event_source_client.mjs <base-url> <jwt> <count> <timeout-ms>
import { fetchEventSource } from '@microsoft/fetch-event-source';

// The library is written for browsers: it reads `window.fetch`/`window.setTimeout` and
// (un)registers a `document` visibility listener. These two lines are what running it in
// Node takes; with `openWhenHidden` the listener is never used.
globalThis.window ??= globalThis;
globalThis.document ??= { hidden: false, addEventListener() {}, removeEventListener() {} };

const [base, jwt, countText, timeoutText] = process.argv.slice(2);
const want = Number(countText);
let got = 0;
const stop = new AbortController();

// A clean end of the stream (the server stopping) is not an error for the library; throwing
// from onclose turns it into one, so that it reconnects (with Last-Event-ID) like
// EventSource does. broker-client does the same.
class StreamEnded extends Error {}

const timer = setTimeout(() => {
  console.error(`timed out after ${got} of ${want} events`);
  stop.abort();
  process.exit(1);
}, Number(timeoutText));

await fetchEventSource(`${base}/sse`, {
  headers: { Authorization: `Bearer ${jwt}` },
  signal: stop.signal,
  openWhenHidden: true,
  async onopen(response) {
    if (!response.ok) throw new Error(`/sse answered ${response.status}`);
    console.error('open');
  },
  onmessage(event) {
    // Unlike EventSource, the library also calls onmessage for blocks without data (the
    // `retry:` Broker sends first), so skip those.
    if (event.data === '' || event.event === 'broker.closed' || event.event === 'broker.reset') return;
    console.log(JSON.stringify({ id: event.id, event: event.event, data: JSON.parse(event.data) }));
    got += 1;
    if (got === want) {
      clearTimeout(timer);
      stop.abort();
    }
  },
  onclose() {
    throw new StreamEnded('the server ended the stream');
  },
  onerror(error) {
    console.error(`error (reconnecting): ${error.message}`);
    return 200;
  },
});
process.exit(got === want ? 0 : 1);
