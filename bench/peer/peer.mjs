// The peer of keyward's benchmarks: oidc-provider 9 from npm, configured to do what
// keyward does in each scenario. Started by `keyward-bench`; usage:
//   KEYWARD_BENCH_CLIENT='{"client_id":…,"client_secret":…,"redirect_uri":…}' node peer.mjs
// Listens on 127.0.0.1 at a free port, prints one JSON line {"issuer": …}, and runs
// until its standard input closes.
//
// Like keyward: ES256-signed JWT access tokens (RFC 9068) for the API scope, ES256 ID
// tokens, refresh tokens rotated at every use, device authorization, introspection.
// Unlike keyward: it keeps everything in memory (its own memory adapter, with the size
// limit lifted so that 10,000 pending device codes fit), it runs on one thread (Node),
// and its development login pages accept any password without hashing it.
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const client = JSON.parse(process.env.KEYWARD_BENCH_CLIENT ?? '');
const API = 'urn:keyward:bench';

function signingKey(type, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg}-bench` };
}

// oidc-provider's own memory adapter over an unbounded store: the default store
// forgets all but the newest 1,000 entries.
const storage = new Map();

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  adapter: (model) => new MemoryAdapter(model, storage),
  clients: [{
    client_id: client.client_id,
    client_secret: client.client_secret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [
      'authorization_code',
      'refresh_token',
      'client_credentials',
      'urn:ietf:params:oauth:grant-type:device_code',
    ],
    response_types: ['code'],
    redirect_uris: [client.redirect_uri],
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: {
    keys: [
      signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
      signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
    ],
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Access tokens for the API scope are ES256 JWTs, as keyward's are; a request
      // without it (the introspection scenario's token) gets an opaque token, which is
      // the kind oidc-provider can introspect.
      defaultResource: (ctx) => (
        String(ctx.oidc.params?.scope ?? '').split(' ').includes('api:read') ? API : undefined
      ),
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api:read',
        audience: API,
        accessTokenTTL: 900,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email'] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: id, preferred_username: id, email: `${id}@example.org` };
      },
    };
  },
  ttl: { AccessToken: 900, ClientCredentials: 900, DeviceCode: 600, IdToken: 3600 },
});
server.on('request', provider.callback());

console.log(JSON.stringify({ issuer }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
