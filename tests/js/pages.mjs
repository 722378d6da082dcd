// Every page keyward serves, in a real browser (Debian's Chromium driven by
// playwright-core), for what the README promises of them beyond showing: an
// accessibility audit of each with axe-core (none may have a violation, light or dark),
// login and consent done with the keyboard only, the consent page's Deny button, an
// emailed-link sign-in through its pages (the link read from a real SMTP delivery), and
// login, consent, a form_post response, device approval, the account page and sign-out
// with JavaScript turned off. One browser, one context with JavaScript and one without.
//
// Usage: node pages.mjs
// Runs an SMTP sink and the application (an HTTP server that keeps what arrives at its
// /callback) on 127.0.0.1 and prints {"smtp_port": N, "app_port": M}; then reads one
// JSON line from standard input:
//   {"issuer", "redirect_uri", "username", "password", "email",
//    "urls": {"keyboard", "deny", "web_message", "email", "nojs", "form_post"},
//    "device": {"deny", "approve", "approve_nojs"}}   (user codes)
// and prints one JSON line with what reached the application: {"keyboard", "denied",
// "email", "nojs", "form_post"} (each the parameters of the response) and "audited"
// (the pages audited, in order). Fails on a page that is not as expected, or on any
// accessibility violation (all listed).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { audit, audits as newAudits } from './axe.mjs';

// The SMTP sink: messages wait in `mail` until read.
const mail = [];
let mailArrived = () => {};
const smtp = new SMTPServer({
  secure: false,
  disabledCommands: ['STARTTLS', 'AUTH'],
  authOptional: true,
  logger: false,
  onData(stream, session, callback) {
    simpleParser(stream)
      .then((message) => {
        mail.push({ to: session.envelope.rcptTo.map((r) => r.address), text: message.text });
        mailArrived();
        callback();
      })
      .catch(callback);
  },
});
await new Promise((resolve) => smtp.listen(0, '127.0.0.1', resolve));

// The application: what reaches its redirect URI, /callback (query or form body),
// waits in `arrivals`.
const arrivals = [];
const app = http.createServer((request, response) => {
  let body = '';
  request.on('data', (chunk) => { body += chunk; });
  request.on('end', () => {
    const params = request.method === 'POST'
      ? new URLSearchParams(body)
      : new URL(request.url, 'http://app').searchParams;
    if (new URL(request.url, 'http://app').pathname !== '/callback') {
      response.writeHead(404).end();
      return;
    }
    arrivals.push({ method: request.method, params: Object.fromEntries(params) });
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><html lang="en"><title>App</title><main><h1>Back at the application</h1></main></html>');
  });
});
await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
console.log(JSON.stringify({ smtp_port: smtp.server.address().port, app_port: app.address().port }));
async function nextMail() {
  while (!mail.length) await new Promise((resolve) => { mailArrived = resolve; });
  return mail.shift();
}

const input = JSON.parse(await new Promise((resolve) => {
  createInterface({ input: process.stdin }).once('line', resolve);
}));
const { issuer, urls, device } = input;
const redirectUri = input.redirect_uri;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
});
const audits = newAudits();
const results = {};
try {
  // What the browser brought to the application (the one arrival since the last).
  const arrived = async (page) => {
    await page.waitForURL(`${redirectUri}**`);
    assert.equal(arrivals.length, 1, JSON.stringify(arrivals));
    return arrivals.pop();
  };
  const heading = (page, name) => page.getByRole('heading', { name, exact: true }).waitFor();
  const button = (page, name) => page.getByRole('button', { name, exact: true });
  const focused = async (locator, what) => {
    assert.ok(await locator.evaluate((el) => el === document.activeElement), `${what} has the focus`);
  };

  // ---- With JavaScript: every page audited, the keyboard, Deny, an emailed link. ----
  const context = await browser.newContext();
  const page = await context.newPage();

  // Login with the keyboard only: Tab through the email form to the password form,
  // type, Enter; a wrong password first.
  await page.goto(urls.keyboard);
  await heading(page, 'Sign in');
  await audit(page, 'login', audits);
  const order = [
    [page.getByLabel('Email address', { exact: true }), 'the email field'],
    [button(page, 'Email me a sign-in link'), 'the email button'],
    [page.getByLabel('Username', { exact: true }), 'the username'],
    [page.getByLabel('Password', { exact: true }), 'the password'],
    [button(page, 'Sign in'), 'the sign-in button'],
  ];
  for (const [locator, what] of order) {
    await page.keyboard.press('Tab');
    await focused(locator, what);
  }
  await page.keyboard.press('Shift+Tab');
  await page.keyboard.press('Shift+Tab');
  await focused(page.getByLabel('Username', { exact: true }), 'the username, back');
  await page.keyboard.type(input.username);
  await page.keyboard.press('Tab');
  await page.keyboard.type('not the password');
  await page.keyboard.press('Enter');
  await page.getByRole('alert').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /Invalid username or password/);
  await audit(page, 'login-error', audits);
  // The password field has the focus again: type and Enter.
  await focused(page.getByLabel('Password', { exact: true }), 'the password after an error');
  await page.keyboard.type(input.password);
  await page.keyboard.press('Enter');

  // Consent with the keyboard: Deny comes first, then Allow; Space presses Allow.
  await heading(page, 'Authorize Pages App');
  await audit(page, 'consent', audits);
  await page.keyboard.press('Tab');
  await focused(button(page, 'Deny'), 'Deny');
  await page.keyboard.press('Tab');
  await focused(button(page, 'Allow'), 'Allow');
  await page.keyboard.press('Space');
  results.keyboard = (await arrived(page)).params;

  // The Deny button: the application gets access_denied with its state.
  await page.goto(urls.deny);
  await heading(page, 'Authorize Pages App');
  await button(page, 'Deny').click();
  results.denied = (await arrived(page)).params;

  // The device pages: a wrong code, then one denied and one approved.
  await page.goto(`${issuer}/device`);
  await heading(page, 'Connect a device');
  await audit(page, 'device', audits);
  await page.getByLabel('Code').fill('BCDF-GHJK');
  await button(page, 'Continue').click();
  await page.getByRole('alert').waitFor();
  await audit(page, 'device-error', audits);
  await page.getByLabel('Code').fill(device.deny);
  await button(page, 'Continue').click();
  await page.getByRole('note').waitFor();
  assert.match(await page.getByRole('note').innerText(), /A device is asking to sign in as you/);
  await audit(page, 'device-consent', audits);
  await button(page, 'Deny').click();
  await heading(page, 'Request denied');
  await audit(page, 'device-denied', audits);
  await page.goto(`${issuer}/device?user_code=${encodeURIComponent(device.approve)}`);
  await button(page, 'Continue').click();
  await page.getByRole('note').waitFor();
  await button(page, 'Allow').click();
  await heading(page, 'Device connected');
  await audit(page, 'device-connected', audits);

  // The account page, with the application just authorised.
  await page.goto(`${issuer}/account`);
  await heading(page, 'Your account');
  assert.match(await page.getByRole('list', { name: 'Applications you have authorised' }).innerText(), /Pages App/);
  await audit(page, 'account', audits);

  // A web_message response opened on its own (no opener to post to): it stays.
  await page.goto(urls.web_message);
  await heading(page, 'Signed in');
  await audit(page, 'web-message', audits);

  // An error page.
  await page.goto(`${issuer}/authorize?client_id=nobody&response_type=code`);
  await heading(page, 'Unknown application');
  await audit(page, 'error', audits);

  // Sign-out: asked, then done.
  await page.goto(`${issuer}/logout`);
  await heading(page, 'Sign out?');
  await audit(page, 'logout', audits);
  await button(page, 'Sign out').click();
  await heading(page, 'You are signed out');
  await audit(page, 'signed-out', audits);

  // An emailed link: asked for on the login page, the page that answers, the message
  // delivered over SMTP, its link opened in this browser, one click to sign in.
  await page.goto(urls.email);
  await page.getByLabel('Email address', { exact: true }).fill(input.email);
  await button(page, 'Email me a sign-in link').click();
  await heading(page, 'Check your email');
  assert.ok((await page.locator('main').innerText()).includes(`If ${input.email} can sign in here`));
  await audit(page, 'email-sent', audits);
  const message = await nextMail();
  assert.deepEqual(message.to, [input.email]);
  const link = message.text.match(new RegExp(`${issuer}/callback/email\\?token=\\S+`));
  assert.ok(link, message.text);
  await page.goto(link[0]);
  await heading(page, 'Continue signing in');
  await audit(page, 'email-confirm', audits);
  await button(page, 'Continue').click();
  results.email = (await arrived(page)).params;
  await context.close();

  // ---- Without JavaScript: the flows still complete. ----
  const nojs = await browser.newContext({ javaScriptEnabled: false });
  const plain = await nojs.newPage();
  await plain.goto(urls.nojs);
  await heading(plain, 'Sign in');
  await plain.getByLabel('Username', { exact: true }).fill(input.username);
  await plain.getByLabel('Password', { exact: true }).fill(input.password);
  await button(plain, 'Sign in').click();
  await heading(plain, 'Authorize Pages App');
  await button(plain, 'Allow').click();
  results.nojs = (await arrived(plain)).params;

  // A form_post response: without JavaScript, a button posts it.
  await plain.goto(urls.form_post);
  await heading(plain, 'Authorize Pages App');
  await button(plain, 'Allow').click();
  await button(plain, 'Continue').waitFor();
  await heading(plain, 'Returning to the application');
  assert.match(await plain.locator('main').innerText(), /Signed in\. Continue to the application:/);
  const formPost = await plain.content();
  await button(plain, 'Continue').click();
  const posted = await arrived(plain);
  assert.equal(posted.method, 'POST');
  results.form_post = posted.params;

  // Device approval.
  await plain.goto(`${issuer}/device`);
  await plain.getByLabel('Code').fill(device.approve_nojs);
  await button(plain, 'Continue').click();
  await plain.getByRole('note').waitFor();
  await button(plain, 'Allow').click();
  await heading(plain, 'Device connected');

  // The account page (its buttons are plain forms too; revoking here would void the
  // codes the test still redeems).
  await plain.goto(`${issuer}/account`);
  await heading(plain, 'Your account');
  assert.match(await plain.getByRole('list', { name: 'Applications you have authorised' }).innerText(), /Pages App/);
  await button(plain, 'Revoke access of Pages App').waitFor();

  // Sign-out.
  await plain.goto(`${issuer}/logout`);
  await button(plain, 'Sign out').click();
  await heading(plain, 'You are signed out');
  await plain.goto(`${issuer}/account`);
  await heading(plain, 'Sign in');
  await nojs.close();

  // The form_post page as a browser without JavaScript showed it (noscript content
  // shown, the script gone), audited in a page that can run axe.
  const auditor = await browser.newPage();
  await auditor.setContent(formPost
    .replace(/<script\b[^>]*>[\s\S]*?<\/script>/g, '')
    .replace(/<\/?noscript>/g, ''));
  await auditor.getByRole('button', { name: 'Continue' }).waitFor();
  await audit(auditor, 'form-post', audits);

  results.audited = audits.pages;
  if (audits.violations.length) {
    throw new Error(`accessibility violations:\n${audits.violations.join('\n')}`);
  }
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
  smtp.close();
  app.close();
}
