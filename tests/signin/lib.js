// What the sign-in browser scripts share: the test provider's accounts, filling its login form,
// and signing in through the gateway's /login in a fresh browser context.
// Env: GATEWAY (the gateway's API URL), IDP (the provider's issuer URL).
'use strict';

const GATEWAY = process.env.GATEWAY;
const IDP = process.env.IDP;
/** The accounts tests/signin/idp.mjs creates. */
const PASSWORDS = { sam: 'sam-pw', ada: 'ada-pw', nora: 'nora-pw', carol: 'carol-pw', dave: 'dave-pw' };

/** Fills the provider's login form on `page` (which must be showing it); the callback's response. */
async function fillLogin(page, user) {
  await page.waitForSelector('#username', { timeout: 15_000 });
  if (!page.url().startsWith(IDP)) throw new Error(`login form not at the provider: ${page.url()}`);
  await page.fill('#username', user);
  await page.fill('#password', PASSWORDS[user]);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().startsWith(`${GATEWAY}/auth/callback`), { timeout: 15_000 }),
    page.click('#submit'),
  ]);
  await page.waitForLoadState('load');
  return response;
}

/** Signs `user` in through /login (with `next`, when given), in a new context. */
async function signIn(browser, user, next) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${GATEWAY}/login${next === undefined ? '' : `?next=${encodeURIComponent(next)}`}`);
  const callback = await fillLogin(page, user);
  return { context, page, callback };
}

/** The session cookie among a context's cookies (plain over HTTP, `__Host-` over HTTPS). */
function sessionCookie(cookies) {
  return cookies.find((c) => c.name === 'tracegate_session' || c.name === '__Host-tracegate_session');
}

module.exports = { GATEWAY, IDP, PASSWORDS, fillLogin, signIn, sessionCookie };
