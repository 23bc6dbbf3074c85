// A real OpenID Provider (the certified `oidc-provider`) for authgate's
// integration tests. Started by the tests with one argument, a JSON file:
//
//   { "cert": PEM, "key": PEM,
//     "clients": [{ "client_id", "client_secret", "redirect_uris",
//                   "post_logout_redirect_uris", "backchannel_logout_uri",
//                   or "token_endpoint_auth_method": "private_key_jwt"
//                   with "jwks" }],
//     "groups": { "LOGIN": ["group", ...] },
//     "resource": { "audience", "scope" } }     (optional)
//
// With `resource`, a client whose grant_types include client_credentials
// gets JWT access tokens for that audience (RFC 9068, signed with the
// provider's keys), as an API's callers do.
//
// It listens on 127.0.0.1 on a port the system picks and prints
// `listening https://127.0.0.1:PORT` once it answers. Sign-in is the
// provider's own development login form (any login, any password); the
// consent step is skipped for the test's clients, as for a first-party app.
// Back-channel logout is on; the gateway under test lives on a loopback
// address, which the provider's SSRF guard refuses, so the `fetch` hook
// below calls it directly (trusting its certificate through
// NODE_EXTRA_CA_CERTS).

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider, { errors } from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const server = createServer({ cert: settings.cert, key: settings.key });
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `https://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  // A `null` in the test's registration removes the key (a client that
  // signs in with its key has no secret).
  clients: settings.clients.map((client) => Object.fromEntries(Object.entries({
    token_endpoint_auth_method: 'client_secret_basic',
    backchannel_logout_session_required: true,
    ...client,
  }).filter(([, value]) => value !== null))),
  cookies: { keys: ['authgate-test-cookie-key'] },
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access',
    ...(settings.resource?.scope.split(' ') ?? [])],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Scope claims go into the ID token itself, as most providers do.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client) => (settings.resource
        && client.grantTypes.includes('client_credentials')
        ? settings.resource.audience : undefined),
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (!settings.resource || resource !== settings.resource.audience) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: settings.resource.scope,
          audience: settings.resource.audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
        };
      },
    },
  },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: `sub-${id}`,
          preferred_username: id,
          name: id,
          email: `${id}@example.com`,
          email_verified: true,
          groups: settings.groups?.[id] ?? [],
        };
      },
    };
  },
  // No consent screen for the test's own clients.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    await grant.save();
    ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId, grant.jti);
    return grant;
  },
  // The gateway is on loopback: call it without the SSRF guard.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});
provider.on('backchannel.error', (ctx, error) => {
  console.error(`back-channel logout failed: ${error}`);
});

server.on('request', provider.callback());
console.log(`listening ${issuer}`);
