// Plays the person at `keyward login` through the browser (RFC 8252) in Debian's
// Chromium: opens the authorization URL the terminal opened, signs in as <username>,
// allows on the consent page, and follows keyward's redirect to the terminal's
// listener on 127.0.0.1, whose page must say the login is done. Usage:
//   node terminal-login.mjs <authorize_url> <username> <password> <artifacts_dir>
// Exits 0 once the listener's page shows; keeps a screenshot of every page
// (terminal-1-sign-in, terminal-2-consent, terminal-3-done).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const [url, username, password, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const redirectUri = new URL(url).searchParams.get('redirect_uri');
assert.match(redirectUri, /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const shot = (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
  const heading = (name) => page.getByRole('heading', { name, exact: typeof name === 'string' }).waitFor();
  const press = (name) => Promise.all([
    page.waitForNavigation(),
    page.getByRole('button', { name, exact: true }).click(),
  ]);

  await page.goto(url);
  await heading('Sign in');
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await shot('terminal-1-sign-in');
  await press('Sign in');

  // The command-line client never skips consent: any program here can start a login.
  await heading(/^Authorize /);
  await shot('terminal-2-consent');
  await press('Allow');

  // keyward's redirect reaches the terminal's listener, which has redeemed the code.
  await page.waitForURL(`${redirectUri}?**`);
  await heading('Logged in');
  assert.match(await page.locator('main').innerText(), /You are logged in to http:\/\/127\.0\.0\.1:\d+\./);
  assert.equal(await page.title(), 'Logged in · keyward');
  await shot('terminal-3-done');
  console.log(JSON.stringify({ loggedIn: true }));
} finally {
  await browser.close();
}
