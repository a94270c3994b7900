// Drives cardgate's reviewer page in headless Chromium, with the keyboard where a
// reviewer would: logs in with a reviewer key, opens approval request REQUEST_ID,
// reads the diff and the backtest beside Approve, approves it and waits for the
// outcome to replace the buttons; then logs in as an analyst, searches the
// decisions explorer by rule and opens one decision's explanation. Prints what it
// saw for tests/ui_browser.rs to check, and saves review.png, approved.png and
// explorer.png into SCREENSHOTS.
//
// Env: CARDGATE_URL, REVIEWER_KEY, ANALYST_KEY, REQUEST_ID, SCREENSHOTS, USER_DATA_DIR.
import { chromium } from 'playwright-core';
import path from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) { console.error(`missing ${k}`); process.exit(2); }
  return v;
};
const base = env('CARDGATE_URL');
const reviewerKey = env('REVIEWER_KEY');
const analystKey = env('ANALYST_KEY');
const id = env('REQUEST_ID');
const shots = env('SCREENSHOTS');
const userDataDir = env('USER_DATA_DIR');
const shot = (name) => path.join(shots, name);
const T = { timeout: 15000 };

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
let page;
let last = 'review.png';
try {
  page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  // Log in with the keyboard: type the key, press Enter.
  await page.goto(base + '/ui/');
  await page.focus('#key');
  await page.keyboard.type(reviewerKey);
  await page.keyboard.press('Enter');
  const open = page.locator(`tr.req[data-id="${id}"] button`);
  await open.waitFor(T);
  // Open the request from the keyboard.
  await open.focus();
  await page.keyboard.press('Enter');
  await page.locator('#d-status', { hasText: 'requires_review' }).waitFor(T);
  console.log(`reason: ${await page.textContent('#d-reason')}`);
  console.log(`approval rule: ${await page.textContent('#d-rule')}`);

  await page.locator('#diff').waitFor(T);
  const added = await page.locator('#diff tr.insert td.text').allTextContents();
  const removed = await page.locator('#diff tr.delete td.text').allTextContents();
  console.log(`diff: +${added.length} −${removed.length}`);
  for (const l of added) console.log(`diff + ${l}`);
  for (const l of removed) console.log(`diff - ${l}`);
  await page.locator('#bt-summary').waitFor(T);
  console.log(`backtest: ${(await page.textContent('#bt-summary')).trim()}`);
  const rules = await page.locator('#d-backtest table').first().locator('tbody tr td:first-child').allTextContents();
  console.log(`by rule: ${rules.join(', ')}`);
  // The backtest sits beside the Approve button, not below the fold of the diff.
  const bt = await page.locator('#d-backtest').boundingBox();
  const approve = await page.locator('#approve').boundingBox();
  console.log(`backtest beside approve: ${Math.abs(bt.y - approve.y) < 200 && bt.x < approve.x}`);
  await page.locator('#d-backtest').scrollIntoViewIfNeeded();
  await page.screenshot({ path: shot('review.png'), fullPage: true });

  last = 'approved.png';
  await page.fill('#review-reason', 'approved in the browser test');
  await page.focus('#approve');
  await page.keyboard.press('Enter');
  await page.locator('#d-status', { hasText: 'succeeded' }).waitFor(T);
  await page.locator('#d-closed').waitFor(T);
  console.log(`buttons hidden: ${!(await page.locator('#approve').isVisible()) && !(await page.locator('#deny').isVisible())}`);
  console.log(`outcome: ${(await page.textContent('#d-closed')).replace(/\s+/g, ' ').trim()}`);
  await page.screenshot({ path: shot('approved.png'), fullPage: true });

  // The analyst's view.
  last = 'explorer.png';
  await page.click('#logout');
  await page.fill('#key', analystKey);
  await page.keyboard.press('Enter');
  await page.locator('#tab-decisions').waitFor(T);
  await page.click('#tab-decisions');
  await page.locator('tr.decision').first().waitFor(T);
  console.log(`explorer all rows: ${await page.locator('tr.decision').count()}`);
  await page.fill('#s-rule', 'cap-fuel');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('tr.decision').length === 1, null, T);
  console.log(`explorer rows: ${await page.locator('tr.decision').count()}`);
  await page.locator('tr.decision button').first().focus();
  await page.keyboard.press('Enter');
  await page.locator('#explain:not(.hidden)').waitFor(T);
  const text = (await page.textContent('#x-body')).replace(/\s+/g, ' ');
  const fact = async (name) => (await page.locator(`#x-body dt:text-is("${name}") + dd`).textContent()).trim();
  console.log(`decided by rule: ${await fact('Decided by rule')}`);
  console.log(`shadow matches: ${await fact('Shadow matches')}`);
  console.log(`rule set: ${await fact('Rule set')}`);
  console.log(`explanation: ${text.slice(0, 400)}`);
  await page.screenshot({ path: shot('explorer.png'), fullPage: true });
  if (errors.length) { throw new Error('page errors: ' + errors.join('; ')); }
  console.log(`approved ${id}; screenshots in ${shots}`);
} catch (e) {
  if (page) { await page.screenshot({ path: shot(last), fullPage: true }).catch(() => {}); }
  console.error(String(e && e.stack || e));
  process.exitCode = 1;
} finally {
  await context.close();
}
