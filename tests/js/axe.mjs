// An accessibility audit of the page a playwright page shows, with axe-core from npm:
// every rule axe runs by default (WCAG 2.x A and AA, best practices), in the light and
// the dark colour scheme. Used by the Chromium walks (pages.mjs, broker.mjs).
import axe from 'axe-core';

/// Audits `page` as `name`: adds each violation found to `audits.violations` (one
/// readable line per rule and scheme, with the elements at fault) and `name` to
/// `audits.pages`. Needs JavaScript in the page (axe runs there).
export async function audit(page, name, audits) {
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
      await page.evaluate(axe.source);
    }
    const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
    for (const v of result.violations) {
      const nodes = v.nodes.map((n) => `    ${n.target.join(' ')}: ${n.failureSummary.replace(/\n/g, ' ')}`);
      audits.violations.push(`${name} (${colorScheme}): ${v.id} [${v.impact}] ${v.help}\n${nodes.join('\n')}`);
    }
  }
  await page.emulateMedia({ colorScheme: null });
  audits.pages.push(name);
}

/// A fresh record of audits.
export const audits = () => ({ pages: [], violations: [] });
