// Plays the person at a foreign provider's device pages (oidc-provider's development
// interactions) in Debian's Chromium: opens the verification URL, confirms the code it
// carries, signs in as <username>, approves. Each page is checked to be the one
// expected at its step, and its own button is clicked by name. Usage:
//   node device-approve.mjs <verification_uri_complete> <username> <artifacts_dir>
// Exits 0 once the provider's success page shows; keeps a screenshot of every page
// (foreign-1-confirm, foreign-2-sign-in, foreign-3-authorize, foreign-4-success).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const [url, username, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const userCode = new URL(url).searchParams.get('user_code');
assert.ok(userCode, `no user_code in ${url}`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const shot = (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
  // Clicks the button named `name` and waits for the page it leads to.
  const press = (name) => Promise.all([
    page.waitForNavigation(),
    page.getByRole('button', { name, exact: true }).click(),
  ]);

  // The code to confirm is the one the device showed.
  await page.goto(url);
  await page.getByRole('heading', { name: 'Confirm Device', exact: true }).waitFor();
  assert.equal(await page.title(), 'Device Login Confirmation');
  assert.equal(await page.locator('code').innerText(), userCode);
  await shot('foreign-1-confirm');
  await press('Continue');

  await page.getByRole('heading', { name: 'Sign-in', exact: true }).waitFor();
  await page.fill('input[name=login]', username);
  await page.fill('input[name=password]', 'any password works here');
  await shot('foreign-2-sign-in');
  await press('Sign-in');

  await page.getByRole('heading', { name: 'Authorize', exact: true }).waitFor();
  assert.match(await page.locator('body').innerText(), /offline access/);
  await shot('foreign-3-authorize');
  await press('Continue');

  await page.getByRole('heading', { name: 'Sign-in Success', exact: true }).waitFor();
  assert.match(await page.locator('body').innerText(), /was successful/);
  await shot('foreign-4-success');
  console.log(JSON.stringify({ approved: true }));
} finally {
  await browser.close();
}
