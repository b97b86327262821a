// The browser half of tests/signin.rs's roles-from-the-access-token test: support signs in
// (roles only in the JWT access token), a person without a role is refused, and a role removed
// at the provider ends the session at the next recheck (refresh, new access token).
// Env: GATEWAY, IDP, RECHECK_MS. Prints "RESULT {...}".
'use strict';

const { launch } = require('../browser/lib/browser');
const { GATEWAY, IDP, signIn } = require('./lib');

const RECHECK_MS = Number(process.env.RECHECK_MS || '2000');
const result = {};

async function session(context) {
  const r = await context.request.get(`${GATEWAY}/auth/session`, { maxRedirects: 0 });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  return { status: r.status(), roles: body && body.roles ? body.roles : null };
}

async function main() {
  const browser = await launch();
  try {
    const sam = await signIn(browser, 'sam', '/auth/session');
    result.support_callback_status = sam.callback.status();
    result.support_session = await session(sam.context);
    await sam.context.close();

    const nora = await signIn(browser, 'nora', '/auth/session');
    result.norole_callback_status = nora.callback.status();
    result.norole_session = (await session(nora.context)).status;
    await nora.context.close();

    const dave = await signIn(browser, 'dave', '/auth/session');
    result.dave_before = (await session(dave.context)).status;
    // Past one recheck with the role still there: the refreshed access token keeps it.
    await new Promise((resolve) => setTimeout(resolve, RECHECK_MS + 1100));
    result.dave_after_refresh = await session(dave.context);
    const r = await fetch(`${IDP}/test/remove-role/dave`, { method: 'POST' });
    if (!r.ok) throw new Error(`IdP control: ${r.status}`);
    const changed = Date.now();
    for (;;) {
      const { status } = await session(dave.context);
      if (status !== 200 || Date.now() - changed > RECHECK_MS * 3 + 5000) {
        result.dave_after = { status, after_ms: Date.now() - changed };
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await dave.context.close();
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
