// oidc-provider 9 from npm (a certified OpenID provider) as an upstream identity
// provider for keyward's `oidc` connectors. Two clients, one per ID token algorithm:
// "keyward-rs" (RS256) and "keyward-ed" (EdDSA, Ed25519), both confidential with the
// secret given, code flow with PKCE. Its development login accepts any name and
// password; the account's claims (name, preferred_username, a verified email, groups)
// come from userinfo, as oidc-provider leaves them out of ID tokens by default. Usage:
//   node oidc-upstream.mjs <client_secret> <redirect_uri_rs256> <redirect_uri_eddsa>
// Listens on 127.0.0.1 at a free port, prints one JSON line {"issuer": …}, and runs
// until its standard input closes.
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [secret, rsRedirect, edRedirect] = process.argv.slice(2);
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const jwk = (pair, kid) => ({ ...pair.privateKey.export({ format: 'jwk' }), kid, use: 'sig' });
const client = (clientId, redirectUri, alg) => ({
  client_id: clientId,
  client_secret: secret,
  redirect_uris: [redirectUri],
  response_types: ['code'],
  grant_types: ['authorization_code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: alg,
});

const provider = new Provider(issuer, {
  clients: [client('keyward-rs', rsRedirect, 'RS256'), client('keyward-ed', edRedirect, 'EdDSA')],
  jwks: {
    keys: [
      jwk(generateKeyPairSync('rsa', { modulusLength: 2048 }), 'rsa-1'),
      jwk(generateKeyPairSync('ed25519'), 'ed-1'),
    ],
  },
  features: { devInteractions: { enabled: true } },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          name: `${id} at npm`,
          preferred_username: id,
          email: `${id}@npm.example`,
          email_verified: true,
          groups: ['npm-admins', 'npm-users'],
        };
      },
    };
  },
});
server.on('request', provider.callback());

console.log(JSON.stringify({ issuer }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
