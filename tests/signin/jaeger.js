// The browser half of tests/signin.rs's second test: roles from userinfo only, and Jaeger UI
// behind tracegate (`api.jaeger_ui`) read with the session cookie. Observations go into one
// JSON object printed as "RESULT {...}"; the Rust test asserts them.
// Env: GATEWAY (tracegate's public URL), IDP (issuer), TRACE (a trace id Jaeger holds),
// RECHECK_MS (auth.login.recheck).
'use strict';

const { launch } = require('../browser/lib/browser');
const { GATEWAY, IDP, signIn, sessionCookie } = require('./lib');

const TRACE = process.env.TRACE;
const RECHECK_MS = Number(process.env.RECHECK_MS || '2000');
const result = {};

/** A request with the context's cookies; status and body text. */
async function call(context, method, path, headers = {}) {
  const r = await context.request.fetch(`${GATEWAY}${path}`, { method, headers, maxRedirects: 0 });
  return { status: r.status(), text: await r.text(), location: r.headers().location || null };
}

async function main() {
  const browser = await launch();
  try {
    // 1. No session: the proxy's API and its UI page.
    {
      const context = await browser.newContext();
      const api = await call(context, 'GET', '/jaeger/api/services');
      result.anon_services = { status: api.status, location: api.location };
      const page = await context.newPage();
      const ui = await page.goto(`${GATEWAY}/jaeger/`);
      result.anon_ui = { status: ui.status(), url: page.url() };
      await context.close();
    }

    // 2. Support signs in (roles from userinfo) and reads Jaeger through the proxy.
    {
      const { context, page, callback } = await signIn(browser, 'sam', '/jaeger/api/services');
      result.support_callback_status = callback.status();
      result.support_landed_on = page.url();
      const session = await call(context, 'GET', '/auth/session');
      result.support_roles = JSON.parse(session.text).roles;
      const services = await call(context, 'GET', '/jaeger/api/services');
      result.support_services = { status: services.status, body: services.text };
      const trace = await call(context, 'GET', `/jaeger/api/traces/${TRACE}`);
      result.support_trace = { status: trace.status, body: trace.text };
      const ui = await page.goto(`${GATEWAY}/jaeger/`);
      result.support_ui = { status: ui.status(), base: await page.evaluate(() => document.querySelector('base')?.getAttribute('href') ?? null) };
      // Archiving is an admin's call: refused to support by role, whatever the origin.
      result.support_archive = (await call(context, 'POST', `/jaeger/api/archive/${TRACE}`, { Origin: GATEWAY })).status;
      await context.close();
    }

    // 3. No role in userinfo: refused at sign-in, no session.
    {
      const { context, callback } = await signIn(browser, 'nora', '/jaeger/api/services');
      result.norole_callback_status = callback.status();
      result.norole_cookie = !!sessionCookie(await context.cookies());
      result.norole_services = (await call(context, 'GET', '/jaeger/api/services')).status;
      await context.close();
    }

    // 4. Admin: cross-site state changes and unmasking with the cookie are refused; the same
    //    from our own origin pass the CSRF check.
    {
      const { context } = await signIn(browser, 'ada', '/jaeger/api/services');
      const evil = { Origin: 'http://evil.test', 'Sec-Fetch-Site': 'cross-site' };
      result.admin_cross_site_archive = (await call(context, 'POST', `/jaeger/api/archive/${TRACE}`, evil)).status;
      result.admin_cross_site_unmask = (await call(context, 'GET', `/jaeger/api/traces/${TRACE}?unmask=true&reason=ticket-1`, evil)).status;
      result.admin_same_origin_archive = (await call(context, 'POST', `/jaeger/api/archive/${TRACE}`, { Origin: GATEWAY })).status;
      const unmasked = await call(context, 'GET', `/jaeger/api/traces/${TRACE}?unmask=true&reason=ticket-1`, { Origin: GATEWAY });
      result.admin_same_origin_unmask = { status: unmasked.status, body: unmasked.text };
      await context.close();
    }

    // 5. Dave loses his role at the provider: userinfo says so at the next recheck.
    {
      const dave = await signIn(browser, 'dave', '/jaeger/api/services');
      result.dave_before = (await call(dave.context, 'GET', '/jaeger/api/services')).status;
      const r = await fetch(`${IDP}/test/remove-role/dave`, { method: 'POST' });
      if (!r.ok) throw new Error(`IdP control: ${r.status}`);
      const changed = Date.now();
      for (;;) {
        const status = (await call(dave.context, 'GET', '/jaeger/api/services')).status;
        if (status !== 200 || Date.now() - changed > RECHECK_MS * 3 + 5000) {
          result.dave_after = { status, after_ms: Date.now() - changed };
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      await dave.context.close();
    }
  } finally {
    await browser.close();
  }
  console.log(`RESULT ${JSON.stringify(result)}`);
}

main().catch((err) => {
  console.log(`RESULT ${JSON.stringify(result)}`);
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
