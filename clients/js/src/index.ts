// Broker's client for browsers and Node 18+. No runtime dependencies: it needs only `fetch`
// and web streams (and, for the `eventsource` transport, a global `EventSource`).
//
//   const broker = await Broker.login('https://broker.example', 'alice', 'correct horse');
//   await broker.insert('temperature', { celsius: 21 });
//   broker.subscribe<{ temperature: { celsius: number } }>()
//     .on('temperature', (data, { id }) => console.log(id, data.celsius));

/** An error answer from Broker: the HTTP status and its `{"error": …}` sentence. */
export class BrokerError extends Error {
  /** HTTP status (0 when the server could not be reached). */
  readonly status: number;
  /** Seconds from a `retry-after` header (429, 503), if any. */
  readonly retryAfter: number | undefined;

  constructor(status: number, message: string, retryAfter?: number) {
    super(message);
    this.name = 'BrokerError';
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** What `/insert` answers. */
export interface Inserted {
  /** UUIDv7 of the event. */
  id: string;
  /** The event's cursor: the SSE id subscribers see. */
  cursor: number;
}

/** A single-use ticket for `GET /sse?ticket=…`. */
export interface SseTicket {
  ticket: string;
  /** Seconds until it expires unused. */
  expires_in: number;
}

/** One event as delivered to listeners. */
export interface BrokerEvent<N extends string = string, D = unknown> {
  /** The cursor (SSE id), as a string: pass it back as `lastEventId` to resume. */
  id: string;
  /** The event name. */
  event: N;
  /** The event's data, parsed from JSON. */
  data: D;
}

/** The event names a subscription expects and the type of each one's data. */
export type EventMap = Record<string, unknown>;

/** Options of {@link Broker}. */
export interface BrokerOptions {
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** A JWT from an earlier login. */
  jwt?: string;
}

/** Options of {@link Broker.login}. */
export interface LoginOptions {
  /** The current 6-digit code, for two-factor users. */
  totp?: string;
  /**
   * Also set the `broker_session` cookie (HttpOnly, `Path=/sse`), so that a same-site page's
   * own `EventSource` is authenticated without tickets. Browsers only.
   */
  sessionCookie?: boolean;
}

/** Options of {@link Broker.subscribe}. */
export interface SubscribeOptions {
  /** Resume after this cursor instead of starting with the snapshot. */
  lastEventId?: string | number;
  /**
   * `fetch` (default): a streaming fetch with the Authorization header; any event name
   * reaches `onAny`. `eventsource`: the platform's `EventSource` with a fresh single-use
   * ticket per connection; only names registered with `on` are delivered.
   */
  transport?: 'fetch' | 'eventsource';
  /** An `EventSource` constructor for the `eventsource` transport (default: the global). */
  EventSource?: EventSourceConstructor;
  /** First reconnection delay, ms (default: the server's `retry:`, else 1000). */
  minRetryMs?: number;
  /** Longest reconnection delay, ms (default 30000); delays double up to it, with jitter. */
  maxRetryMs?: number;
  /** Aborting it closes the subscription. */
  signal?: AbortSignal;
}

/** The parts of the `EventSource` API the `eventsource` transport uses. */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  onerror: ((event: Event) => void) | null;
  onopen: ((event: Event) => void) | null;
  close(): void;
}

/** An `EventSource` constructor. */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

type Listener<D> = (data: D, meta: { id: string; event: string }) => void;

/** Broker's client: holds the base URL and the credentials of one user. */
export class Broker {
  /** The server's base URL, without a trailing slash. */
  readonly url: string;
  #fetch: typeof fetch;
  #authorization: string | null;

  constructor(url: string, options: BrokerOptions = {}) {
    this.url = url.replace(/\/+$/, '');
    const f = options.fetch ?? globalThis.fetch;
    if (!f) throw new Error('broker-client needs fetch (Node 18+ or a browser)');
    this.#fetch = f.bind(globalThis);
    this.#authorization = options.jwt ? `Bearer ${options.jwt}` : null;
  }

  /** Logs in and returns a client that uses the JWT. */
  static async login(
    url: string,
    username: string,
    password: string,
    options: LoginOptions & BrokerOptions = {},
  ): Promise<Broker> {
    const broker = new Broker(url, options);
    await broker.login(username, password, options);
    return broker;
  }

  /** Logs in, keeps the JWT for later requests and returns it. */
  async login(username: string, password: string, options: LoginOptions = {}): Promise<string> {
    const body: Record<string, unknown> = { username, password };
    if (options.totp !== undefined) body.totp = options.totp;
    if (options.sessionCookie) body.session_cookie = true;
    const { jwt } = await this.#request<{ jwt: string }>('POST', '/login', body, {
      credentials: options.sessionCookie ? 'include' : 'same-origin',
      anonymous: true,
    });
    this.#authorization = `Bearer ${jwt}`;
    return jwt;
  }

  /** Uses HTTP Basic for every request instead of a JWT (not for two-factor users). */
  useBasic(username: string, password: string): this {
    const bytes = new TextEncoder().encode(`${username}:${password}`);
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    this.#authorization = `Basic ${btoa(binary)}`;
    return this;
  }

  /** Uses this JWT for every request. */
  useJwt(jwt: string): this {
    this.#authorization = `Bearer ${jwt}`;
    return this;
  }

  /** Inserts an event into the user's tenant; resolves once it is durable. */
  insert<D>(event: string, data: D): Promise<Inserted> {
    return this.#request<Inserted>('POST', '/insert', { event, data });
  }

  /** A single-use ticket (valid 30 s) for the user's own `GET /sse?ticket=…`. */
  sseTicket(): Promise<SseTicket> {
    return this.#request<SseTicket>('POST', '/sse_ticket');
  }

  /**
   * A URL for a native `EventSource` (which cannot send an Authorization header): a fresh
   * ticket, and the cursor to resume after, if any. Open it at once; it works once.
   */
  async eventSourceUrl(lastEventId?: string | number): Promise<string> {
    const { ticket } = await this.sseTicket();
    const resume = lastEventId === undefined ? '' : `&last_event_id=${encodeURIComponent(String(lastEventId))}`;
    return `${this.url}/sse?ticket=${encodeURIComponent(ticket)}${resume}`;
  }

  /** Ends the browser's cookie session (see {@link LoginOptions.sessionCookie}). */
  async logout(): Promise<void> {
    await this.#request('POST', '/logout', undefined, { credentials: 'include', anonymous: true });
  }

  /**
   * Subscribes to the user's tenant: the snapshot (or everything after `lastEventId`), then
   * live events. Reconnects by itself with `Last-Event-ID` and exponential backoff, so a
   * listener sees every event once, in cursor order, across server restarts.
   */
  subscribe<E extends EventMap = EventMap>(options: SubscribeOptions = {}): Subscription<E> {
    return new Subscription<E>(this, options);
  }

  /** @internal The Authorization header value. */
  get authorization(): string | null {
    return this.#authorization;
  }

  /** @internal The fetch in use. */
  get fetchFn(): typeof fetch {
    return this.#fetch;
  }

  async #request<T>(
    method: string,
    path: string,
    body?: unknown,
    options: { credentials?: RequestCredentials; anonymous?: boolean } = {},
  ): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (!options.anonymous) {
      if (!this.#authorization) throw new BrokerError(401, 'not logged in: call login() first');
      headers.authorization = this.#authorization;
    }
    let response: Response;
    try {
      response = await this.#fetch(`${this.url}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        ...(options.credentials ? { credentials: options.credentials } : {}),
      });
    } catch (e) {
      throw new BrokerError(0, `could not reach ${this.url}: ${(e as Error).message}`);
    }
    if (!response.ok) throw await errorOf(response);
    return (await response.json()) as T;
  }
}

/** Turns an error response into a {@link BrokerError} with the server's sentence. */
export async function errorOf(response: Response): Promise<BrokerError> {
  let message = `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { error?: unknown };
    if (typeof body.error === 'string') message = body.error;
  } catch {
    // Not JSON (a proxy's page, say): the status alone has to do.
  }
  const retry = Number(response.headers.get('retry-after'));
  return new BrokerError(response.status, message, Number.isFinite(retry) && retry > 0 ? retry : undefined);
}

/** A live subscription; register listeners with `on`, stop with `close`. */
export class Subscription<E extends EventMap = EventMap> {
  #broker: Broker;
  #options: SubscribeOptions;
  #listeners = new Map<string, Set<Listener<unknown>>>();
  #any = new Set<(event: BrokerEvent) => void>();
  #resetListeners = new Set<(reason: unknown) => void>();
  #openListeners = new Set<() => void>();
  #errorListeners = new Set<(error: Error, willRetry: boolean) => void>();
  #lastEventId: string | null;
  #controller = new AbortController();
  #closed = false;
  #serverRetry: number | null = null;
  #source: EventSourceLike | null = null;
  #wake: (() => void) | null = null;
  /** Resolves when the subscription has ended (closed, or credentials refused). */
  readonly done: Promise<void>;

  constructor(broker: Broker, options: SubscribeOptions) {
    this.#broker = broker;
    this.#options = options;
    this.#lastEventId = options.lastEventId === undefined ? null : String(options.lastEventId);
    options.signal?.addEventListener('abort', () => this.close());
    // Listeners are registered right after subscribe() returns; start on the next tick.
    this.done = new Promise<void>((resolve) => setTimeout(resolve, 0)).then(() => this.#run());
  }

  /** The cursor of the last event delivered (where a reconnection resumes). */
  get lastEventId(): string | null {
    return this.#lastEventId;
  }

  /** Calls `listener` with each event named `name`, its data typed by the event map. */
  on<K extends keyof E & string>(name: K, listener: Listener<E[K]>): this {
    let set = this.#listeners.get(name);
    if (!set) {
      this.#listeners.set(name, (set = new Set()));
      // A name new to an open EventSource needs its own listener there.
      this.#source?.addEventListener(name, (m) => this.#deliver(name, m.lastEventId, m.data));
    }
    set.add(listener as Listener<unknown>);
    return this;
  }

  /** Calls `listener` with every event, whatever its name (`fetch` transport only). */
  onAny(listener: (event: BrokerEvent) => void): this {
    if (this.#options.transport === 'eventsource') {
      throw new Error('onAny needs the fetch transport: EventSource delivers only named listeners');
    }
    this.#any.add(listener);
    return this;
  }

  /** The server could not resume at the cursor and sends the snapshot instead. */
  onReset(listener: (reason: unknown) => void): this {
    this.#resetListeners.add(listener);
    return this;
  }

  /** A connection opened (first or after a reconnection). */
  onOpen(listener: () => void): this {
    this.#openListeners.add(listener);
    return this;
  }

  /** A connection failed; `willRetry` is false when the subscription gave up (401). */
  onError(listener: (error: Error, willRetry: boolean) => void): this {
    this.#errorListeners.add(listener);
    return this;
  }

  /** Stops the subscription and closes its connection. */
  close(): void {
    this.#closed = true;
    this.#controller.abort();
    this.#source?.close();
    this.#wake?.();
  }

  async #run(): Promise<void> {
    let attempt = 0;
    while (!this.#closed) {
      try {
        const delivered = this.#options.transport === 'eventsource'
          ? await this.#viaEventSource()
          : await this.#viaFetch();
        if (delivered) attempt = 0;
        if (this.#closed) return;
        this.#emitError(new BrokerError(0, 'the stream ended (the server restarted or stopped)'), true);
      } catch (e) {
        if (this.#closed) return;
        const error = e instanceof Error ? e : new Error(String(e));
        const fatal = error instanceof BrokerError && (error.status === 401 || error.status === 400);
        this.#emitError(error, !fatal);
        if (fatal) {
          this.#closed = true;
          return;
        }
        if (error instanceof BrokerError && error.retryAfter) {
          await this.#sleep(error.retryAfter * 1000);
          continue;
        }
      }
      await this.#sleep(this.#backoff(attempt));
      attempt += 1;
    }
  }

  #backoff(attempt: number): number {
    const base = this.#options.minRetryMs ?? this.#serverRetry ?? 1000;
    const max = this.#options.maxRetryMs ?? 30000;
    const delay = Math.min(max, base * 2 ** Math.min(attempt, 16));
    // Jitter: clients dropped together by a restart do not all come back at once.
    return delay / 2 + Math.random() * (delay / 2);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.#wake = null; resolve(); }, ms);
      this.#wake = () => { clearTimeout(timer); this.#wake = null; resolve(); };
    });
  }

  #emitError(error: Error, willRetry: boolean): void {
    for (const l of this.#errorListeners) l(error, willRetry);
  }

  /** One streaming fetch; returns whether any event arrived. */
  async #viaFetch(): Promise<boolean> {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    const auth = this.#broker.authorization;
    if (!auth) throw new BrokerError(401, 'not logged in: call login() first');
    headers.authorization = auth;
    if (this.#lastEventId !== null) headers['last-event-id'] = this.#lastEventId;
    let response: Response;
    try {
      response = await this.#broker.fetchFn(`${this.#broker.url}/sse`, {
        headers,
        signal: this.#controller.signal,
        cache: 'no-store',
      });
    } catch (e) {
      throw new BrokerError(0, `could not reach ${this.#broker.url}: ${(e as Error).message}`);
    }
    if (!response.ok) throw await errorOf(response);
    if (!response.body) throw new BrokerError(0, 'the response has no body to stream');
    for (const l of this.#openListeners) l();
    let delivered = false;
    try {
      await readFrames(response.body, (frame) => {
        if (frame.retry !== undefined) this.#serverRetry = frame.retry;
        if (frame.event === undefined && frame.data === undefined) return;
        const name = frame.event ?? 'message';
        if (this.#deliver(name, frame.id, frame.data ?? '')) delivered = true;
      });
    } catch (e) {
      if (this.#closed) return delivered;
      throw new BrokerError(0, `the stream broke: ${(e as Error).message}`);
    }
    return delivered;
  }

  /** One native EventSource on a fresh ticket; resolves when it fails or closes. */
  async #viaEventSource(): Promise<boolean> {
    const Source = this.#options.EventSource
      ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
    if (!Source) throw new BrokerError(400, 'no EventSource here: use the fetch transport');
    const url = await this.#broker.eventSourceUrl(this.#lastEventId ?? undefined);
    if (this.#closed) return false;
    let delivered = false;
    await new Promise<void>((resolve) => {
      const source = new Source(url);
      this.#source = source;
      const names = [...this.#listeners.keys(), 'broker.reset', 'broker.closed', 'broker.shutdown'];
      for (const name of names) {
        source.addEventListener(name, (m: MessageEvent) => {
          if (this.#deliver(name, m.lastEventId, m.data)) delivered = true;
        });
      }
      source.onopen = () => { for (const l of this.#openListeners) l(); };
      // The browser would reconnect by itself with the spent ticket (and be refused):
      // close it and reconnect here, with a new ticket and the cursor.
      source.onerror = () => { source.close(); resolve(); };
      const wake = () => { source.close(); resolve(); };
      this.#wake = wake;
    });
    this.#source = null;
    return delivered;
  }

  /** Hands one frame to the listeners; returns whether it was an event of the tenant. */
  #deliver(name: string, id: string | undefined, raw: string): boolean {
    // broker.closed ends a stream (shutdown, revoked, credentials changed); 16.0 servers
    // sent broker.shutdown. Neither is an event of the tenant; both carry the resume cursor.
    if (name === 'broker.closed' || name === 'broker.shutdown') {
      if (id) this.#lastEventId = id;
      return false;
    }
    let data: unknown = raw;
    try { data = JSON.parse(raw); } catch { /* Broker's data is always JSON; keep the text otherwise */ }
    if (name === 'broker.reset') {
      for (const l of this.#resetListeners) l(data);
      return false;
    }
    if (id) this.#lastEventId = id;
    const meta = { id: id ?? '', event: name };
    for (const l of this.#listeners.get(name) ?? []) l(data, meta);
    for (const l of this.#any) l({ id: meta.id, event: name, data });
    return true;
  }
}

interface Frame {
  id?: string;
  event?: string;
  data?: string;
  retry?: number;
}

/** Reads SSE frames off a byte stream (the text/event-stream format). */
export async function readFrames(body: ReadableStream<Uint8Array>, onFrame: (frame: Frame) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let frame: Frame = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let newline: number;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      const width = buffer.startsWith('\r\n', newline) ? 2 : 1;
      // A lone \r at the end of the buffer may be the first half of \r\n: wait for more.
      if (buffer[newline] === '\r' && width === 1 && newline === buffer.length - 1) break;
      buffer = buffer.slice(newline + width);
      if (line === '') {
        onFrame(frame);
        frame = {};
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
      else if (field === 'event') frame.event = value;
      else if (field === 'id') frame.id = value;
      else if (field === 'retry' && /^\d+$/.test(value)) frame.retry = Number(value);
    }
  }
}
