// Interop check: openid-client (a certified OpenID Connect relying party library)
// against a running keyward. Usage:
//   node openid-client.mjs <issuer> <client_id> <client_secret> <redirect_uri> <username> <password>
// Discovery, authorization code + PKCE (S256) + state + nonce, ID token validation,
// userinfo, refresh. Prints "interop ok" and exits 0, or throws.
import * as client from 'openid-client';
import assert from 'node:assert/strict';

const [issuer, clientId, clientSecret, redirectUri, username, password] = process.argv.slice(2);
const insecure = { execute: [client.allowInsecureRequests] };
const config = await client.discovery(new URL(issuer), clientId, clientSecret, undefined, insecure);
assert.equal(config.serverMetadata().issuer, issuer);

const codeVerifier = client.randomPKCECodeVerifier();
const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
const nonce = client.randomNonce();
const state = client.randomState();
const authorizationUrl = client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri,
  scope: 'openid profile email offline_access',
  code_challenge: codeChallenge,
  code_challenge_method: 'S256',
  nonce,
  state,
});

// A minimal browser: keeps cookies, follows redirects by hand, fills in the login form.
const cookies = new Map();
async function browse(url, init = {}) {
  const headers = { ...(init.headers || {}), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
  const response = await fetch(url, { ...init, headers, redirect: 'manual' });
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const at = pair.indexOf('=');
    cookies.set(pair.slice(0, at), pair.slice(at + 1));
  }
  return response;
}
const hidden = (html, name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))[1];

let response = await browse(authorizationUrl);
let callback;
for (let step = 0; step < 10 && !callback; step++) {
  if (response.status >= 300 && response.status < 400) {
    const next = new URL(response.headers.get('location'), response.url || authorizationUrl);
    if (next.href.startsWith(redirectUri)) {
      callback = next;
      break;
    }
    response = await browse(next);
    continue;
  }
  const html = await response.text();
  assert.equal(response.status, 200, html);
  const form = new URLSearchParams({ req: hidden(html, 'req'), csrf: hidden(html, 'csrf'), username, password });
  response = await browse(new URL('login', issuer + '/'), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  });
}
assert.ok(callback, 'the browser came back to the redirect URI');

const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: codeVerifier,
  expectedNonce: nonce,
  expectedState: state,
  idTokenExpected: true,
});
const claims = tokens.claims();
assert.equal(claims.iss, issuer);
assert.equal(claims.aud, clientId);
assert.equal(claims.nonce, nonce);
assert.equal(claims.preferred_username, username);
assert.ok(tokens.refresh_token, 'a refresh token for offline_access');

const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
assert.equal(userinfo.sub, claims.sub);
assert.equal(userinfo.preferred_username, username);

const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens rotate');
assert.equal(refreshed.claims().sub, claims.sub);
// Rotation is idempotent: the rotated token, presented again before its successor was
// used, gets the same successor (a retry after a lost answer).
const retried = await client.refreshTokenGrant(config, tokens.refresh_token);
assert.equal(retried.refresh_token, refreshed.refresh_token, 'a retried rotation gets the same successor');
// Once the successor was used, the rotated token is reuse and is refused.
const next = await client.refreshTokenGrant(config, refreshed.refresh_token);
assert.ok(next.refresh_token);
// An OAuth error answer, as openid-client reports it: the status and the body's error.
const refused = (description) => (e) => {
  assert.ok(e instanceof client.ResponseBodyError, `not an OAuth error answer: ${e}`);
  assert.equal(e.status, 400);
  assert.equal(e.error, 'invalid_grant');
  assert.equal(e.error_description, description);
  return true;
};
await assert.rejects(
  client.refreshTokenGrant(config, tokens.refresh_token),
  refused('refresh token already used; the grant is revoked'),
  'a rotated refresh token is refused once its successor was used',
);
// That reuse revoked the grant: the newest refresh token is refused too.
await assert.rejects(
  client.refreshTokenGrant(config, next.refresh_token),
  refused('unknown, expired or revoked refresh token'),
  'the grant is revoked after a reuse',
);

console.log('interop ok');
