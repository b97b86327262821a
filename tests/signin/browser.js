// The browser half of tests/signin.rs: real chromium signs in at the real provider through
// tracegate's /login and /auth/callback, then reads the API with its cookie. Every
// observation goes into one JSON object printed as "RESULT {...}"; the Rust test asserts them.
// Env: GATEWAY (tracegate's public URL), IDP (issuer), ORDER (an order id that exists),
// RECHECK_MS (auth.login.recheck).
'use strict';

const { launch } = require('../browser/lib/browser');
const { GATEWAY, IDP, signIn, fillLogin, sessionCookie } = require('./lib');

const ORDER = process.env.ORDER;
const RECHECK_MS = Number(process.env.RECHECK_MS || '2000');
const result = {};

function log(...args) {
  console.error('[browser]', ...args);
}

/** GET with the context's cookies; status and parsed JSON (if any). */
async function read(context, path, headers = {}) {
  const r = await context.request.get(`${GATEWAY}${path}`, { headers, maxRedirects: 0 });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  return { status: r.status(), body };
}

async function idpControl(action, user) {
  const r = await fetch(`${IDP}/test/${action}/${user}`, { method: 'POST' });
  if (!r.ok) throw new Error(`IdP control ${action} ${user}: ${r.status}`);
}

/** The authorization URL /login would send the browser to (the binding cookie is set). */
async function authorizationUrl(context) {
  const r = await context.request.get(`${GATEWAY}/login`, { maxRedirects: 0 });
  return new URL(r.headers().location);
}

async function main() {
  const browser = await launch();
  try {
    // 1. Support signs in and lands on the order it asked for.
    {
      const callbackUrls = [];
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on('request', (r) => { if (r.url().startsWith(`${GATEWAY}/auth/callback`)) callbackUrls.push(r.url()); });
      const start = await page.goto(`${GATEWAY}/login?next=${encodeURIComponent(`/api/v1/orders/${ORDER}`)}`);
      result.login_redirected_to_idp = page.url().startsWith(`${IDP}/interaction/`);
      const callback = await fillLogin(page, 'sam');
      result.support_callback_status = callback.status();
      result.support_set_cookie = (await callback.headerValue('set-cookie')) || '';
      result.support_landed_on = page.url();
      const text = await page.textContent('body');
      try { result.support_order_id = JSON.parse(text).order_id; } catch { result.support_order_id = null; }
      const cookie = sessionCookie(await context.cookies());
      result.support_cookie = cookie ? { name: cookie.name, httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite, path: cookie.path } : null;
      result.support_read = (await read(context, `/api/v1/orders/${ORDER}`)).status;
      const session = await read(context, '/auth/session');
      result.support_session = session.body && { subject: session.body.subject, roles: session.body.roles, has_csrf: !!session.body.csrf_token };
      void start;

      // 2. The same callback URL again: its state was used up.
      const replay = await page.goto(callbackUrls[0]);
      result.replayed_state_status = replay.status();
      result.support_read_after_replay = (await read(context, `/api/v1/orders/${ORDER}`)).status;

      // 3. Logout from another site is refused; from our own page it ends the session here and
      //    at the provider (RP-initiated logout).
      const crossSite = await context.request.post(`${GATEWAY}/logout`, { headers: { Origin: 'http://evil.test' }, maxRedirects: 0 });
      result.cross_site_logout_status = crossSite.status();
      result.support_read_after_cross_site_logout = (await read(context, `/api/v1/orders/${ORDER}`)).status;
      await page.goto(`${GATEWAY}/auth/session`);
      await Promise.all([
        page.waitForURL((u) => u.href.startsWith(IDP), { timeout: 15_000 }),
        page.evaluate(() => {
          const form = document.createElement('form');
          form.method = 'POST';
          form.action = '/logout';
          document.body.appendChild(form);
          form.submit();
        }),
      ]);
      result.logout_went_to_idp = new URL(page.url()).pathname.startsWith('/session/end');
      // The provider asks whether to sign out there too, then sends the browser back to our `/`
      // (which, with no session any more, goes on to sign-in: the console's door).
      const yes = await page.$('button[value="yes"]');
      if (yes) {
        const [back] = await Promise.all([
          page.waitForResponse((r) => r.url().startsWith(GATEWAY), { timeout: 15_000 }),
          yes.click(),
        ]);
        result.logout_back_at = back.url();
      } else {
        result.logout_back_at = page.url();
      }
      result.cookie_after_logout = !!sessionCookie(await context.cookies());
      result.support_read_after_logout = (await read(context, `/api/v1/orders/${ORDER}`)).status;
      await context.close();
    }

    // 4. A person without a role is refused at sign-in, and has no session.
    {
      const { context, callback } = await signIn(browser, 'nora', `/api/v1/orders/${ORDER}`);
      result.norole_callback_status = callback.status();
      result.norole_read = (await read(context, `/api/v1/orders/${ORDER}`)).status;
      result.norole_cookie = !!sessionCookie(await context.cookies());
      await context.close();
    }

    // 5. Admin: admin endpoints; a cross-site state-changing request with the cookie is
    //    refused, the same one from our origin is not refused for CSRF.
    {
      const { context } = await signIn(browser, 'ada', '/api/v1/audit');
      result.admin_audit = (await read(context, '/api/v1/audit')).status;
      result.admin_config = (await read(context, '/api/v1/admin/config')).status;
      const evil = await context.request.post(`${GATEWAY}/api/v1/admin/reload`, { headers: { Origin: 'http://evil.test' } });
      result.admin_cross_site_reload = evil.status();
      const own = await context.request.post(`${GATEWAY}/api/v1/admin/reload`, { headers: { Origin: GATEWAY } });
      result.admin_same_origin_reload = own.status();
      const cookie = sessionCookie(await context.cookies());
      result.admin_cookie_value = cookie ? cookie.value : null;
      await context.close();
    }

    // 6. Carol's account is disabled, Dave loses his role: both lose access within recheck.
    {
      const carol = await signIn(browser, 'carol', `/api/v1/orders/${ORDER}`);
      const dave = await signIn(browser, 'dave', `/api/v1/orders/${ORDER}`);
      result.carol_before = (await read(carol.context, `/api/v1/orders/${ORDER}`)).status;
      result.dave_before = (await read(dave.context, `/api/v1/orders/${ORDER}`)).status;
      await idpControl('disable', 'carol');
      await idpControl('remove-role', 'dave');
      const changed = Date.now();
      const until = async (context) => {
        for (;;) {
          const status = (await read(context, `/api/v1/orders/${ORDER}`)).status;
          if (status !== 200 || Date.now() - changed > RECHECK_MS * 3 + 5000) return { status, after_ms: Date.now() - changed };
          await new Promise((r) => setTimeout(r, 250));
        }
      };
      result.carol_after = await until(carol.context);
      result.dave_after = await until(dave.context);
      result.carol_after_again = (await read(carol.context, `/api/v1/orders/${ORDER}`)).status;
      await carol.context.close();
      await dave.context.close();
    }

    // 7. A wrong nonce: the authorization request is sent with another nonce than /login chose.
    {
      const context = await browser.newContext();
      const url = await authorizationUrl(context);
      url.searchParams.set('nonce', 'a-nonce-tracegate-never-chose');
      const page = await context.newPage();
      await page.goto(url.href);
      const callback = await fillLogin(page, 'sam');
      result.wrong_nonce_status = callback.status();
      result.wrong_nonce_cookie = !!sessionCookie(await context.cookies());
      await context.close();
    }

    // 8. A code issued to another client, brought back with tracegate's state.
    {
      const context = await browser.newContext();
      const url = await authorizationUrl(context);
      url.searchParams.set('client_id', 'other');
      const page = await context.newPage();
      await page.goto(url.href);
      const callback = await fillLogin(page, 'sam');
      result.other_client_status = callback.status();
      result.other_client_cookie = !!sessionCookie(await context.cookies());
      await context.close();
    }

    // 8b. Login CSRF: a sign-in started in one browser, finished in another, opens no session.
    {
      const starter = await browser.newContext();
      const url = await authorizationUrl(starter);
      await starter.close();
      const victim = await browser.newContext();
      const page = await victim.newPage();
      await page.goto(url.href);
      const callback = await fillLogin(page, 'sam');
      result.foreign_state_status = callback.status();
      result.foreign_state_cookie = !!sessionCookie(await victim.cookies());
      await victim.close();
    }

    // 9. Open redirects in ?next= land on tracegate's start page.
    for (const [key, next] of [['next_absolute', 'https://evil.test/steal'], ['next_scheme_relative', '//evil.test/steal'], ['next_backslash', '/\\evil.test']]) {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${GATEWAY}/login?next=${encodeURIComponent(next)}`);
      await fillLogin(page, 'sam');
      result[key] = page.url();
      await context.close();
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
