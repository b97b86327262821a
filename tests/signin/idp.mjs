// A real OpenID Connect provider for tests/signin.rs: npm's oidc-provider with a confidential
// client for tracegate, a second client ("other") to obtain codes tracegate must refuse, a
// password login form, and accounts for each case. Test control (loopback only):
//   POST /test/disable/<user>      the account is disabled: refresh and userinfo are refused
//   POST /test/remove-role/<user>  the account keeps signing in but loses its roles
// Usage: [ROLES_IN=all|userinfo|access_token] node idp.mjs <tracegate public URL>   prints
// "READY <issuer>" once it listens. ROLES_IN says which answer alone carries the roles.
import http from 'node:http';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../browser/package.json', import.meta.url));
const { default: Provider, errors } = await import(require.resolve('oidc-provider'));

const gateway = (process.argv[2] || '').replace(/\/$/, '');
if (!gateway.startsWith('http')) {
  console.error('usage: node idp.mjs <tracegate public URL>');
  process.exit(2);
}

const accounts = {
  sam: { password: 'sam-pw', name: 'Sam Support', roles: ['tg-support'] },
  ada: { password: 'ada-pw', name: 'Ada Admin', roles: ['tg-admin'] },
  nora: { password: 'nora-pw', name: 'Nora Norole', roles: [] },
  carol: { password: 'carol-pw', name: 'Carol Leaving', roles: ['tg-support'] },
  dave: { password: 'dave-pw', name: 'Dave Moved', roles: ['tg-support'] },
};
const disabled = new Set();
const RESOURCE = 'urn:tracegate:api';
// Where the role claim is given: "all" (ID token and userinfo, the default), "userinfo" only,
// or "access_token" only (a JWT access token for the resource RESOURCE, which every
// authorization and refresh defaults to).
const rolesIn = process.env.ROLES_IN || 'all';
if (!['all', 'userinfo', 'access_token'].includes(rolesIn)) {
  console.error(`ROLES_IN=${rolesIn}: expected all, userinfo or access_token`);
  process.exit(2);
}

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const client = (id, secret) => ({
  client_id: id,
  client_secret: secret,
  redirect_uris: [`${gateway}/auth/callback`],
  post_logout_redirect_uris: [`${gateway}/`],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(issuer, {
  clients: [client('tracegate', 'tracegate-secret-0123456789'), client('other', 'other-secret-0123456789')],
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], roles: ['roles'] },
  scopes: ['openid', 'offline_access', 'profile', 'roles'],
  // The roles go into the ID token, as Keycloak and Entra put them there (unless ROLES_IN=userinfo).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    // ROLES_IN=access_token: access tokens are JWTs for RESOURCE (userinfo then refuses them).
    resourceIndicators: {
      enabled: rolesIn === 'access_token',
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== RESOURCE) throw new errors.InvalidTarget();
        return { scope: 'api', audience: RESOURCE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  // The roles claim of a JWT access token (ROLES_IN=access_token), read when it is issued.
  extraTokenClaims: async (ctx, token) => {
    if (rolesIn !== 'access_token' || token.kind !== 'AccessToken' || !accounts[token.accountId]) return undefined;
    return { roles: [...accounts[token.accountId].roles] };
  },
  pkce: { required: () => true },
  ttl: { AccessToken: 300, IdToken: 300, RefreshToken: 3600, Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60 },
  // A refresh token for every sign-in (Keycloak's default), without offline_access.
  issueRefreshToken: async (ctx, c) => c.grantTypeAllowed('refresh_token'),
  // First-party clients: no consent screen.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access profile roles');
    if (rolesIn === 'access_token') grant.addResourceScope(RESOURCE, 'api');
    await grant.save();
    return grant;
  },
  findAccount: async (ctx, id) => {
    const account = accounts[id];
    if (!account || disabled.has(id)) return undefined;
    return {
      accountId: id,
      // `use` is "id_token" or "userinfo"; with ROLES_IN=userinfo the roles are only in userinfo.
      claims: async (use) => {
        const claims = { sub: id, name: account.name, preferred_username: id };
        if (rolesIn === 'all' || (rolesIn === 'userinfo' && use === 'userinfo')) claims.roles = [...account.roles];
        return claims;
      },
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><body><h1>IdP error</h1><pre id="error">${escape(out.error)}: ${escape(out.error_description || '')}</pre></body></html>`;
  },
});
provider.on('server_error', (ctx, err) => console.error('idp server_error', err));

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginForm(uid, error) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Company sign-in</title></head><body>
<h1>Company sign-in</h1>${error ? `<p id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
  <label>User <input id="username" name="username" autocomplete="username"></label>
  <label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
  <button id="submit" type="submit">Sign in</button>
</form></body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

const handler = provider.callback();
server.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const control = url.pathname.match(/^\/test\/(disable|remove-role)\/([a-z]+)$/);
    if (control && req.method === 'POST') {
      const [, action, user] = control;
      if (!accounts[user]) { res.writeHead(404).end('no such user\n'); return; }
      if (action === 'disable') disabled.add(user); else accounts[user].roles = [];
      console.error(`idp: ${action} ${user}`);
      res.writeHead(200).end('ok\n');
      return;
    }
    const interaction = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (interaction) {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name !== 'login') {
        // Consent is never asked: loadExistingGrant grants first-party clients.
        await provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
        return;
      }
      if (req.method === 'POST' && interaction[2]) {
        const form = await readForm(req);
        const user = form.get('username') || '';
        const account = accounts[user];
        if (!account || disabled.has(user) || account.password !== form.get('password')) {
          res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(loginForm(details.uid, 'Wrong user or password'));
          return;
        }
        await provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(loginForm(details.uid));
      return;
    }
    handler(req, res);
  } catch (err) {
    console.error('idp error', err);
    if (!res.headersSent) res.writeHead(500).end(String(err));
  }
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
console.log(`READY ${issuer}`);
