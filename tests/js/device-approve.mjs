// Plays the person at a foreign provider's device pages (oidc-provider's development
// interactions) in Debian's Chromium: opens the verification URL, confirms the code,
// signs in as <username>, approves. Usage:
//   node device-approve.mjs <verification_uri_complete> <username> <artifacts_dir>
// Exits 0 once the provider's success page shows; keeps a screenshot of every page.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [url, username, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  for (let step = 1; step <= 6; step += 1) {
    await page.screenshot({ path: `${artifacts}/foreign-${step}.png`, fullPage: true });
    const text = await page.innerText('body');
    if (/sign-in success/i.test(text)) {
      console.log(JSON.stringify({ approved: true, steps: step }));
      process.exit(0);
    }
    if (await page.locator('input[name=login]').count()) {
      await page.fill('input[name=login]', username);
      await page.fill('input[name=password]', 'any password works here');
    }
    await Promise.all([
      page.waitForLoadState('load'),
      page.locator('button[type=submit], button').first().click(),
    ]);
    await page.waitForLoadState('load');
  }
  throw new Error(`no success page; last page: ${await page.innerText('body')}`);
} finally {
  await browser.close();
}
