// Type-level tests of the public API, checked by `tsc -p test` (no output, nothing runs):
// each `@ts-expect-error` must be an error, everything else must compile under strict.
import { Broker, type CloseReason, type Envelope, type HistoryPage } from '../src/index.js';

type Events = { temperature: { celsius: number }; door: 'open' | 'closed' };
const broker = new Broker('http://localhost:8080', { onJwt: (jwt: string) => void jwt, insertRetries: 1 });

// Bare data, typed per name; the filter takes only names of the map.
broker.subscribe<Events>({ events: ['temperature'] })
  .on('temperature', (data, { id, event }) => { const c: number = data.celsius; void [c, id, event]; })
  .onClosed((reason: CloseReason, { cursor }) => { const n: number | null = cursor; void [reason, n]; });
// @ts-expect-error: not an event name of the map
broker.subscribe<Events>({ events: ['humidity'] });
// @ts-expect-error: without envelope: true the listener gets the data, which has no cursor
broker.subscribe<Events>().on('door', (data) => data.cursor);

// Envelopes: {id, at, by, data, cursor, event}, data typed per name.
broker.subscribe<Events>({ envelope: true, transport: 'eventsource' })
  .on('door', (e) => {
    const state: 'open' | 'closed' = e.data;
    const by: string | null = e.by;
    const cursor: number = e.cursor;
    const name: 'door' = e.event;
    const uuid: string = e.id;
    const at: string = e.at;
    void [state, by, cursor, name, uuid, at];
  });
const envelope: Envelope<'door', 'open'> = { id: 'u', at: 't', by: null, data: 'open', cursor: 1, event: 'door' };
void envelope;

export async function history(): Promise<void> {
  const page: HistoryPage<Events> = await broker.history<Events>({ before: 10, limit: 5, events: ['door'] });
  const next: number | null = page.next;
  const head: number = page.head;
  void [next, head];
  for await (const e of broker.historyAll<Events>({ after: 0 })) {
    // A union by name: narrowing on the name types the data.
    if (e.event === 'temperature') { const c: number = e.data.celsius; void c; }
    // @ts-expect-error: a door's data is a string
    if (e.event === 'door') void e.data.celsius;
  }
  const stored = await broker.insert('door', 'open', { idempotencyKey: 'k', retries: 0, timeoutMs: 1000 });
  const cursor: number = stored.cursor;
  void cursor;
  const jwt: string | null = broker.jwt;
  void jwt;
}
