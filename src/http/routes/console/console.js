// Broker's admin console: plain ES module, no framework, no third-party code. Everything goes
// through the public admin API with the token typed in at sign-in. The token is kept in
// sessionStorage — this tab only, gone when the tab closes or at sign-out, never localStorage
// or a cookie — so that a reload does not sign the operator out. Everything shown goes in as
// text (textContent, attributes), never as markup.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'broker-admin-token';
const SVG = 'http://www.w3.org/2000/svg';
let token = null;
let healthTimer = null;
let chartTimer = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function reply(response) {
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (!response.ok) throw new ApiError(response.status, json?.error ?? `HTTP ${response.status}`);
  return json;
}

async function api(path, body = {}) {
  return reply(await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-admin-token': token },
    body: JSON.stringify(body),
  }));
}

async function apiGet(path, params, signal) {
  return reply(await fetch(`${path}?${params}`, { headers: { 'x-admin-token': token }, signal }));
}

function say(message, isError = false) {
  const status = $('status');
  status.textContent = message;
  status.classList.toggle('error', isError);
}

function el(tag, props = {}, ...children) {
  const { dataset, ariaLabel, title, ...rest } = props;
  const node = Object.assign(document.createElement(tag), rest);
  if (dataset) Object.assign(node.dataset, dataset);
  if (ariaLabel) node.setAttribute('aria-label', ariaLabel);
  if (title) node.title = title;
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

/** A cell cut with an ellipsis when too long; the whole text is its tooltip. */
function cut(text, className = '') {
  return el('td', { className: `cut ${className}`.trim(), textContent: text, title: text });
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** `at` (RFC 3339 from the server) as local `YYYY-MM-DD HH:MM:SS`, in a <time> that keeps it. */
function when(at) {
  const d = new Date(at);
  const text = Number.isNaN(d.getTime()) ? String(at)
    : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return el('time', { dateTime: at, textContent: text, title: at });
}

function compactJson(value) {
  return JSON.stringify(value) ?? String(value);
}

// ---- sign in / out ----

async function signIn(event) {
  event.preventDefault();
  token = $('admin-token').value;
  try {
    await refreshHealth();
  } catch (e) {
    token = null;
    say(e.status === 401 ? 'Wrong admin token.' : `Sign-in failed: ${e.message}`, true);
    return;
  }
  $('admin-token').value = '';
  sessionStorage.setItem(TOKEN_KEY, token);
  await enter('Signed in.');
}

async function resume() {
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (!kept) { $('admin-token').focus(); return; }
  token = kept;
  try {
    await refreshHealth();
  } catch (e) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    say(e.status === 401 ? 'The kept admin token no longer works: sign in again.' : `Could not reach the server: ${e.message}`, true);
    $('admin-token').focus();
    return;
  }
  await enter('Signed in (this tab kept the token).');
}

async function enter(message) {
  $('sign-in').hidden = true;
  $('signed-in').hidden = false;
  $('sign-out').hidden = false;
  $('nav').hidden = false;
  say(message);
  healthTimer = setInterval(() => refreshHealth().catch(() => {}), 5000);
  chartTimer = setInterval(drawChart, 15000);
  show(location.hash.slice(1) || 'users');
  await Promise.all([loadUsers(), loadTenants()]);
}

function signOut() {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopWatching();
  clearInterval(healthTimer);
  clearInterval(chartTimer);
  users.list = [];
  for (const id of ['users', 'history', 'events']) $(id).tBodies[0].replaceChildren();
  $('health').replaceChildren();
  $('chart').replaceChildren();
  $('signed-in').hidden = true;
  $('sign-out').hidden = true;
  $('nav').hidden = true;
  $('sign-in').hidden = false;
  say('Signed out: this tab forgot the admin token.');
  $('admin-token').focus();
}

// ---- views ----

function show(view) {
  if (!['users', 'events', 'live'].includes(view)) view = 'users';
  for (const tab of document.querySelectorAll('nav .tab')) {
    tab.setAttribute('aria-pressed', String(tab.dataset.view === view));
  }
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
  $('tenant-bar').hidden = view === 'users';
  if (location.hash !== `#${view}`) history.replaceState(null, '', `#${view}`);
  if (view === 'events' && tenant() && !history_.loaded) loadHistory();
}

// ---- health ----

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

async function refreshHealth() {
  const s = await api('/server_stats');
  const rows = [
    ['Status', s.status], ['Version', s.version], ['Uptime', duration(s.uptime_secs)],
    ['Cursor', s.cursor], ['Log size', bytes(s.log_bytes)], ['Segments', s.log_segments],
    ['Users', s.users], ['Revoked', s.revoked_users], ['Tenants', s.tenants],
    ['Open streams', s.sse_subscribers], ['Resume horizon', s.resume_horizon],
  ];
  $('health').replaceChildren(...rows.map(([k, v]) =>
    el('div', { dataset: { stat: k } }, el('dt', { textContent: k }), el('dd', { textContent: String(v) }))));
}

// ---- users: server-side pages ----

const users = {
  list: [],
  // The `after` of each page seen so far: [null, next of page 1, …]; the last is this page's.
  trail: [null],
  next: null,
  // Requests of pages made so far; the answer of an earlier one is dropped.
  loads: 0,
};

async function loadUsers() {
  const body = { sort: $('user-sort').value, limit: Number($('user-limit').value) };
  const trail = users.trail.slice();
  const after = trail.at(-1);
  if (after !== null) body.after = after;
  // Answers can arrive out of order (a refresh after an edit, then a click on Next): only
  // the latest request's page is shown, so an older page never lands under a newer number.
  const ticket = ++users.loads;
  try {
    const page = await api('/list_users', body);
    if (ticket !== users.loads) return;
    users.trail = trail;
    users.list = page.users;
    users.next = page.next;
    if (!page.users.length && users.trail.length > 1) {
      // The page emptied (its users were deleted): show the one before.
      users.trail.pop();
      return loadUsers();
    }
    renderUsers();
  } catch (e) {
    say(`Could not list users: ${e.message}`, true);
  }
}

function firstPage() {
  users.trail = [null];
  loadUsers();
}

function renderUsers() {
  const query = $('user-search').value.trim().toLowerCase();
  const shown = users.list.filter((u) => !query || [u.username, u.tenant_name, u.email ?? '']
    .some((field) => field.toLowerCase().includes(query)));
  const page = users.trail.length;
  const sortName = $('user-sort').selectedOptions[0].textContent;
  $('users-caption').textContent = query
    ? `Page ${page}: ${shown.length} of ${users.list.length} users match “${query}” (${sortName})`
    : `Page ${page}: ${users.list.length} users (${sortName})`;
  $('users-page').textContent = `Page ${page}`;
  $('users-prev').disabled = page === 1;
  $('users-next').disabled = users.next === null;
  $('users').tBodies[0].replaceChildren(...shown.map((u) => {
    const row = el('tr', { className: u.revoked ? 'revoked' : '' },
      el('td', { className: 'cut' }, el('button', { type: 'button', className: 'link', textContent: u.username,
        title: u.username, onclick: () => openDetail(u.username), ariaLabel: `Details of ${u.username}` })),
      cut(u.tenant_name),
      cut(u.email ?? '', 'wide'),
      el('td', { textContent: u.two_factor ? 'on' : 'off' }),
      el('td', { textContent: u.revoked ? 'revoked' : 'active' }),
      el('td', { className: 'wide' }, when(u.created_at)),
      el('td', { className: 'actions wide' }, ...userActions(u)));
    row.dataset.username = u.username;
    return row;
  }));
}

function userActions(u) {
  return [
    el('button', { type: 'button', className: 'secondary', textContent: 'Edit', onclick: () => openUserDialog(u),
      ariaLabel: `Edit ${u.username}` }),
    el('button', { type: 'button', className: 'secondary', textContent: u.revoked ? 'Unrevoke' : 'Revoke',
      onclick: () => setRevoked(u.username, !u.revoked),
      ariaLabel: `${u.revoked ? 'Unrevoke' : 'Revoke'} ${u.username}` }),
    el('button', { type: 'button', className: 'secondary', textContent: '2FA', onclick: () => openQr(u),
      ariaLabel: `Two-factor enrolment of ${u.username}` }),
    el('button', { type: 'button', textContent: 'Delete', className: 'danger',
      onclick: () => deleteUser(u.username), ariaLabel: `Delete ${u.username}` }),
  ];
}

async function afterChange(username) {
  await loadUsers();
  refreshHealth().catch(() => {});
  if ($('detail-dialog').open && username) openDetail(username);
}

async function setRevoked(username, revoked) {
  // Revoking ends the user's sessions and streams at once: ask first.
  if (revoked && !window.confirm(`Revoke ${username}? Their tokens stop working and their streams close.`)) return;
  try {
    await api(revoked ? '/revoke_user' : '/unrevoke_user', { username });
    say(`${username} ${revoked ? 'revoked: their tokens no longer work and their streams closed' : 'unrevoked: they can log in again'}.`);
    await afterChange(username);
  } catch (e) {
    say(`Could not ${revoked ? 'revoke' : 'unrevoke'} ${username}: ${e.message}`, true);
  }
}

async function deleteUser(username) {
  if (!window.confirm(`Delete ${username}? They cannot log in again, their streams close, and their personal data is erased at the next compaction. Their events stay.`)) return;
  try {
    await api('/delete_user', { username });
    say(`${username} deleted: the name is free again; their events stay in the tenant.`);
    if ($('detail-dialog').open) $('detail-dialog').close();
    await afterChange(null);
    loadTenants();
  } catch (e) {
    say(`Could not delete ${username}: ${e.message}`, true);
  }
}

// ---- user detail ----

async function openDetail(username) {
  let u;
  try {
    u = await api('/get_user', { username });
  } catch (e) {
    say(`Could not read ${username}: ${e.message}`, true);
    return;
  }
  $('detail-title').textContent = `User ${u.username}`;
  const data = u.data == null ? '—' : JSON.stringify(u.data, null, 2);
  const rows = [
    ['Username', u.username], ['ID', u.id], ['Tenant', u.tenant_name], ['Email', u.email ?? '—'],
    ['Scopes', u.scopes == null ? 'none set' : u.scopes.length ? u.scopes.join(', ') : 'empty list'],
    ['Two-factor', u.two_factor ? 'on' : 'off'], ['State', u.revoked ? 'revoked' : 'active'],
    ['Created', when(u.created_at)], ['Changed', when(u.changed_at)],
    ['Data', el('pre', { textContent: data })],
  ];
  $('detail').replaceChildren(...rows.flatMap(([k, v]) => [
    el('dt', { textContent: k }),
    el('dd', { dataset: { field: k } }, typeof v === 'string' ? document.createTextNode(v) : v),
  ]));
  $('detail-buttons').replaceChildren(...userActions(u));
  if (!$('detail-dialog').open) $('detail-dialog').showModal();
}

// ---- create / edit ----

let editing = null; // the user being edited, or null when creating

function openUserDialog(user = null) {
  editing = user;
  $('user-dialog-title').textContent = user ? `Edit ${user.username}` : 'Create user';
  $('u-username').value = user?.username ?? '';
  $('u-username').readOnly = Boolean(user);
  $('u-password').value = '';
  $('u-password').required = !user;
  $('u-password-hint').textContent = user ? '(leave empty to keep it)' : '';
  $('u-tenant').value = user?.tenant_name ?? '';
  $('u-email').value = user?.email ?? '';
  $('u-scopes').value = user?.scopes?.join(', ') ?? '';
  $('u-data').value = user?.data == null ? '' : JSON.stringify(user.data);
  // Two-factor goes on only through enrolment (a code from the app must verify first), so
  // the box can only turn it off.
  $('u-two-factor').checked = user?.two_factor ?? false;
  $('u-two-factor').disabled = !user?.two_factor;
  $('user-error').textContent = '';
  if ($('detail-dialog').open) $('detail-dialog').close();
  $('user-dialog').showModal();
}

async function saveUser(event) {
  event.preventDefault();
  const body = {
    username: $('u-username').value.trim(),
    tenant_name: $('u-tenant').value.trim(),
    email: $('u-email').value.trim() || null,
    scopes: $('u-scopes').value.split(',').map((s) => s.trim()).filter(Boolean),
  };
  const dataText = $('u-data').value.trim();
  if (dataText) {
    try { body.data = JSON.parse(dataText); } catch {
      $('user-error').textContent = 'Data: not valid JSON.';
      return;
    }
  } else {
    body.data = null;
  }
  if ($('u-password').value) body.password = $('u-password').value;
  try {
    if (editing) {
      if (editing.two_factor && !$('u-two-factor').checked) body.two_factor = false;
      await api('/update_user', body);
      say(`${editing.username} updated.`);
    } else {
      if (body.email === null) delete body.email;
      if (body.data === null) delete body.data;
      await api('/create_user', body);
      say(`${body.username} created in tenant ${body.tenant_name}.`);
      loadTenants();
    }
    $('user-dialog').close();
    await afterChange(null);
  } catch (e) {
    $('user-error').textContent = e.message;
  }
}

// ---- two-factor enrolment ----

let qrUser = null;
function openQr(user) {
  qrUser = user.username;
  $('qr-user').textContent = `User: ${user.username} (two-factor login is ${user.two_factor ? 'on' : 'off'}).`;
  $('qr-image').hidden = true;
  $('qr-image').removeAttribute('src');
  $('qr-uri-row').hidden = true;
  $('qr-uri').textContent = '';
  $('qr-code').value = '';
  $('qr-verify').disabled = true;
  $('qr-error').textContent = '';
  $('qr-done').textContent = '';
  if ($('detail-dialog').open) $('detail-dialog').close();
  $('qr-dialog').showModal();
}

async function makeQr() {
  $('qr-error').textContent = '';
  try {
    const { qr, uri } = await api('/create_qr', { username: qrUser, issuer: $('qr-issuer').value.trim() });
    const img = $('qr-image');
    img.src = `data:image/png;base64,${qr}`;
    img.alt = `QR code enrolling ${qrUser} in an authenticator app`;
    img.hidden = false;
    $('qr-uri').textContent = uri;
    $('qr-uri-row').hidden = false;
    $('qr-verify').disabled = false;
    $('qr-code').focus();
  } catch (e) {
    $('qr-error').textContent = e.message;
  }
}

async function verifyQr() {
  $('qr-error').textContent = '';
  $('qr-done').textContent = '';
  const code = $('qr-code').value.trim();
  if (!/^\d{6}$/.test(code)) {
    $('qr-error').textContent = 'Type the 6 digits the app shows.';
    return;
  }
  try {
    await api('/enable_two_factor', { username: qrUser, totp: code });
    $('qr-done').textContent = `The code is right: two-factor login is on for ${qrUser}.`;
    $('qr-user').textContent = `User: ${qrUser} (two-factor login is on).`;
    say(`Two-factor login is on for ${qrUser}.`);
    await afterChange(null);
  } catch (e) {
    $('qr-error').textContent = `${e.message}`;
  }
}

// ---- tenants ----

async function loadTenants() {
  let tenants;
  try {
    tenants = await api('/list_tenants');
  } catch (e) {
    say(`Could not list tenants: ${e.message}`, true);
    return;
  }
  const select = $('tenant');
  const current = select.value;
  select.replaceChildren(...tenants.map((t) => el('option', {
    value: t.tenant_name,
    textContent: `${t.tenant_name} (${t.users} users, ${t.event_names} event names)`,
  })));
  $('tenant-names').replaceChildren(...tenants.map((t) => el('option', { value: t.tenant_name })));
  if (tenants.some((t) => t.tenant_name === current)) select.value = current;
  $('tenant-info').textContent = tenants.length ? '' : 'No tenant yet: create a user first.';
  if (select.value !== current) tenantChanged();
}

const tenant = () => $('tenant').value;

function tenantChanged() {
  stopWatching();
  $('events').tBodies[0].replaceChildren();
  history_.loaded = false;
  chart.tenant = null;
  if (!$('view-events').hidden) loadHistory();
}

// ---- event history ----

const history_ = { next: null, loaded: false, controller: null };

function historyParams(extra = {}) {
  const params = new URLSearchParams({ tenant: tenant(), limit: $('history-limit').value, ...extra });
  for (const name of $('history-names').value.split(',').map((s) => s.trim()).filter(Boolean)) {
    params.append('event', name);
  }
  return params;
}

async function loadHistory(older = false) {
  if (!tenant()) return;
  history_.controller?.abort();
  const controller = history_.controller = new AbortController();
  const extra = older && history_.next !== null ? { before: history_.next } : {};
  try {
    const page = await apiGet('/events', historyParams(extra), controller.signal);
    history_.loaded = true;
    history_.next = page.next;
    const body = $('history').tBodies[0];
    const rows = page.events.map(eventRow);
    if (older) body.append(...rows); else body.replaceChildren(...rows);
    $('history-older').disabled = page.next === null;
    $('history-caption').textContent = `Tenant “${tenant()}”: ${body.rows.length} events shown, newest first${page.next === null ? ' (that is all)' : ''}`;
    if (!older) loadChart();
  } catch (e) {
    if (e.name === 'AbortError') return;
    say(`Could not read the events of “${tenant()}”: ${e.message}`, true);
  }
}

/** Who inserted an event: a username, or the admin (`null`), shown apart so that a user
 * named "admin" cannot pass for the admin. */
function author(by) {
  if (by !== null && by !== undefined) return cut(by, 'wide');
  const td = cut('', 'wide admin-insert');
  td.title = 'inserted by the admin (no author)';
  td.append(el('em', { textContent: 'admin insert' }));
  return td;
}

/** A row of the history or the live tail: the event's own time and author. */
function eventRow({ cursor, event, at, by, data }) {
  const row = el('tr', {},
    el('td', {}, el('code', { textContent: String(cursor) })),
    cut(event),
    el('td', {}, when(at)),
    author(by),
    el('td', { className: 'data' }, el('pre', { textContent: compactJson(data) })));
  row.dataset.cursor = String(cursor);
  return row;
}

// ---- events per minute ----

const MINUTES = 30;
const HISTORY_PAGES = 5;
const chart = { tenant: null, seen: new Set(), times: [], partial: false };

/** Counts the last MINUTES of the tenant from history (at most HISTORY_PAGES pages of 1000
 * events, newest first), then live. */
async function loadChart() {
  const name = tenant();
  chart.tenant = name;
  chart.seen = new Set();
  chart.times = [];
  chart.partial = false;
  const since = Date.now() - MINUTES * 60000;
  let before = null;
  for (let pages = 0; ; pages += 1) {
    if (pages === HISTORY_PAGES) { chart.partial = true; break; }
    const params = new URLSearchParams({ tenant: name, limit: '1000' });
    if (before !== null) params.set('before', before);
    let page;
    try { page = await apiGet('/events', params); } catch { break; }
    if (chart.tenant !== name) return;
    for (const e of page.events) count(e.cursor, e.at);
    const oldest = page.events.at(-1);
    if (page.next === null || (oldest && Date.parse(oldest.at) < since)) break;
    before = page.next;
  }
  drawChart();
}

function count(cursor, at) {
  const key = String(cursor);
  if (chart.seen.has(key)) return;
  chart.seen.add(key);
  const t = Date.parse(at);
  if (!Number.isNaN(t)) chart.times.push(t);
}

function drawChart() {
  const box = $('chart');
  if (!chart.tenant) { box.replaceChildren(); return; }
  const minute = 60000;
  const end = Math.floor(Date.now() / minute) * minute + minute;
  const start = end - MINUTES * minute;
  chart.times = chart.times.filter((t) => t >= start);
  const buckets = new Array(MINUTES).fill(0);
  for (const t of chart.times) buckets[Math.min(MINUTES - 1, Math.floor((t - start) / minute))] += 1;
  const top = Math.max(1, ...buckets);
  const [w, h, left, bottom, topPad] = [600, 160, 40, 22, 10];
  const bar = (w - left - 4) / MINUTES;
  const scale = (h - bottom - topPad) / top;
  const parts = [
    svg('line', { class: 'axis', x1: left, y1: h - bottom, x2: w - 2, y2: h - bottom }),
    svg('line', { class: 'axis', x1: left, y1: topPad, x2: left, y2: h - bottom }),
    svg('text', { class: 'end', x: left - 4, y: topPad + 8 }, String(top)),
    svg('text', { class: 'end', x: left - 4, y: h - bottom }, '0'),
    svg('text', { x: left, y: h - 6 }, clock(start)),
    svg('text', { class: 'end', x: w - 2, y: h - 6 }, `${clock(end)} (now)`),
  ];
  buckets.forEach((n, i) => {
    if (!n) return;
    const rect = svg('rect', {
      class: 'bar', x: (left + 1 + i * bar).toFixed(1), y: (h - bottom - n * scale).toFixed(1),
      width: Math.max(1, bar - 2).toFixed(1), height: (n * scale).toFixed(1),
    });
    rect.dataset.count = String(n);
    rect.append(svg('title', {}, `${n} events in the minute from ${clock(start + i * minute)}`));
    parts.push(rect);
  });
  box.replaceChildren(...parts);
  const total = buckets.reduce((a, b) => a + b, 0);
  const partial = chart.partial ? `; older minutes count only the newest ${HISTORY_PAGES * 1000} events read` : '';
  $('chart-caption').textContent = `Events per minute in “${chart.tenant}”, last ${MINUTES} minutes: ${total} in all (history, then live while the live tail watches this tenant${partial})`;
}

function clock(t) {
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// ---- live tail ----
// fetch + a small SSE parser rather than EventSource: EventSource delivers named events only
// to listeners registered for that name, and the console must show every name. With
// `envelope=true` each frame carries the event's own time and author, so the snapshot's old
// events show when they happened, not when the browser got them.

let watch = null; // { controller, tenant, lastId }

function startWatching() {
  stopWatching();
  if (!tenant()) { say('Pick a tenant to watch.', true); return; }
  watch = { controller: new AbortController(), tenant: tenant(), lastId: null };
  $('events').tBodies[0].replaceChildren();
  $('stop-watch').disabled = false;
  $('watch-state').textContent = `Connecting to “${watch.tenant}”…`;
  follow(watch);
}

function stopWatching() {
  if (!watch) return;
  watch.controller.abort();
  watch = null;
  $('stop-watch').disabled = true;
  $('watch-state').textContent = 'Not watching.';
}

async function follow(w) {
  let delay = 500;
  while (watch === w) {
    try {
      const { ticket } = await api('/admin_sse_ticket', { tenant_name: w.tenant });
      const resume = w.lastId === null ? '' : `&last_event_id=${encodeURIComponent(w.lastId)}`;
      const response = await fetch(`/sse?envelope=true&ticket=${encodeURIComponent(ticket)}${resume}`, {
        signal: w.controller.signal,
        headers: { accept: 'text/event-stream' },
      });
      if (!response.ok) throw new ApiError(response.status, (await response.json()).error);
      $('watch-state').textContent = `Watching tenant “${w.tenant}”.`;
      delay = 500;
      await readFrames(response.body, (frame) => {
        if (watch !== w) return;
        if (frame.id !== undefined) w.lastId = frame.id;
        if (frame.event && !frame.event.startsWith('broker.')) showEvent(w, frame);
      });
    } catch (e) {
      if (watch !== w) return;
      if (e.status === 401) { say(`Live view stopped: ${e.message}`, true); stopWatching(); return; }
    }
    if (watch !== w) return;
    $('watch-state').textContent = `Reconnecting to “${w.tenant}”…`;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

async function readFrames(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const frame = { data: [] };
      for (const line of block.split('\n')) {
        if (!line || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') frame.data.push(value);
        else if (field === 'id' || field === 'event') frame[field] = value;
      }
      frame.data = frame.data.join('\n');
      onFrame(frame);
    }
  }
}

function showEvent(w, frame) {
  let envelope;
  try { envelope = JSON.parse(frame.data); } catch { envelope = { at: '', by: null, data: frame.data }; }
  const event = { cursor: frame.id ?? '', event: frame.event, at: envelope.at, by: envelope.by, data: envelope.data };
  const row = eventRow(event);
  row.classList.add('fresh');
  const body = $('events').tBodies[0];
  body.prepend(row);
  while (body.rows.length > 500) body.lastElementChild.remove();
  if (chart.tenant === w.tenant) {
    count(event.cursor, event.at);
    drawChart();
  }
}

// ---- wiring ----

$('sign-in-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', signOut);
for (const tab of document.querySelectorAll('nav .tab')) tab.addEventListener('click', () => show(tab.dataset.view));
$('refresh-health').addEventListener('click', () => refreshHealth().catch((e) => say(e.message, true)));
$('refresh-users').addEventListener('click', loadUsers);
$('user-sort').addEventListener('change', firstPage);
$('user-limit').addEventListener('change', firstPage);
$('users-next').addEventListener('click', () => { if (users.next !== null) { users.trail.push(users.next); loadUsers(); } });
$('users-prev').addEventListener('click', () => { if (users.trail.length > 1) { users.trail.pop(); loadUsers(); } });
$('user-search').addEventListener('input', renderUsers);
$('new-user').addEventListener('click', () => openUserDialog());
$('user-form').addEventListener('submit', saveUser);
$('user-cancel').addEventListener('click', () => $('user-dialog').close());
$('qr-make').addEventListener('click', makeQr);
$('qr-verify').addEventListener('click', verifyQr);
$('tenant').addEventListener('change', tenantChanged);
$('reload-tenants').addEventListener('click', loadTenants);
$('history-form').addEventListener('submit', (e) => { e.preventDefault(); loadHistory(); });
$('history-older').addEventListener('click', () => loadHistory(true));
$('watch').addEventListener('click', startWatching);
$('stop-watch').addEventListener('click', stopWatching);
resume();
