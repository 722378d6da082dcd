// The login, consent and sign-out pages in a real browser: Debian's Chromium driven by
// playwright-core. Usage:
//   node browser.mjs <issuer> <authorization_url> <redirect_uri> <username> <password> <artifacts_dir> <user_code>
// Prints one JSON line {"code": …, "state": …} with the authorization response, and
// keeps a screenshot of every page in <artifacts_dir>.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const [issuer, authorizationUrl, redirectUri, username, password, artifacts, userCode] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const shot = (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
  // The client's redirect URI is not served here: answer it in the browser.
  let callback;
  await page.route(`${redirectUri}**`, (route) => {
    callback = new URL(route.request().url());
    return route.fulfill({ status: 200, contentType: 'text/html', body: '<p>back at the application</p>' });
  });

  // Login page: labelled fields, focus on the username.
  await page.goto(authorizationUrl);
  assert.equal(await page.title(), 'Sign in · keyward');
  const user = page.getByLabel('Username');
  const pass = page.getByLabel('Password');
  assert.ok(await user.evaluate((el) => el === document.activeElement), 'username has focus');
  await shot('01-login');

  // A wrong password: an alert, the username kept, the password cleared.
  await user.fill(username);
  await pass.fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /Invalid username or password/);
  assert.equal(await page.getByLabel('Username').inputValue(), username);
  assert.equal(await page.getByLabel('Password').inputValue(), '');
  assert.ok(await page.getByLabel('Password').evaluate((el) => el === document.activeElement), 'password has focus');
  await shot('02-login-error');

  // The right password, with the keyboard: leads to the consent page.
  await page.getByLabel('Password').fill(password);
  await page.getByLabel('Password').press('Enter');
  await page.getByRole('heading', { name: /^Authorize / }).waitFor();
  const scopes = await page.locator('ul.scopes li').allInnerTexts();
  assert.ok(scopes.some((s) => s.includes('See your email address')), scopes.join('|'));
  await shot('03-consent');

  await page.getByRole('button', { name: 'Allow' }).click();
  await page.waitForURL(`${redirectUri}**`);
  assert.ok(callback, 'the browser came back to the application');
  await shot('04-callback');

  // Sign-out asks for confirmation, then confirms.
  await page.goto(`${issuer}/logout`);
  await page.getByRole('heading', { name: 'Sign out?' }).waitFor();
  await shot('05-logout');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'You are signed out' }).waitFor();
  await shot('06-signed-out');

  // An error page for an unknown application.
  await page.goto(`${issuer}/authorize?client_id=nobody&response_type=code`);
  await page.getByRole('heading', { name: 'Unknown application' }).waitFor();
  await shot('07-error');

  // The device page: a user code typed in lower case without its dash, then sign-in
  // and a consent page that warns about devices.
  await page.goto(`${issuer}/device`);
  await page.getByRole('heading', { name: 'Connect a device' }).waitFor();
  await page.getByLabel('Code').fill(userCode.replace('-', '').toLowerCase());
  await shot('08-device');
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('note').waitFor();
  assert.match(await page.getByRole('note').innerText(), /A device is asking to sign in as you/);
  await shot('09-device-consent');
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.getByRole('heading', { name: 'Device connected' }).waitFor();
  await shot('10-device-connected');

  console.log(JSON.stringify({ code: callback.searchParams.get('code'), state: callback.searchParams.get('state') }));
} finally {
  await browser.close();
}
