// The admin console end to end in headless Chromium (playwright-core): sign in (the token
// survives a reload, not a sign-out), page and sort users server-side, open a user's detail,
// create/edit/revoke/delete with confirmations, enrol two-factor with a code computed here
// from the QR's URI, pick a tenant from the list, browse its history with a chart, tail it
// live with the events' own times, hostile names rendered as text, long names that keep the
// layout, and a phone-sized viewport without horizontal scrolling.
// Any page error or Content-Security-Policy violation fails the run.
// Usage: node console_e2e.mjs <base-url> <admin-token> <artifacts-dir> [<docs-screenshots-dir>]
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, adminToken, artifacts, docs] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
if (docs) mkdirSync(docs, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'broker-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.BROKER_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1200, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
const page = context.pages()[0] ?? await context.newPage();
// Generous: the machine running the suite may be busy with a build.
page.setDefaultTimeout(30000);
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
// Revoke and delete ask for confirmation; the messages are checked below. `refuseNext`
// answers the next one with Cancel.
const dialogs = [];
let refuseNext = false;
page.on('dialog', (d) => {
  dialogs.push(d.message());
  if (refuseNext) { refuseNext = false; d.dismiss(); } else d.accept();
});
// Chromium reports every refused request as a console error; `expectRefusal` names the one
// status a step provokes on purpose.
let expectRefusal = null;
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  if (expectRefusal && m.text().includes(`status of ${expectRefusal}`)) return;
  problems.push(`console error: ${m.text()}`);
});
// The viewport only (1200×800 or the phone's), small enough to commit as documentation.
const shot = async (name) => {
  await page.screenshot({ path: join(artifacts, `${name}.png`) });
  if (docs) await page.screenshot({ path: join(docs, `${name}.png`) });
};
const step = (what) => console.error(`console e2e: ${what}`);
const fail = (what) => { throw new Error(what); };

const HOSTILE = '<img src=x onerror=window.__xss=1>';
const LONG_USER = `long-${'username-'.repeat(12)}end`;
const LONG_EVENT = `a.very.long.event.name.${'segment.'.repeat(25)}end`;

const call = (method, path, body, headers = {}) => fetch(`${base}${path}`, {
  method,
  headers,
  body: body === undefined ? undefined : JSON.stringify(body),
}).then(async (r) => { if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`); return r.json(); });
const admin = (path, body = {}) => call('POST', path, { ...body, admin_token: adminToken });
const history = (tenant, extra = '') => call('GET', `/events?tenant=${encodeURIComponent(tenant)}&limit=1000${extra}`,
  undefined, { 'x-admin-token': adminToken });

/** RFC 6238 from the otpauth URI's secret: what an authenticator app computes. */
function totp(uri, at = Date.now()) {
  const secret = new URL(uri).searchParams.get('secret');
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1e6).padStart(6, '0');
}

async function noHorizontalOverflow(where) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, width: window.innerWidth,
  }));
  if (scroll > width) fail(`${where}: the page is ${scroll}px wide in a ${width}px viewport`);
}

async function noMarkupRan() {
  const ran = await page.evaluate(() => window.__xss);
  if (ran !== undefined) fail('hostile markup ran');
  const images = await page.locator('table img, dl img').count();
  if (images) fail(`${images} <img> elements came from data`);
}

try {
  const response = await page.goto(`${base}/console`);
  if (response.status() !== 200) fail(`/console answered ${response.status()}`);

  step('a wrong token is refused');
  expectRefusal = 401;
  await page.getByLabel('Admin token').fill('not the token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Wrong admin token.').waitFor();

  step('seed users and events through the API');
  // Created out of order, so that the byte order (user10 < user2) and creation order differ
  // from the natural order the console asks for.
  for (const n of [10, 2, 11, 1, 3, 12, 4, 5, 6, 7, 8, 9]) {
    await admin('/create_user', { username: `user${n}`, password: 'pw', tenant_name: 'acme' });
  }
  await admin('/create_user', { username: HOSTILE, password: 'pw', tenant_name: HOSTILE, email: 'x@example.com' });
  await admin('/create_user', { username: LONG_USER, password: 'pw', tenant_name: `tenant-${'long-'.repeat(20)}` });
  await admin('/admin_insert', { tenant_name: HOSTILE, event: HOSTILE, data: { html: HOSTILE } });

  step('sign in; the token survives a reload of the tab');
  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  expectRefusal = null;
  await page.locator('#health [data-stat="Log size"] dd').waitFor();
  const logSize = await page.locator('#health [data-stat="Log size"] dd').textContent();
  if (!/\d+(\.\d)? (B|KiB|MiB)/.test(logSize)) fail(`log size shows ${logSize}`);
  const storage = await page.evaluate(() => ({ session: sessionStorage.length, local: localStorage.length }));
  if (storage.session !== 1 || storage.local !== 0) fail(`storage after sign-in: ${JSON.stringify(storage)}`);
  await page.reload();
  await page.getByText('Signed in (this tab kept the token).').waitFor();
  await page.locator('#users tbody tr').first().waitFor();

  step('create a user');
  await page.getByRole('button', { name: 'Create user' }).click();
  await page.getByLabel('Username', { exact: true }).fill('carol');
  await page.getByLabel(/^Password/).fill('a long passphrase');
  await page.locator('#user-dialog').getByLabel('Tenant', { exact: true }).fill('acme');
  await page.getByLabel(/^Email/).fill('carol@example.com');
  await page.getByLabel(/^Scopes/).fill('news:get, news:put');
  await page.getByLabel(/^Data/).fill('{"team": "blue"}');
  if (!(await page.getByLabel('Two-factor login').isDisabled())) fail('two-factor can be ticked on at creation');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText('carol created in tenant acme.').waitFor();

  step('pages of 10 in natural order');
  await page.getByLabel('Per page').first().selectOption('10');
  await page.getByText(/^Page 1: 10 users/).waitFor();
  const seen = [];
  for (let p = 1; p <= 5; p += 1) {
    await page.getByText(new RegExp(`^Page ${p}: `)).waitFor();
    seen.push(...await page.locator('#users tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.username)));
    if (await page.getByRole('button', { name: 'Next page' }).isDisabled()) break;
    await page.getByRole('button', { name: 'Next page' }).click();
  }
  const expected = (await admin('/list_users', { sort: 'username', limit: 1000 })).users.map((u) => u.username);
  if (JSON.stringify(seen) !== JSON.stringify(expected)) fail(`pages show ${seen}, the server ${expected}`);
  if (seen.length !== 15) fail(`${seen.length} users over the pages`);
  if (!(seen.indexOf('user2') < seen.indexOf('user10'))) fail(`user10 before user2: ${seen}`);
  await page.getByRole('button', { name: 'Previous page' }).click();
  await page.getByText(/^Page 1: 10 users/).waitFor();
  await page.getByLabel('Per page').first().selectOption('25');
  await page.getByText(/^Page 1: 15 users/).waitFor();

  step('sort by creation, newest first');
  await page.getByLabel('Sort').selectOption('-created');
  await page.getByText(/Newest first\)$/).waitFor();
  const first = await page.locator('#users tbody tr').first().getAttribute('data-username');
  if (first !== 'carol') fail(`newest first starts with ${first}`);
  await page.getByLabel('Sort').selectOption('username');
  await page.getByText(/Username A→Z\)$/).waitFor();

  step('hostile and long names render as text and keep the layout');
  const hostileRow = page.locator('#users tbody tr').filter({ hasText: HOSTILE }).first();
  if ((await hostileRow.locator('td').first().textContent()) !== HOSTILE) fail('hostile username not shown as text');
  await noMarkupRan();
  const longCell = await page.locator(`#users tr[data-username="${LONG_USER}"] td`).first().evaluate((td) => ({
    cut: td.scrollWidth > td.clientWidth || td.querySelector('button').scrollWidth > td.querySelector('button').clientWidth,
    width: td.getBoundingClientRect().width,
  }));
  if (!longCell.cut || longCell.width > 400) fail(`long username cell: ${JSON.stringify(longCell)}`);
  await noHorizontalOverflow('users');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot('users');

  step('search within the page');
  const carolRow = page.locator('#users tr[data-username="carol"]');
  await page.getByLabel('Filter page').fill('nobody-matches');
  await carolRow.waitFor({ state: 'detached' });
  await page.getByLabel('Filter page').fill('');
  await carolRow.waitFor();

  step('user detail');
  await page.getByRole('button', { name: 'Details of carol' }).click();
  const detail = page.locator('#detail-dialog');
  await detail.getByText('User carol').waitFor();
  const field = (name) => detail.locator(`dd[data-field="${name}"]`).textContent();
  const carol = await admin('/get_user', { username: 'carol' });
  if ((await field('ID')) !== carol.id) fail('detail: id');
  if ((await field('Tenant')) !== 'acme') fail('detail: tenant');
  if ((await field('Scopes')) !== 'news:get, news:put') fail('detail: scopes');
  if ((await field('Two-factor')) !== 'off' || (await field('State')) !== 'active') fail('detail: state');
  const created = await detail.locator('dd[data-field="Created"] time').getAttribute('datetime');
  if (created !== carol.created_at) fail(`detail: created ${created} vs ${carol.created_at}`);
  await shot('user-detail');
  await detail.getByRole('button', { name: 'Close' }).click();

  step('edit');
  await page.getByRole('button', { name: 'Edit carol' }).click();
  await page.getByLabel(/^Email/).fill('carol@example.org');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText('carol updated.').waitFor();
  await carolRow.getByText('carol@example.org').waitFor();

  step('revoke asks first; Cancel changes nothing');
  refuseNext = true;
  await page.getByRole('button', { name: 'Revoke carol' }).click();
  if (dialogs.at(-1)?.startsWith('Revoke carol?') !== true) fail(`no confirmation before revoking: ${dialogs}`);
  if ((await admin('/get_user', { username: 'carol' })).revoked) fail('revoked although the confirmation was refused');
  await page.getByRole('button', { name: 'Revoke carol' }).click();
  await carolRow.locator('td', { hasText: /^revoked$/ }).waitFor();
  await page.getByRole('button', { name: 'Unrevoke carol' }).waitFor();

  step('two-factor enrolment: on only after a code from the app');
  await page.getByRole('button', { name: 'Two-factor enrolment of user1', exact: true }).click();
  await page.getByRole('button', { name: 'Show QR code' }).click();
  await page.locator('#qr-image').waitFor({ state: 'visible' });
  // Polled: the data: URL decodes asynchronously, and decode() rejects spuriously here.
  await page.waitForFunction(() => {
    const img = document.getElementById('qr-image');
    return img.complete && img.naturalWidth >= 100;
  });
  const uri = await page.locator('#qr-uri').textContent();
  if (!uri.startsWith('otpauth://totp/Broker:user1?secret=')) fail(`URI shown: ${uri}`);
  const right = totp(uri);
  // Not this step's code (a neighbouring step's could match it: one chance in 500,000).
  const wrong = right.slice(0, 5) + String((Number(right[5]) + 5) % 10);
  expectRefusal = 400;
  await page.getByLabel('Code from the app').fill(wrong);
  await page.getByRole('button', { name: 'Verify and turn on' }).click();
  await page.locator('#qr-error').getByText(/^totp: wrong or expired code/).waitFor();
  if ((await admin('/get_user', { username: 'user1' })).two_factor) fail('two-factor on after a wrong code');
  await page.getByLabel('Code from the app').fill(totp(uri));
  await page.getByRole('button', { name: 'Verify and turn on' }).click();
  await page.getByText('The code is right: two-factor login is on for user1.').waitFor();
  expectRefusal = null;
  await page.locator('#qr-done').scrollIntoViewIfNeeded();
  await shot('two-factor');
  if (!(await admin('/get_user', { username: 'user1' })).two_factor) fail('two-factor still off');
  await page.locator('#qr-close').click();
  await page.locator('#users tr[data-username="user1"] td', { hasText: /^on$/ }).waitFor();

  step('events: the tenant comes from a list');
  await page.getByRole('button', { name: 'Events', exact: true }).click();
  const options = await page.locator('#tenant option').evaluateAll((os) => os.map((o) => o.value));
  for (const t of ['acme', HOSTILE]) if (!options.includes(t)) fail(`tenant list lacks ${t}: ${options}`);
  if (await page.locator('#tenant').evaluate((s) => s.tagName) !== 'SELECT') fail('tenant is free text');

  step('hostile event name and data render as text');
  await page.locator('#tenant').selectOption(HOSTILE);
  const hostileEvent = page.locator('#history tbody tr').first();
  await hostileEvent.waitFor();
  if ((await hostileEvent.locator('td').nth(1).textContent()) !== HOSTILE) fail('hostile event name');
  if (!(await hostileEvent.locator('td.data').textContent()).includes(HOSTILE)) fail('hostile data');
  // An admin insert is shown apart from a user's: a user may be called "admin".
  if ((await hostileEvent.locator('td.admin-insert em').textContent()) !== 'admin insert') fail('admin insert not shown apart');
  await noMarkupRan();

  step('history of acme: own times, authors, name filter, paging, chart');
  await admin('/create_user', { username: 'dave', password: 'pw', tenant_name: 'acme' });
  const { jwt } = await call('POST', '/login', { username: 'dave', password: 'pw' });
  const insert = (event, data) => call('POST', '/insert', { event, data }, { authorization: `Bearer ${jwt}` });
  const { cursor: first_temperature } = await insert('temperature', { celsius: 21.5 });
  for (let i = 0; i < 30; i += 1) await admin('/admin_insert', { tenant_name: 'acme', event: 'tick', data: { i } });
  await insert(LONG_EVENT, { note: 'a long name must not squeeze this data column' });
  await page.getByRole('button', { name: 'Reload tenants' }).click();
  await page.locator('#tenant').selectOption('acme');
  await page.getByText(/^Tenant “acme”: 32 events shown, newest first \(that is all\)$/).waitFor();
  const past = (await history('acme')).events;
  const temperature = past.find((e) => e.cursor === first_temperature);
  const tempRow = page.locator(`#history tr[data-cursor="${first_temperature}"]`);
  await page.getByLabel('Event names').fill('temperature');
  await page.getByRole('button', { name: 'Show newest' }).click();
  await tempRow.waitFor();
  // The unfiltered table holds that row too: wait for the filtered page to replace it.
  await page
    .waitForFunction(() => document.querySelectorAll('#history tbody tr').length === 1, null, { timeout: 15000 })
    .catch(() => fail('the name filter let other names through'));
  if ((await tempRow.locator('time').getAttribute('datetime')) !== temperature.at) fail('history row: not the event\'s own time');
  if ((await tempRow.locator('td').nth(3).textContent()) !== 'dave') fail('history row: author');
  if (await tempRow.locator('td.admin-insert').count() !== 0) fail('a user\'s insert shown as the admin\'s');
  await page.getByLabel('Event names').fill('');
  await page.getByLabel('Per page').nth(1).selectOption('25');
  await page.getByRole('button', { name: 'Show newest' }).click();
  await page.getByText(/^Tenant “acme”: 25 events shown/).waitFor();
  await page.getByRole('button', { name: 'Older' }).click();
  await page.getByText(/^Tenant “acme”: 32 events shown, newest first \(that is all\)$/).waitFor();
  if (!(await page.getByRole('button', { name: 'Older' }).isDisabled())) fail('Older enabled on the last page');
  await page.waitForFunction(() => [...document.querySelectorAll('#chart rect.bar')]
    .reduce((n, r) => n + Number(r.dataset.count), 0) >= 32);
  await noHorizontalOverflow('events');
  await page.locator('#chart-figure').scrollIntoViewIfNeeded();
  await shot('events');

  step('live tail with the events\' own times');
  await page.getByRole('button', { name: 'Live', exact: true }).click();
  await page.getByRole('button', { name: 'Watch', exact: true }).click();
  await page.getByText('Watching tenant “acme”.').waitFor();
  // The snapshot's temperature event is older than the page: it shows its own time.
  const snap = page.locator(`#events tr[data-cursor="${first_temperature}"]`);
  await snap.waitFor();
  if ((await snap.locator('time').getAttribute('datetime')) !== temperature.at) fail('snapshot row: not the event\'s own time');
  const { cursor } = await insert('temperature', { celsius: 22 });
  const live = page.locator(`#events tr[data-cursor="${cursor}"]`);
  await live.waitFor();
  const text = await live.textContent();
  if (!text.includes('temperature') || !text.includes('22') || !text.includes('dave')) fail(`live row shows ${text}`);
  const at = (await history('acme', `&after=${cursor - 1}`)).events[0].at;
  if ((await live.locator('time').getAttribute('datetime')) !== at) fail('live row: not the event\'s own time');
  const longRow = page.locator('#events tr').filter({ hasText: 'a long name must not' });
  const widths = await longRow.evaluate((tr) => ({
    data: tr.querySelector('td.data').getBoundingClientRect().width,
    name: tr.children[1].getBoundingClientRect().width,
  }));
  if (widths.data < 400 || widths.name > 250) fail(`long event name squeezes the data: ${JSON.stringify(widths)}`);
  // The chart counts live events too.
  await page.waitForFunction(() => [...document.querySelectorAll('#chart rect.bar')]
    .reduce((n, r) => n + Number(r.dataset.count), 0) >= 33);
  await noHorizontalOverflow('live');
  await page.waitForTimeout(2100); // the new rows' highlight fades in 2 s
  await shot('live');
  await page.getByRole('button', { name: 'Stop' }).click();
  await page.getByText('Not watching.').waitFor();

  step('delete a user (after a confirmation)');
  await page.getByRole('button', { name: 'Users', exact: true }).click();
  await page.getByRole('button', { name: 'Reload', exact: true }).click();
  await page.getByRole('button', { name: 'Delete dave' }).click();
  await page.getByText('dave deleted').waitFor();
  await page.locator('#users tr[data-username="dave"]').waitFor({ state: 'detached' });
  if (!dialogs.some((m) => m.startsWith('Delete dave?'))) fail(`no confirmation before deleting: ${dialogs}`);
  const gone = await fetch(`${base}/get_user`, { method: 'POST', body: JSON.stringify({ admin_token: adminToken, username: 'dave' }) });
  if (gone.status !== 404) fail(`/get_user after delete answered ${gone.status}`);

  step('a phone: no horizontal scrolling in any view');
  await page.setViewportSize({ width: 390, height: 844 });
  for (const view of ['Events', 'Live', 'Users']) {
    await page.getByRole('button', { name: view, exact: true }).click();
    await noHorizontalOverflow(`${view} on a phone`);
  }
  await page.locator('#users tr[data-username="carol"]').waitFor();
  await page.locator('#users-title').evaluate((h) => h.scrollIntoView());
  await shot('phone');
  await page.setViewportSize({ width: 1200, height: 800 });

  step('sign out forgets the token');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Admin token').waitFor();
  if (await page.evaluate(() => sessionStorage.length + localStorage.length)) fail('storage not empty after sign-out');
  await page.reload();
  await page.getByLabel('Admin token').waitFor();
  if (!(await page.locator('#signed-in').isHidden())) fail('signed in after sign-out and reload');
  await noMarkupRan();
  if (problems.length) fail(problems.join('\n'));
  console.log(JSON.stringify({ ok: true, cursor }));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  await page.screenshot({ path: join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
  const status = await page.locator('#status').textContent().catch(() => '?');
  console.error(`console e2e failed: ${e.message}\nthe console said: ${status}\n${problems.join('\n')}`);
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
