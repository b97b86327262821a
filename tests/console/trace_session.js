// The browser half of tests/console/trace.rs's session test: support and admin sign in at the
// real provider, open the trace page; the admin's unmask form is refused with a wrong CSRF token
// (from the console's own origin, so only the token check can catch it) and works through the
// real form with the right one.
// Env: GATEWAY, IDP, TRACE (the trace id), SPAN (a span id). Prints "RESULT {...}".
'use strict';

const { launch } = require('../browser/lib/browser');
const { GATEWAY, signIn } = require('../signin/lib');

const TRACE = process.env.TRACE;
const SPAN = process.env.SPAN;
const result = { csp_violations: [] };

function watchCsp(page) {
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) result.csp_violations.push(message.text());
  });
}

async function main() {
  const browser = await launch();
  try {
    const path = `/traces/${TRACE}?span=${SPAN}`;
    const sam = await signIn(browser, 'sam', path);
    watchCsp(sam.page);
    result.support_landed_on = sam.page.url();
    result.support_rows = await sam.page.locator('#waterfall tr.span[data-span-id]').count();
    result.support_unmask_forms = await sam.page.locator('form#unmask').count();
    result.support_text = await sam.page.locator('#waterfall').textContent();
    result.support_picked_open = await sam.page.locator(`tr.span[data-span-id="${SPAN}"] details.attrs`).evaluate((d) => d.open);
    await sam.context.close();

    const ada = await signIn(browser, 'ada', path);
    const page = ada.page;
    watchCsp(page);
    const csrf = await page.locator('form#unmask input[name="csrf"]').getAttribute('value');
    result.form_csrf_length = csrf ? csrf.length : 0;
    // From our own origin, with a session, but not the session's token: refused.
    result.wrong_token = await page.evaluate(async ({ trace }) => {
      const body = new URLSearchParams({ reason: 'wrong token', csrf: 'not-the-session-token' });
      const r = await fetch(`/traces/${trace}/unmask`, { method: 'POST', body, credentials: 'same-origin' });
      return { status: r.status, text: await r.text() };
    }, { trace: TRACE });
    result.missing_token = await page.evaluate(async ({ trace }) => {
      const body = new URLSearchParams({ reason: 'no token' });
      const r = await fetch(`/traces/${trace}/unmask`, { method: 'POST', body, credentials: 'same-origin' });
      return r.status;
    }, { trace: TRACE });
    // The real form, as a person uses it.
    await page.fill('#unmask-reason', 'session ticket SUP-99');
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form#unmask button[type="submit"]')]);
    result.unmasked_url = page.url();
    result.unmasked_notice = await page.locator('#unmasked').innerText();
    result.unmasked_text = await page.locator('#waterfall').textContent();
    result.unmasked_picked = await page.locator('tr.span[aria-current="true"]').getAttribute('data-span-id');
    await ada.context.close();
  } finally {
    await browser.close();
  }
}

main()
  .then(() => {
    console.log(`RESULT ${JSON.stringify(result)}`);
  })
  .catch((error) => {
    result.error = String(error && error.stack ? error.stack : error);
    console.log(`RESULT ${JSON.stringify(result)}`);
    process.exit(1);
  });
