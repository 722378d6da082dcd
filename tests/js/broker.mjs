// keyward as a broker, in a real browser (Debian's Chromium driven by playwright-core):
// the login page with its provider buttons, the email-sent page, a round trip to
// oidc-provider (the upstream started by the test), the consent page, the account page
// (link GitHub and a second provider, unlink, end another browser's session, revoke an
// application), and a popup that returns the authorization response with
// `response_mode=web_message`. Each of keyward's pages on the way is audited for
// accessibility with axe-core (none may have a violation).
// Usage:
//   node broker.mjs <issuer> <authorization_url> <popup_authorization_url> <redirect_uri> <artifacts_dir>
// Prints one JSON line {"code", "state", "web_message": {…}, "audited": [pages]}; keeps a screenshot of
// every page in <artifacts_dir>.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { audit, audits as newAudits } from './axe.mjs';

const [issuer, authorizationUrl, popupUrl, redirectUri, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
});
const shot = (page, name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
const appOrigin = new URL(redirectUri).origin;
const audits = newAudits();

// At oidc-provider's development pages: `steps` are the pages expected in turn,
// 'sign-in' (signs in as `login`) or 'authorize' (approves), each checked by its
// heading and left by its own button; after them the browser is back at keyward.
async function atProvider(page, login, name, steps) {
  for (const [i, step] of steps.entries()) {
    if (step === 'sign-in') {
      await page.getByRole('heading', { name: 'Sign-in', exact: true }).waitFor();
      await page.fill('input[name=login]', login);
      await page.fill('input[name=password]', 'any password works here');
      await shot(page, `${name}-${i + 1}-sign-in`);
      await page.getByRole('button', { name: 'Sign-in', exact: true }).click();
    } else {
      assert.equal(step, 'authorize');
      await page.getByRole('heading', { name: 'Authorize', exact: true }).waitFor();
      await shot(page, `${name}-${i + 1}-authorize`);
      await page.getByRole('button', { name: 'Continue', exact: true }).click();
    }
  }
  await page.waitForURL(`${issuer}/**`);
}

try {
  const context = await browser.newContext();
  let callback;
  await context.route(`${redirectUri}**`, (route) => {
    callback = new URL(route.request().url());
    return route.fulfill({ status: 200, contentType: 'text/html', body: '<p>back at the application</p>' });
  });
  const page = await context.newPage();

  // The login page: a button per provider, the email form, the password form, each
  // reachable by its accessible name.
  await page.goto(authorizationUrl);
  assert.equal(await page.title(), 'Sign in · keyward');
  for (const name of ['Continue with npm (EdDSA)', 'Continue with npm (RS256)', 'Continue with GitHub', 'Email me a sign-in link', 'Sign in']) {
    await page.getByRole('button', { name, exact: true }).waitFor();
  }
  for (const label of ['Email address', 'Username', 'Password']) {
    await page.getByLabel(label, { exact: true }).waitFor();
  }
  await shot(page, '11-login-providers');
  await audit(page, 'login-providers', audits);

  // Ask for an emailed link (the test's server writes it to its log), see the page that
  // answers every address alike, and come back to choose another way.
  await page.getByLabel('Email address', { exact: true }).fill('ada@npm.example');
  await page.getByRole('button', { name: 'Email me a sign-in link' }).click();
  await page.getByRole('heading', { name: 'Check your email' }).waitFor();
  assert.match(await page.locator('main').innerText(), /ada@npm\.example/);
  await shot(page, '11b-email-sent');
  await audit(page, 'email-sent', audits);
  await page.getByRole('link', { name: 'Use another way to sign in' }).click();
  await page.getByRole('button', { name: 'Continue with npm (EdDSA)' }).waitFor();

  // A round trip to oidc-provider, then keyward's consent page for a third-party app.
  await page.getByRole('button', { name: 'Continue with npm (EdDSA)' }).click();
  await atProvider(page, 'ada', '12-upstream', ['sign-in', 'authorize']);
  await page.getByRole('heading', { name: 'Authorize Third Party App' }).waitFor();
  assert.match(await page.locator('body').innerText(), /Signed in as ada/);
  await shot(page, '13-consent-after-provider');
  await audit(page, 'consent-after-provider', audits);
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.waitForURL(`${redirectUri}**`);
  assert.ok(callback, 'the browser came back to the application');

  // The account page: the identity, then GitHub linked (the fake GitHub approves at
  // once), a second provider linked, GitHub unlinked.
  await page.goto(`${issuer}/account`);
  await page.getByRole('heading', { name: 'Your account' }).waitFor();
  const methods = page.getByRole('list', { name: 'Ways to sign in' });
  assert.match(await methods.innerText(), /npm \(EdDSA\)/);
  await shot(page, '14-account');
  await audit(page, 'account', audits);
  await page.getByRole('button', { name: 'Link GitHub' }).click();
  await page.waitForURL(/notice=linked/);
  assert.match(await page.getByRole('status').innerText(), /Linked\./);
  assert.match(await methods.innerText(), /octocat/);
  await page.getByRole('button', { name: 'Link npm (RS256)' }).click();
  await atProvider(page, 'ada', '15-upstream-link', ['authorize']);
  await methods.getByText('npm (RS256)').waitFor();
  await shot(page, '16-account-linked');
  await audit(page, 'account-linked', audits);
  await page.getByRole('button', { name: 'Unlink GitHub octocat' }).click();
  await page.waitForURL(/notice=unlinked/);
  assert.match(await page.getByRole('status').innerText(), /Unlinked\./);
  assert.doesNotMatch(await methods.innerText(), /octocat/);

  // Another browser signs in to the same account; the first one signs it out.
  const other = await browser.newContext();
  const otherPage = await other.newPage();
  await otherPage.goto(`${issuer}/account`);
  assert.equal(await otherPage.title(), 'Sign in · keyward');
  await otherPage.getByRole('button', { name: 'Continue with npm (EdDSA)' }).click();
  await atProvider(otherPage, 'ada', '17-other-browser', ['sign-in', 'authorize']);
  await otherPage.getByRole('heading', { name: 'Your account' }).waitFor();
  await page.reload();
  const sessions = page.getByRole('list', { name: 'Where you are signed in' }).getByRole('listitem');
  assert.equal(await sessions.count(), 2);
  assert.match(await page.getByRole('list', { name: 'Where you are signed in' }).innerText(), /this browser/);
  await shot(page, '18-sessions');
  await audit(page, 'account-sessions', audits);
  await page.getByRole('button', { name: /^Sign out Chromium/ }).click();
  await page.waitForURL(/notice=session-ended/);
  assert.match(await page.getByRole('status').innerText(), /That browser is signed out\./);
  await otherPage.reload();
  assert.equal(await otherPage.title(), 'Sign in · keyward');
  await other.close();

  // Revoke the third-party app.
  await page.getByRole('button', { name: 'Revoke access of Third Party App' }).click();
  await page.waitForURL(/notice=app-revoked/);
  assert.match(await page.getByRole('status').innerText(), /Access revoked\./);
  await shot(page, '19-app-revoked');
  await audit(page, 'account-app-revoked', audits);

  // A single-page app on another origin opens keyward in a popup; keyward asks for
  // consent again (it was revoked) and posts the response to the app's exact origin.
  await context.route(`${appOrigin}/app`, (route) => route.fulfill({
    status: 200,
    contentType: 'text/html',
    body: `<!doctype html><title>App</title><button id="go">Sign in</button>
<script>
  window.received = null;
  window.addEventListener('message', (e) => {
    if (e.origin === ${JSON.stringify(new URL(issuer).origin)} && e.data && e.data.type === 'authorization_response') {
      window.received = e.data;
    }
  });
  document.getElementById('go').onclick = () => window.open(${JSON.stringify(popupUrl)}, 'keyward', 'width=480,height=680');
</script>`,
  }));
  await page.goto(`${appOrigin}/app`);
  const [popup] = await Promise.all([context.waitForEvent('page'), page.click('#go')]);
  await popup.getByRole('heading', { name: 'Authorize Third Party App' }).waitFor();
  await shot(popup, '20-popup-consent');
  await Promise.all([popup.waitForEvent('close'), popup.getByRole('button', { name: 'Allow' }).click()]);
  await page.waitForFunction(() => window.received !== null);
  const received = await page.evaluate(() => window.received);
  assert.equal(received.type, 'authorization_response');

  if (audits.violations.length) {
    throw new Error(`accessibility violations:\n${audits.violations.join('\n')}`);
  }
  console.log(JSON.stringify({
    code: callback.searchParams.get('code'),
    state: callback.searchParams.get('state'),
    web_message: received.response,
    audited: audits.pages,
  }));
} finally {
  await browser.close();
}
