// Broker's admin console: plain ES module, no framework, no third-party code. Everything goes
// through the public admin API with the token typed in at sign-in, which lives only in the
// `token` variable below (never in storage, cookies or URLs).

const $ = (id) => document.getElementById(id);
let token = null;
let users = [];
let editing = null; // username being edited, or null when creating
let watch = null; // { controller, tenant, lastId }
let healthTimer = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, body = {}) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, admin_token: token }),
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (!response.ok) {
    throw new ApiError(response.status, json?.error ?? `HTTP ${response.status}`);
  }
  return json;
}

function say(message, isError = false) {
  const status = $('status');
  status.textContent = message;
  status.classList.toggle('error', isError);
}

function el(tag, props = {}, ...children) {
  const { dataset, ariaLabel, ...rest } = props;
  const node = Object.assign(document.createElement(tag), rest);
  if (dataset) Object.assign(node.dataset, dataset);
  if (ariaLabel) node.setAttribute('aria-label', ariaLabel);
  for (const child of children) node.append(child);
  return node;
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
  $('sign-in').hidden = true;
  $('signed-in').hidden = false;
  $('sign-out').hidden = false;
  say('Signed in.');
  await loadUsers();
  healthTimer = setInterval(() => refreshHealth().catch(() => {}), 5000);
}

function signOut() {
  token = null;
  users = [];
  stopWatching();
  clearInterval(healthTimer);
  $('users').tBodies[0].replaceChildren();
  $('health').replaceChildren();
  $('signed-in').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in').hidden = false;
  say('Signed out.');
  $('admin-token').focus();
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

// ---- users ----

async function loadUsers() {
  try {
    users = await api('/list_users');
    renderUsers();
  } catch (e) {
    say(`Could not list users: ${e.message}`, true);
  }
}

function renderUsers() {
  const query = $('user-search').value.trim().toLowerCase();
  const shown = users.filter((u) => !query || [u.username, u.tenant_name, u.email ?? '']
    .some((field) => field.toLowerCase().includes(query)));
  $('users-caption').textContent = query
    ? `${shown.length} of ${users.length} users match “${query}”`
    : `${users.length} users`;
  $('users').tBodies[0].replaceChildren(...shown.map((u) => {
    const row = el('tr', { className: u.revoked ? 'revoked' : '' },
      el('td', {}, el('code', { textContent: u.username })),
      el('td', { textContent: u.tenant_name }),
      el('td', { textContent: u.email ?? '' }),
      el('td', { textContent: (u.scopes ?? []).join(', ') }),
      el('td', { textContent: u.two_factor ? 'on' : 'off' }),
      el('td', { textContent: u.revoked ? 'revoked' : 'active' }),
      el('td', { className: 'actions' },
        el('button', { type: 'button', textContent: 'Edit', onclick: () => openUserDialog(u),
          ariaLabel: `Edit ${u.username}` }),
        el('button', { type: 'button', textContent: u.revoked ? 'Unrevoke' : 'Revoke',
          onclick: () => setRevoked(u.username, !u.revoked),
          ariaLabel: `${u.revoked ? 'Unrevoke' : 'Revoke'} ${u.username}` }),
        el('button', { type: 'button', textContent: 'QR', onclick: () => openQr(u.username),
          ariaLabel: `Two-factor QR code of ${u.username}` }),
        el('button', { type: 'button', textContent: 'Delete', className: 'danger',
          onclick: () => deleteUser(u.username),
          ariaLabel: `Delete ${u.username}` })));
    row.dataset.username = u.username;
    return row;
  }));
}

async function setRevoked(username, revoked) {
  // Revoking ends the user's sessions and streams at once: ask first.
  if (revoked && !window.confirm(`Revoke ${username}? Their tokens stop working and their streams close.`)) return;
  try {
    await api(revoked ? '/revoke_user' : '/unrevoke_user', { username });
    say(`${username} ${revoked ? 'revoked: their tokens no longer work and their streams closed' : 'unrevoked: they can log in again'}.`);
    await loadUsers();
    await refreshHealth();
  } catch (e) {
    say(`Could not ${revoked ? 'revoke' : 'unrevoke'} ${username}: ${e.message}`, true);
  }
}

async function deleteUser(username) {
  if (!window.confirm(`Delete ${username}? They cannot log in again, their streams close, and their personal data is erased at the next compaction. Their events stay.`)) return;
  try {
    await api('/delete_user', { username });
    say(`${username} deleted: the name is free again; their events stay in the tenant.`);
    await loadUsers();
    await refreshHealth();
  } catch (e) {
    say(`Could not delete ${username}: ${e.message}`, true);
  }
}

function openUserDialog(user = null) {
  editing = user?.username ?? null;
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
  $('u-two-factor').checked = user?.two_factor ?? false;
  $('user-error').textContent = '';
  $('user-dialog').showModal();
}

async function saveUser(event) {
  event.preventDefault();
  const body = {
    username: $('u-username').value.trim(),
    tenant_name: $('u-tenant').value.trim(),
    email: $('u-email').value.trim() || null,
    scopes: $('u-scopes').value.split(',').map((s) => s.trim()).filter(Boolean),
    two_factor: $('u-two-factor').checked,
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
      await api('/update_user', body);
      say(`${editing} updated.`);
    } else {
      if (body.email === null) delete body.email;
      if (body.data === null) delete body.data;
      await api('/create_user', body);
      say(`${body.username} created in tenant ${body.tenant_name}.`);
    }
    $('user-dialog').close();
    await loadUsers();
    await refreshHealth();
  } catch (e) {
    $('user-error').textContent = e.message;
  }
}

let qrUser = null;
function openQr(username) {
  qrUser = username;
  $('qr-user').textContent = `User: ${username}.`;
  $('qr-image').hidden = true;
  $('qr-image').removeAttribute('src');
  $('qr-error').textContent = '';
  $('qr-dialog').showModal();
}

async function makeQr() {
  try {
    const { qr } = await api('/create_qr', { username: qrUser, issuer: $('qr-issuer').value.trim() });
    const img = $('qr-image');
    img.src = `data:image/png;base64,${qr}`;
    img.alt = `QR code enrolling ${qrUser} in an authenticator app`;
    img.hidden = false;
  } catch (e) {
    $('qr-error').textContent = e.message;
  }
}

// ---- live events ----
// fetch + a small SSE parser rather than EventSource: EventSource delivers named events only
// to listeners registered for that name, and the console must show every name.

async function startWatching(event) {
  event.preventDefault();
  stopWatching();
  const tenant = $('watch-tenant').value.trim();
  watch = { controller: new AbortController(), tenant, lastId: null };
  $('events').tBodies[0].replaceChildren();
  $('stop-watch').disabled = false;
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
      const response = await fetch(`/sse?ticket=${encodeURIComponent(ticket)}${resume}`, {
        signal: w.controller.signal,
        headers: { accept: 'text/event-stream' },
      });
      if (!response.ok) throw new ApiError(response.status, (await response.json()).error);
      $('watch-state').textContent = `Watching tenant “${w.tenant}”.`;
      delay = 500;
      await readFrames(response.body, (frame) => {
        if (watch !== w) return;
        if (frame.id !== undefined) w.lastId = frame.id;
        if (frame.event && !frame.event.startsWith('broker.')) showEvent(frame);
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

function showEvent(frame) {
  let data = frame.data;
  try { data = JSON.stringify(JSON.parse(frame.data)); } catch { /* show as sent */ }
  const row = el('tr', {},
    el('td', {}, el('code', { textContent: frame.id ?? '' })),
    el('td', { textContent: frame.event }),
    el('td', {}, el('pre', { textContent: data })),
    el('td', { textContent: new Date().toLocaleTimeString() }));
  row.dataset.cursor = frame.id ?? '';
  const body = $('events').tBodies[0];
  body.prepend(row);
  while (body.rows.length > 500) body.lastElementChild.remove();
}

// ---- wiring ----

$('sign-in-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', signOut);
$('refresh-health').addEventListener('click', () => refreshHealth().catch((e) => say(e.message, true)));
$('refresh-users').addEventListener('click', loadUsers);
$('user-search').addEventListener('input', renderUsers);
$('new-user').addEventListener('click', () => openUserDialog());
$('user-form').addEventListener('submit', saveUser);
$('user-cancel').addEventListener('click', () => $('user-dialog').close());
$('qr-make').addEventListener('click', makeQr);
$('watch-form').addEventListener('submit', startWatching);
$('stop-watch').addEventListener('click', stopWatching);
$('admin-token').focus();
