// The admin console end to end in headless Chromium (playwright-core): sign in with the
// admin token, create a user, find it listed, revoke it, open its QR enrolment, and watch
// an event inserted meanwhile appear live with its cursor. Screenshots go to <artifacts>.
// Any page error or Content-Security-Policy violation fails the run.
// Usage: node console_e2e.mjs <base-url> <admin-token> <artifacts-dir>
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, adminToken, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'broker-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.BROKER_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
const page = context.pages()[0] ?? await context.newPage();
page.setDefaultTimeout(15000);
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
// Revoke and delete ask for confirmation; the dialogs seen are checked below.
const dialogs = [];
page.on('dialog', (d) => { dialogs.push(d.message()); d.accept(); });
page.on('console', (m) => {
  if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
});
const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
const step = (what) => console.error(`console e2e: ${what}`);

try {
  const response = await page.goto(`${base}/console`);
  if (response.status() !== 200) throw new Error(`/console answered ${response.status()}`);

  step('a wrong token is refused');
  await page.getByLabel('Admin token').fill('not the token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Wrong admin token.').waitFor();
  // Chromium reports the refused request (401) as a console error: expected here.
  problems.length = 0;

  step('sign in');
  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#health [data-stat="Log size"] dd').waitFor();
  const logSize = await page.locator('#health [data-stat="Log size"] dd').textContent();
  if (!/\d+(\.\d)? (B|KiB|MiB)/.test(logSize)) throw new Error(`log size shows ${logSize}`);
  await shot('1-signed-in');

  step('create a user');
  await page.getByRole('button', { name: 'Create user' }).click();
  await page.getByLabel('Username', { exact: true }).fill('carol');
  await page.getByLabel(/^Password/).fill('a long passphrase');
  await page.getByLabel('Tenant', { exact: true }).fill('acme');
  await page.getByLabel(/^Email/).fill('carol@example.com');
  await page.getByLabel(/^Scopes/).fill('news:get, news:put');
  await page.getByLabel(/^Data/).fill('{"team": "blue"}');
  await page.getByRole('button', { name: 'Save' }).click();
  const row = page.locator('#users tr[data-username="carol"]');
  await row.waitFor();
  await page.getByText('carol created in tenant acme.').waitFor();
  if (!(await row.textContent()).includes('news:get, news:put')) throw new Error('scopes not listed');
  await shot('2-user-created');

  step('search');
  await page.getByLabel('Search').fill('nobody-matches');
  await row.waitFor({ state: 'detached' });
  await page.getByLabel('Search').fill('acm');
  await row.waitFor();

  step('edit');
  await page.getByRole('button', { name: 'Edit carol' }).click();
  await page.getByLabel(/^Email/).fill('carol@example.org');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText('carol updated.').waitFor();
  await row.getByText('carol@example.org').waitFor();

  step('revoke');
  await page.getByRole('button', { name: 'Revoke carol' }).click();
  await row.locator('td', { hasText: /^revoked$/ }).waitFor();
  await page.getByRole('button', { name: 'Unrevoke carol' }).waitFor();
  if (!dialogs.some((m) => m.startsWith('Revoke carol?'))) throw new Error(`no confirmation before revoking: ${dialogs}`);
  await shot('3-user-revoked');

  step('QR enrolment');
  await page.getByRole('button', { name: 'Two-factor QR code of carol' }).click();
  await page.getByRole('button', { name: 'Show QR code' }).click();
  const qr = page.locator('#qr-image');
  await qr.waitFor({ state: 'visible' });
  // Polled: the data: URL decodes asynchronously, and decode() rejects spuriously here.
  await page.waitForFunction(() => {
    const img = document.getElementById('qr-image');
    return img.complete && img.naturalWidth >= 100;
  });
  await shot('4-qr');
  await page.getByRole('button', { name: 'Close' }).click();

  step('watch the tenant live');
  await page.getByLabel('Tenant to watch').fill('acme');
  await page.getByRole('button', { name: 'Watch', exact: true }).click();
  await page.getByText('Watching tenant “acme”.').waitFor();
  // An app user of the same tenant inserts an event; the console must show it with its cursor.
  const post = (path, body, auth) => fetch(`${base}${path}`, {
    method: 'POST',
    headers: auth ? { authorization: auth } : {},
    body: JSON.stringify(body),
  }).then(async (r) => { if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`); return r.json(); });
  await post('/create_user', { admin_token: adminToken, username: 'dave', password: 'pw', tenant_name: 'acme' });
  const { jwt } = await post('/login', { username: 'dave', password: 'pw' });
  const { cursor } = await post('/insert', { event: 'temperature', data: { celsius: 21.5 } }, `Bearer ${jwt}`);
  const live = page.locator(`#events tr[data-cursor="${cursor}"]`);
  await live.waitFor();
  const text = await live.textContent();
  if (!text.includes('temperature') || !text.includes('21.5')) throw new Error(`live row shows ${text}`);
  await shot('5-live-event');

  step('delete a user (after a confirmation)');
  await page.getByRole('button', { name: 'Reload', exact: true }).click();
  await page.getByRole('button', { name: 'Delete dave' }).click();
  await page.getByText('dave deleted').waitFor();
  await page.locator('#users tr[data-username="dave"]').waitFor({ state: 'detached' });
  if (!dialogs.some((m) => m.startsWith('Delete dave?'))) throw new Error(`no confirmation before deleting: ${dialogs}`);
  const gone = await fetch(`${base}/get_user`, { method: 'POST', body: JSON.stringify({ admin_token: adminToken, username: 'dave' }) });
  if (gone.status !== 404) throw new Error(`/get_user after delete answered ${gone.status}`);

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Admin token').waitFor();
  if (problems.length) throw new Error(problems.join('\n'));
  console.log(JSON.stringify({ ok: true, cursor }));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  await shot('failure').catch(() => {});
  console.error(`console e2e failed: ${e.message}\n${problems.join('\n')}`);
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
