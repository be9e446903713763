// Broker's client for browsers and Node 18+. No runtime dependencies: it needs only `fetch`
// and web streams (and, for the `eventsource` transport, a global `EventSource`).
//
//   const broker = await Broker.login('https://broker.example', 'alice', 'correct horse');
//   await broker.insert('temperature', { celsius: 21 });
//   broker.subscribe<{ temperature: { celsius: number } }>()
//     .on('temperature', (data, { id }) => console.log(id, data.celsius));
//
// A JWT is refreshed before it expires (`POST /refresh`), every insert carries an
// `Idempotency-Key` and is retried with it, and `history()` / `historyAll()` page `GET /events`.

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

/**
 * An event as `?envelope=true` delivers it: the event's UUID, when it was appended, who
 * inserted it (`null` for the admin), its data, and its cursor and name.
 */
export interface Envelope<N extends string = string, D = unknown> {
  /** UUIDv7 of the event (what `insert` returned as `id`). */
  id: string;
  /** When it was appended, RFC 3339 UTC. */
  at: string;
  /** The username that inserted it; `null` for the admin (`/admin_insert`). */
  by: string | null;
  /** The event's data. */
  data: D;
  /** The event's cursor (the SSE id, as a number). */
  cursor: number;
  /** The event name. */
  event: N;
}

/** One event of `GET /events` (history). */
export interface HistoryEvent<N extends string = string, D = unknown> {
  cursor: number;
  /** UUIDv7 of the event. */
  id: string;
  event: N;
  /** When it was appended, RFC 3339 UTC. */
  at: string;
  /** The username that inserted it; `null` for the admin. */
  by: string | null;
  data: D;
}

/** The events of an event map as history delivers them. */
export type HistoryEventOf<E extends EventMap> = { [K in keyof E & string]: HistoryEvent<K, E[K]> }[keyof E & string];

/** One page of history. */
export interface HistoryPage<E extends EventMap = EventMap> {
  events: HistoryEventOf<E>[];
  /** The cursor to pass as `after` (or `before`) for the next page; `null`: no more that way. */
  next: number | null;
  /** The newest cursor of the log. */
  head: number;
}

/** Options of {@link Broker.history} and {@link Broker.historyAll}. */
export interface HistoryOptions<E extends EventMap = EventMap> {
  /** Cursors above this one, oldest first. */
  after?: number;
  /** Cursors below this one, newest first. Neither `after` nor `before`: the newest first. */
  before?: number;
  /** Events per page, 1–1000 (the server's default is 100). */
  limit?: number;
  /** Only events of these names. */
  events?: (keyof E & string)[];
}

/** Options of {@link Broker.insert}; the defaults come from {@link BrokerOptions}. */
export interface InsertOptions {
  /**
   * The `Idempotency-Key` (1–255 printable ASCII bytes). Default: a random UUID per call,
   * reused by its retries. Pass your own to make an insert idempotent across calls (or
   * page loads): the same key answers with the same `{id, cursor}` and stores nothing more.
   */
  idempotencyKey?: string;
  /** Retries after a timeout, a network error, 429, 502, 503 or 504 (default 3). */
  retries?: number;
  /** How long one attempt may take before it counts as failed, ms (default 10000). */
  timeoutMs?: number;
  /** First delay between attempts, ms, doubled each time, with jitter (default 200). */
  retryMs?: number;
}

/** Options of {@link Broker}. */
export interface BrokerOptions {
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** A JWT from an earlier login. */
  jwt?: string;
  /**
   * Refresh the JWT with `POST /refresh` before it expires (default true): at `refreshAt`
   * of its lifetime, read from its `exp` and `iat`, and once more on a 401.
   */
  autoRefresh?: boolean;
  /** The share of a JWT's lifetime after which it is refreshed (default 0.8). */
  refreshAt?: number;
  /** Called with every new JWT (login, refresh), e.g. to keep it for the next page load. */
  onJwt?: (jwt: string) => void;
  /** Default of {@link InsertOptions.retries} (3). */
  insertRetries?: number;
  /** Default of {@link InsertOptions.timeoutMs} (10000). */
  insertTimeoutMs?: number;
  /** Default of {@link InsertOptions.retryMs} (200). */
  insertRetryMs?: number;
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
export interface SubscribeOptions<E extends EventMap = EventMap> {
  /** Resume after this cursor instead of starting with the snapshot. */
  lastEventId?: string | number;
  /**
   * Only events of these names (`/sse?event=a&event=b`), in the snapshot, on resume and
   * live. Cursors stay global, so resuming works as without a filter.
   */
  events?: (keyof E & string)[];
  /**
   * `true`: listeners get an {@link Envelope} (`{id, at, by, data, cursor, event}`) instead
   * of the bare data (`/sse?envelope=true`).
   */
  envelope?: boolean;
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

/** Why the server ended a stream (`broker.closed`); other strings may come from newer servers. */
export type CloseReason = 'revoked' | 'deleted' | 'credentials_changed' | 'shutdown' | 'expired' | (string & {});

/** Reasons after which reconnecting is pointless: the credentials are void. */
const FINAL_REASONS: ReadonlySet<string> = new Set(['revoked', 'deleted', 'credentials_changed']);

/** What a listener of a subscription gets for event `K`: the data, or its envelope. */
export type Delivered<E extends EventMap, K extends keyof E & string, V extends boolean> =
  V extends true ? Envelope<K, E[K]> : E[K];

/** A random UUID (v4) for idempotency keys, also where `crypto.randomUUID` is missing
 * (Node 18 without the global, pages on plain HTTP). */
export function randomKey(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The `iat` and `exp` of a JWT (not verified: only the server can, and it does). */
export function jwtTimes(jwt: string): { iat: number | undefined; exp: number } | null {
  const part = jwt.split('.')[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as { iat?: unknown; exp?: unknown };
    if (typeof claims.exp !== 'number') return null;
    return { iat: typeof claims.iat === 'number' ? claims.iat : undefined, exp: claims.exp };
  } catch {
    return null;
  }
}

/** Statuses after which an insert is sent again (with the same key). */
function retriable(error: BrokerError): boolean {
  return error.status === 0 || error.status === 429 || error.status === 502 || error.status === 503
    || error.status === 504;
}

/** A delay that doubles per attempt, with jitter (half to all of it). */
function jittered(base: number, attempt: number, max: number): number {
  const delay = Math.min(max, base * 2 ** Math.min(attempt, 16));
  return delay / 2 + Math.random() * (delay / 2);
}

/** A timer that does not keep Node alive (browsers ignore it). */
function unref(timer: ReturnType<typeof setTimeout>): void {
  (timer as { unref?: () => void }).unref?.();
}

/** Longest delay setTimeout accepts. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface RequestOptions {
  credentials?: RequestCredentials;
  anonymous?: boolean;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/** Broker's client: holds the base URL and the credentials of one user. */
export class Broker {
  /** The server's base URL, without a trailing slash. */
  readonly url: string;
  #fetch: typeof fetch;
  #authorization: string | null = null;
  #autoRefresh: boolean;
  #refreshAt: number;
  #onJwt: ((jwt: string) => void) | undefined;
  #insertDefaults: { retries: number; timeoutMs: number; retryMs: number };
  /** When the JWT is due for a refresh (ms since the epoch); null: never (Basic, no `exp`). */
  #refreshDue: number | null = null;
  #refreshTimer: ReturnType<typeof setTimeout> | null = null;
  #refreshing: Promise<string> | null = null;

  constructor(url: string, options: BrokerOptions = {}) {
    this.url = url.replace(/\/+$/, '');
    const f = options.fetch ?? globalThis.fetch;
    if (!f) throw new Error('broker-client needs fetch (Node 18+ or a browser)');
    this.#fetch = f.bind(globalThis);
    this.#autoRefresh = options.autoRefresh ?? true;
    this.#refreshAt = Math.min(0.95, Math.max(0.1, options.refreshAt ?? 0.8));
    this.#onJwt = options.onJwt;
    this.#insertDefaults = {
      retries: options.insertRetries ?? 3,
      timeoutMs: options.insertTimeoutMs ?? 10000,
      retryMs: options.insertRetryMs ?? 200,
    };
    if (options.jwt) this.#setJwt(options.jwt, false);
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

  /** Logs in, keeps the JWT for later requests (refreshing it) and returns it. */
  async login(username: string, password: string, options: LoginOptions = {}): Promise<string> {
    const body: Record<string, unknown> = { username, password };
    if (options.totp !== undefined) body.totp = options.totp;
    if (options.sessionCookie) body.session_cookie = true;
    const { jwt } = await this.#request<{ jwt: string }>('POST', '/login', body, {
      credentials: options.sessionCookie ? 'include' : 'same-origin',
      anonymous: true,
    });
    this.#setJwt(jwt, true);
    return jwt;
  }

  /** Uses HTTP Basic for every request instead of a JWT (not for two-factor users). */
  useBasic(username: string, password: string): this {
    const bytes = new TextEncoder().encode(`${username}:${password}`);
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    this.#clearRefresh();
    this.#authorization = `Basic ${btoa(binary)}`;
    return this;
  }

  /** Uses this JWT for every request (and refreshes it, unless `autoRefresh` is false). */
  useJwt(jwt: string): this {
    this.#setJwt(jwt, false);
    return this;
  }

  /** The JWT in use (the latest, after refreshes), or null with Basic or before login. */
  get jwt(): string | null {
    const auth = this.#authorization;
    return auth?.startsWith('Bearer ') ? auth.slice(7) : null;
  }

  /**
   * Trades the JWT for a fresh one (`POST /refresh`) and uses it from then on. Done by
   * itself before expiry; concurrent calls share one request. A 401 means the token is
   * expired, revoked or outdated: log in again.
   */
  refresh(): Promise<string> {
    if (this.#refreshing) return this.#refreshing;
    const used = this.#authorization;
    const attempt = (async () => {
      if (!used?.startsWith('Bearer ')) throw new BrokerError(400, 'refresh needs a JWT: log in first');
      const { jwt } = await this.#attempt<{ jwt: string }>('POST', '/refresh', undefined, {}, used);
      // A useJwt/useBasic/login meanwhile wins over this answer.
      if (this.#authorization === used) this.#setJwt(jwt, true);
      return jwt;
    })();
    this.#refreshing = attempt;
    const clear = () => { if (this.#refreshing === attempt) this.#refreshing = null; };
    attempt.then(clear, (e: unknown) => {
      clear();
      // Refused: this token cannot be refreshed any more (expired, revoked, outdated); stop
      // trying before every request. Other failures are tried again later.
      if (this.#authorization !== used) return;
      if (e instanceof BrokerError && e.status === 401) this.#clearRefresh();
      else if (this.#refreshDue !== null && this.#refreshTimer === null) this.#refreshDue = Date.now() + 5000;
    });
    return attempt;
  }

  /**
   * Inserts an event into the user's tenant; resolves once it is durable. Sends an
   * `Idempotency-Key` and, after a timeout, a network error, 429 or 5xx-unavailable,
   * sends the same request with the same key again (so it is stored once).
   */
  async insert<D>(event: string, data: D, options: InsertOptions = {}): Promise<Inserted> {
    const key = options.idempotencyKey ?? randomKey();
    const retries = Math.max(0, options.retries ?? this.#insertDefaults.retries);
    const timeoutMs = options.timeoutMs ?? this.#insertDefaults.timeoutMs;
    const retryMs = options.retryMs ?? this.#insertDefaults.retryMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#request<Inserted>('POST', '/insert', { event, data }, {
          headers: { 'idempotency-key': key },
          timeoutMs,
        });
      } catch (e) {
        if (!(e instanceof BrokerError) || !retriable(e) || attempt >= retries) throw e;
        const wait = e.retryAfter !== undefined ? e.retryAfter * 1000 : jittered(retryMs, attempt, 30000);
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }

  /** One page of the tenant's history (`GET /events`). */
  history<E extends EventMap = EventMap>(options: HistoryOptions<E> = {}): Promise<HistoryPage<E>> {
    const query = new URLSearchParams();
    if (options.after !== undefined) query.set('after', String(options.after));
    if (options.before !== undefined) query.set('before', String(options.before));
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    for (const name of options.events ?? []) query.append('event', name);
    const q = query.toString();
    return this.#request<HistoryPage<E>>('GET', `/events${q ? `?${q}` : ''}`);
  }

  /**
   * Every event of the history, page after page (following `next` until it is null): oldest
   * first from `after`, else newest first (from `before`, or from the newest).
   */
  async *historyAll<E extends EventMap = EventMap>(
    options: HistoryOptions<E> = {},
  ): AsyncGenerator<HistoryEventOf<E>, void, undefined> {
    const ascending = options.after !== undefined;
    let page = await this.history<E>(options);
    for (;;) {
      yield* page.events;
      if (page.next === null) return;
      page = await this.history<E>(ascending
        ? { ...options, after: page.next }
        : { ...options, before: page.next });
    }
  }

  /** A single-use ticket (valid 30 s) for the user's own `GET /sse?ticket=…`. */
  sseTicket(): Promise<SseTicket> {
    return this.#request<SseTicket>('POST', '/sse_ticket');
  }

  /**
   * A URL for a native `EventSource` (which cannot send an Authorization header): a fresh
   * ticket, and the cursor to resume after, if any, and the filter and envelope choice.
   * Open it at once; it works once.
   */
  async eventSourceUrl(
    lastEventId?: string | number,
    options: { events?: string[]; envelope?: boolean } = {},
  ): Promise<string> {
    const { ticket } = await this.sseTicket();
    const query = new URLSearchParams({ ticket });
    if (lastEventId !== undefined) query.set('last_event_id', String(lastEventId));
    for (const name of options.events ?? []) query.append('event', name);
    if (options.envelope) query.set('envelope', 'true');
    return `${this.url}/sse?${query}`;
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
  subscribe<E extends EventMap = EventMap>(options: SubscribeOptions<E> & { envelope: true }): Subscription<E, true>;
  subscribe<E extends EventMap = EventMap>(options?: SubscribeOptions<E>): Subscription<E, false>;
  subscribe<E extends EventMap = EventMap>(options: SubscribeOptions<E> = {}): Subscription<E, boolean> {
    return new Subscription<E, boolean>(this, options);
  }

  /** Stops the refresh timer (the client keeps working; a due refresh happens on the next request). */
  dispose(): void {
    this.#clearRefresh();
  }

  /** @internal The Authorization header value. */
  get authorization(): string | null {
    return this.#authorization;
  }

  /** @internal The fetch in use. */
  get fetchFn(): typeof fetch {
    return this.#fetch;
  }

  /**
   * @internal After a 401 to a request sent with `used`: whether to send it again, because
   * the JWT was refreshed meanwhile or a refresh now succeeds.
   */
  async recover401(used: string | null): Promise<boolean> {
    if (!used?.startsWith('Bearer ')) return false;
    if (this.#authorization !== used) return this.#authorization !== null;
    if (!this.#autoRefresh) return false;
    try {
      await this.refresh();
      return true;
    } catch {
      return false;
    }
  }

  /** @internal Refreshes first when the JWT is due (a timer may have been throttled). */
  async refreshIfDue(): Promise<void> {
    if (this.#refreshDue === null || Date.now() < this.#refreshDue) return;
    try {
      await this.refresh();
    } catch {
      // The current token may still do; the request will tell.
    }
  }

  #setJwt(jwt: string, fresh: boolean): void {
    this.#clearRefresh();
    this.#authorization = `Bearer ${jwt}`;
    if (fresh) this.#onJwt?.(jwt);
    const times = this.#autoRefresh ? jwtTimes(jwt) : null;
    if (!times) return;
    // A fresh token's lifetime counts from now (immune to clock skew between client and
    // server), less a second: `iat` is whole seconds, so the token may be up to a second old
    // already. An older token's counts from its `iat` (without one, it is refreshed now).
    const lifetime = times.iat === undefined ? 0 : (times.exp - times.iat) * 1000;
    const due = fresh
      ? Date.now() + Math.max(0, lifetime - 1000) * this.#refreshAt
      : (times.iat ?? 0) * 1000 + lifetime * this.#refreshAt;
    this.#scheduleRefresh(due);
  }

  #scheduleRefresh(due: number): void {
    this.#refreshDue = due;
    const timer = setTimeout(() => {
      if (this.#refreshTimer !== timer) return;
      this.#refreshTimer = null;
      this.refresh().catch((e: unknown) => {
        // Unreachable or busy: try again in a while, as long as the token may still be valid.
        if (this.#refreshTimer !== null || !(e instanceof BrokerError) || !retriable(e)) return;
        const times = this.jwt === null ? null : jwtTimes(this.jwt);
        const left = times ? times.exp * 1000 - Date.now() : 0;
        if (left > 0) this.#scheduleRefresh(Date.now() + Math.min(5000, left / 4));
      });
    }, Math.min(MAX_TIMER_MS, Math.max(0, due - Date.now())));
    unref(timer);
    this.#refreshTimer = timer;
  }

  #clearRefresh(): void {
    if (this.#refreshTimer !== null) clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    this.#refreshDue = null;
  }

  /** A request with the current credentials; a 401 is retried once after a refresh. */
  async #request<T>(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<T> {
    if (options.anonymous) return this.#attempt<T>(method, path, body, options, null);
    await this.refreshIfDue();
    const used = this.#authorization;
    try {
      return await this.#attempt<T>(method, path, body, options, used);
    } catch (e) {
      if (!(e instanceof BrokerError) || e.status !== 401 || !(await this.recover401(used))) throw e;
      return this.#attempt<T>(method, path, body, options, this.#authorization);
    }
  }

  /** One request with the given Authorization (null: none). */
  async #attempt<T>(
    method: string,
    path: string,
    body: unknown,
    options: RequestOptions,
    authorization: string | null,
  ): Promise<T> {
    const headers: Record<string, string> = { ...options.headers };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (!options.anonymous) {
      if (!authorization) throw new BrokerError(401, 'not logged in: call login() first');
      headers.authorization = authorization;
    }
    const controller = options.timeoutMs === undefined ? null : new AbortController();
    const timer = controller ? setTimeout(() => controller.abort(), options.timeoutMs) : null;
    try {
      let response: Response;
      try {
        response = await this.#fetch(`${this.url}${path}`, {
          method,
          headers,
          body: body === undefined ? null : JSON.stringify(body),
          ...(options.credentials ? { credentials: options.credentials } : {}),
          ...(controller ? { signal: controller.signal } : {}),
        });
      } catch (e) {
        if (controller?.signal.aborted) {
          throw new BrokerError(0, `no answer from ${this.url} within ${options.timeoutMs} ms`);
        }
        throw new BrokerError(0, `could not reach ${this.url}: ${(e as Error).message}`);
      }
      if (!response.ok) throw await errorOf(response);
      try {
        return (await response.json()) as T;
      } catch (e) {
        if (controller?.signal.aborted) {
          throw new BrokerError(0, `no complete answer from ${this.url} within ${options.timeoutMs} ms`);
        }
        throw new BrokerError(0, `the answer from ${this.url} broke off: ${(e as Error).message}`);
      }
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
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
export class Subscription<E extends EventMap = EventMap, V extends boolean = false> {
  #broker: Broker;
  #options: SubscribeOptions<E>;
  #listeners = new Map<string, Set<Listener<unknown>>>();
  #any = new Set<(event: BrokerEvent) => void>();
  #resetListeners = new Set<(reason: unknown) => void>();
  #openListeners = new Set<() => void>();
  #errorListeners = new Set<(error: Error, willRetry: boolean) => void>();
  #closedListeners = new Set<(reason: CloseReason, info: { cursor: number | null }) => void>();
  #lastEventId: string | null;
  #controller = new AbortController();
  #closed = false;
  #serverRetry: number | null = null;
  #source: EventSourceLike | null = null;
  #wake: (() => void) | null = null;
  /** Resolves when the subscription has ended (closed, or credentials refused). */
  readonly done: Promise<void>;

  constructor(broker: Broker, options: SubscribeOptions<E>) {
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

  /**
   * Calls `listener` with each event named `name`: its data typed by the event map, or with
   * `envelope: true` its {@link Envelope}.
   */
  on<K extends keyof E & string>(name: K, listener: Listener<Delivered<E, K, V>>): this {
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
  onAny(listener: (event: BrokerEvent<keyof E & string, V extends true ? Envelope : unknown>) => void): this {
    if (this.#options.transport === 'eventsource') {
      throw new Error('onAny needs the fetch transport: EventSource delivers only named listeners');
    }
    this.#any.add(listener as (event: BrokerEvent) => void);
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

  /**
   * The server ended the stream (`broker.closed`) and said why: `shutdown` or `expired` (the
   * subscription reconnects, with the current JWT, and resumes), or `revoked`, `deleted`,
   * `credentials_changed` (it ends: after
   * the listeners, `onError` gets a 401 with `willRetry` false and `done` resolves).
   * `cursor` is where a resume would start.
   */
  onClosed(listener: (reason: CloseReason, info: { cursor: number | null }) => void): this {
    this.#closedListeners.add(listener);
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
    let refreshed = false;
    while (!this.#closed) {
      const used = this.#broker.authorization;
      try {
        const delivered = this.#options.transport === 'eventsource'
          ? await this.#viaEventSource()
          : await this.#viaFetch();
        refreshed = false;
        if (delivered) attempt = 0;
        if (this.#closed) return;
        this.#emitError(new BrokerError(0, 'the stream ended (the server restarted or stopped)'), true);
      } catch (e) {
        if (this.#closed) return;
        const error = e instanceof Error ? e : new Error(String(e));
        // A 401 with a JWT: refresh it once (it may have expired while the stream was down).
        if (error instanceof BrokerError && error.status === 401 && !refreshed
          && await this.#broker.recover401(used)) {
          refreshed = true;
          continue;
        }
        const fatal = error instanceof BrokerError && (error.status === 401 || error.status === 400
          || error.status === 403);
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
    // Jitter: clients dropped together by a restart do not all come back at once.
    return jittered(base, attempt, this.#options.maxRetryMs ?? 30000);
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

  /** The query of `/sse`: the filter and the envelope choice. */
  #view(): { events?: string[]; envelope?: boolean } {
    return {
      ...(this.#options.events ? { events: this.#options.events } : {}),
      ...(this.#options.envelope ? { envelope: true } : {}),
    };
  }

  /** One streaming fetch; returns whether any event arrived. */
  async #viaFetch(): Promise<boolean> {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    await this.#broker.refreshIfDue();
    const auth = this.#broker.authorization;
    if (!auth) throw new BrokerError(401, 'not logged in: call login() first');
    headers.authorization = auth;
    if (this.#lastEventId !== null) headers['last-event-id'] = this.#lastEventId;
    const view = this.#view();
    const query = new URLSearchParams();
    for (const name of view.events ?? []) query.append('event', name);
    if (view.envelope) query.set('envelope', 'true');
    const q = query.toString();
    let response: Response;
    try {
      response = await this.#broker.fetchFn(`${this.#broker.url}/sse${q ? `?${q}` : ''}`, {
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
      }, this.#controller.signal);
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
    const url = await this.#broker.eventSourceUrl(this.#lastEventId ?? undefined, this.#view());
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
    if (this.#closed) return false;
    let data: unknown = raw;
    try { data = JSON.parse(raw); } catch { /* Broker's data is always JSON; keep the text otherwise */ }
    // broker.closed ends a stream and says why; 16.0 servers sent broker.shutdown at
    // shutdown. Neither is an event of the tenant; both carry the resume cursor.
    if (name === 'broker.closed' || name === 'broker.shutdown') {
      if (id) this.#lastEventId = id;
      const told = (data ?? {}) as { reason?: unknown; cursor?: unknown };
      const reason: CloseReason = name === 'broker.closed' && typeof told.reason === 'string'
        ? told.reason
        : 'shutdown';
      const cursor = typeof told.cursor === 'number' ? told.cursor : id ? Number(id) : null;
      for (const l of this.#closedListeners) l(reason, { cursor });
      if (FINAL_REASONS.has(reason)) {
        // The credentials are void: a reconnect would only be refused.
        this.#emitError(new BrokerError(401, `the server closed the stream: ${reason.replace('_', ' ')}`), false);
        this.close();
      }
      return false;
    }
    if (name === 'broker.reset') {
      for (const l of this.#resetListeners) l(data);
      return false;
    }
    if (id) this.#lastEventId = id;
    const meta = { id: id ?? '', event: name };
    if (this.#options.envelope && data !== null && typeof data === 'object') {
      const e = data as { id?: unknown; at?: unknown; by?: unknown; data?: unknown };
      data = {
        id: e.id,
        at: e.at,
        by: e.by ?? null,
        data: e.data,
        cursor: Number(id),
        event: name,
      } satisfies Record<keyof Envelope, unknown>;
    }
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

/**
 * Reads SSE frames off a byte stream (the text/event-stream format) until it ends or `signal`
 * aborts (then it returns: a fetch's abort alone does not always end a pending read).
 */
export async function readFrames(
  body: ReadableStream<Uint8Array>,
  onFrame: (frame: Frame) => void,
  signal?: AbortSignal,
): Promise<void> {
  const reader = body.getReader();
  const stop = () => { reader.cancel().catch(() => {}); };
  signal?.addEventListener('abort', stop);
  try {
    await readLines(reader, onFrame, signal);
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}

async function readLines(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  onFrame: (frame: Frame) => void,
  signal: AbortSignal | undefined,
): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = '';
  let frame: Frame = {};
  for (;;) {
    if (signal?.aborted) return;
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
