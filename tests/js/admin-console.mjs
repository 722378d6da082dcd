// Walks the admin console (/admin) in Debian's Chromium, with JavaScript off (the
// console needs none): the administrator <admin> signs in, adds a confidential client
// for client credentials, rotates its secret with a one-hour grace period, finds
// <user>, ends one of their sessions and disables the account, makes a set-password
// link for <other>, and reads every action in the audit log. Then <other> chooses a new
// password through the link and, signing in with it, is refused with 403 (not an
// administrator); each console page is audited with axe-core (light and dark). Usage:
//   node admin-console.mjs <issuer> <admin> <user> <other> <password> <artifacts_dir>
// Prints {"firstSecret", "secondSecret", "violations"} and keeps a screenshot of
// every page (console-1-sign-in … console-11-forbidden).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { audit, audits as newAudits } from './axe.mjs';

const [issuer, admin, user, other, password, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
});

/// The helpers of one page.
function on(page) {
  return {
    shot: (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true }),
    heading: (name) => page.getByRole('heading', { level: 1, name, exact: typeof name === 'string' }).waitFor(),
    // Clicks the button named `name` and waits for the page it leads to.
    press: (name) => Promise.all([
      page.waitForNavigation(),
      page.getByRole('button', { name, exact: true }).click(),
    ]),
    // Opens the console, which asks for a sign-in, and fills it in as `username`.
    signIn: async (username, secret = password) => {
      await page.goto(`${issuer}/admin`);
      await page.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
      assert.match(await page.locator('main').innerText(), /to the admin console/);
      await page.getByLabel('Username', { exact: true }).fill(username);
      await page.getByLabel('Password', { exact: true }).fill(secret);
      return page;
    },
  };
}

try {
  // The walk, without JavaScript.
  const nojs = await browser.newContext({ javaScriptEnabled: false });
  const page = await nojs.newPage();
  const { shot, heading, press, signIn } = on(page);
  await signIn(admin);
  await shot('console-1-sign-in');
  await press('Sign in');
  await heading('Admin console');
  assert.equal(await page.title(), 'Admin console · keyward');
  const connectors = page.getByRole('table').first();
  assert.match(await connectors.innerText(), /Password\s+password\s+\d+/);
  await shot('console-2-overview');

  // A client for client credentials; its secret is shown once.
  await page.getByRole('link', { name: 'Clients', exact: true }).click();
  await heading('Clients');
  await page.getByLabel('Client id').fill('console-app');
  await page.getByLabel('Name shown on the consent page').fill('Console App');
  await page.getByLabel(/^Grant types/).fill('client_credentials');
  await page.getByLabel(/^Scopes/).fill('api:read');
  await shot('console-3-add-client');
  await press('Add client');
  await heading('Client console-app added');
  const firstSecret = await page.locator('#client-secret').innerText();
  assert.match(firstSecret, /^\S{32,}$/);
  await shot('console-4-secret');

  await page.getByRole('link', { name: 'Go to the client' }).click();
  await heading('Console App confidential');
  await page.getByLabel(/^Hours the old secret keeps working/).fill('1');
  await press('Rotate secret');
  await heading('New secret of console-app');
  const secondSecret = await page.locator('#client-secret').innerText();
  assert.notEqual(secondSecret, firstSecret);
  assert.match(await page.locator('main').innerText(), /The old secret is accepted until \d{4}-/);
  await shot('console-5-rotated');

  // The user: one session ended, then the account disabled.
  await page.getByRole('link', { name: 'Users', exact: true }).click();
  await heading('Users');
  await page.getByLabel('Username or email contains').fill(user);
  await press('Search');
  await Promise.all([page.waitForNavigation(), page.getByRole('link', { name: user, exact: true }).click()]);
  await heading(user);
  const sessions = page.getByRole('table', { name: 'Sessions' });
  const before = await sessions.getByRole('button', { name: /^End the session/ }).count();
  assert.ok(before >= 2, `${user} should have two sessions, has ${before}`);
  await Promise.all([
    page.waitForNavigation(),
    sessions.getByRole('button', { name: /^End the session/ }).first().click(),
  ]);
  await heading(user);
  assert.match(await page.getByRole('status').innerText(), /That session is ended/);
  assert.equal(await sessions.getByRole('button', { name: /^End the session/ }).count(), before - 1);
  await shot('console-6-session-ended');
  await press('Disable account');
  await heading(`${user} disabled`);
  assert.match(await page.getByRole('status').innerText(), /The account is disabled/);
  assert.equal(await sessions.getByRole('button', { name: /^End the session/ }).count(), 0);
  await shot('console-7-disabled');

  // A set-password link for <other>, shown once.
  await page.getByRole('link', { name: 'Users', exact: true }).click();
  await page.getByLabel('Username or email contains').fill(other);
  await press('Search');
  await Promise.all([page.waitForNavigation(), page.getByRole('link', { name: other, exact: true }).click()]);
  await heading(other);
  await press('Make a set-password link');
  await heading(`Set-password link for ${other}`);
  const link = await page.locator('#password-link').innerText();
  assert.ok(link.startsWith(`${issuer}/password/set?token=`), link);
  await shot('console-8-password-link');

  // Every action, newest first, by this administrator.
  await page.getByRole('link', { name: 'Audit log', exact: true }).click();
  await heading('Audit log');
  const rows = await page.getByRole('table', { name: 'Audit log' }).locator('tbody tr').allInnerTexts();
  // A session is named by the start of its id's hash.
  const actions = rows.map((row) => row.split('\t').slice(1, 4).join(' ').replace(/ session [0-9a-f]{8}$/, ' session'));
  assert.deepEqual(actions, [
    `user:${admin} user.password-link ${other}`,
    `user:${admin} user.disable ${user}`,
    `user:${admin} session.end ${user} session`,
    `user:${admin} client.rotate-secret console-app`,
    `user:${admin} client.create console-app`,
  ]);
  await shot('console-9-audit');

  // The accessibility audit of each console page, in a context that runs axe.
  const audits = newAudits();
  const scripted = await browser.newContext();
  const audited = await scripted.newPage();
  const a = on(audited);
  await a.signIn(admin);
  await a.press('Sign in');
  await a.heading('Admin console');
  for (const [name, path] of [
    ['overview', ''], ['users', '/users'], ['user', `/users/${user}`], ['clients', '/clients'],
    ['client', '/clients/console-app'], ['audit', '/audit'],
  ]) {
    await audited.goto(`${issuer}/admin${path}`);
    await audit(audited, `console ${name}`, audits);
  }

  // <other> chooses a password through the link, and is not an administrator.
  const outsider = await browser.newContext({ javaScriptEnabled: false });
  const refused = await outsider.newPage();
  const o = on(refused);
  await refused.goto(link);
  await o.heading('Choose a password');
  const chosen = 'a password chosen by its owner';
  await refused.getByLabel('New password').fill(chosen);
  await refused.getByLabel('The same again').fill(chosen);
  await o.shot('console-10-choose-password');
  await o.press('Set password');
  await o.heading('Password set');
  await o.signIn(other, chosen);
  const [response] = await Promise.all([
    refused.waitForResponse((r) => r.url() === `${issuer}/admin`),
    refused.getByRole('button', { name: 'Sign in', exact: true }).click(),
  ]);
  assert.equal(response.status(), 403);
  await o.heading('Not an administrator');
  await o.shot('console-11-forbidden');

  console.log(JSON.stringify({ firstSecret, secondSecret, violations: audits.violations }));
} finally {
  await browser.close();
}
