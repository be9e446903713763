// What Swagger UI (/docs) shows a newcomer, in headless Chromium (playwright-core): every
// operation is opened and the example request body it renders is collected, with the tag it
// sits under. Prints one JSON object {"ok", "operations": {"<tag> <METHOD> <path>": body|null}}.
// Usage: node swagger_examples.mjs <base-url>
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'broker-swagger-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.BROKER_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const problems = [];
const operations = {};
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await page.goto(`${base}/docs`, { waitUntil: 'networkidle' });
  await page.waitForSelector('.opblock');
  const blocks = await page.$$('.opblock');
  for (const block of blocks) {
    const tag = await block.evaluate((b) => b.closest('.opblock-tag-section')
      ?.querySelector('.opblock-tag')?.getAttribute('data-tag') ?? '');
    const method = (await block.$eval('.opblock-summary-method', (e) => e.textContent)).trim();
    const path = (await block.$eval('.opblock-summary-path', (e) => e.getAttribute('data-path')
      ?? e.textContent)).trim();
    await block.$eval('.opblock-summary', (e) => e.scrollIntoView());
    await (await block.$('.opblock-summary-control, .opblock-summary')).click();
    // The body's example, as the "Example Value" pane renders it (none without a body).
    let body = null;
    const example = await block.waitForSelector('.body-param__example, .opblock-body',
      { timeout: 5000 }).catch(() => null);
    if (example) {
      const pane = await block.$('.body-param__example');
      if (pane) body = (await pane.textContent()).trim();
    }
    operations[`${tag} ${method} ${path}`] = body;
  }
} catch (e) {
  problems.push(String(e?.stack ?? e));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify({ ok: problems.length === 0, problems, operations }));
