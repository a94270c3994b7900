// Drives cardgate's reviewer page in headless Chromium: logs in with a reviewer
// key, opens the approval request REQUEST_ID, approves it, and waits until the
// page shows it succeeded. Run by tests/ui_browser.rs, which set the request up
// and checks afterwards (over the API) that the action took effect.
//
// Env: CARDGATE_URL, REVIEWER_KEY, REQUEST_ID, SCREENSHOT, USER_DATA_DIR.
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) { console.error(`missing ${k}`); process.exit(2); }
  return v;
};
const base = env('CARDGATE_URL');
const key = env('REVIEWER_KEY');
const id = env('REQUEST_ID');
const shot = env('SCREENSHOT');
const userDataDir = env('USER_DATA_DIR');

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1200, height: 900 },
});
let page;
try {
  page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(base + '/ui/');
  await page.fill('#key', key);
  await page.click('#login-form button[type=submit]');
  const row = page.locator(`tr.req[data-id="${id}"]`);
  await row.waitFor({ timeout: 15000 });
  await row.click();
  await page.locator('#d-status', { hasText: 'requires_review' }).waitFor({ timeout: 15000 });
  const reason = await page.textContent('#d-reason');
  console.log(`request ${id} reason: ${reason}`);
  await page.fill('#review-reason', 'approved in the browser test');
  await page.click('#approve');
  await page.locator('#d-status', { hasText: 'succeeded' }).waitFor({ timeout: 15000 });
  await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) { throw new Error('page errors: ' + errors.join('; ')); }
  console.log(`approved ${id}; screenshot ${shot}`);
} catch (e) {
  if (page) { await page.screenshot({ path: shot, fullPage: true }).catch(() => {}); }
  console.error(String(e && e.stack || e));
  process.exitCode = 1;
} finally {
  await context.close();
}
