// A certified OpenID provider from npm (oidc-provider 9), as a foreign server for
// keyward's own client: device authorization (RFC 8628), refresh, revocation, its
// development login pages (any username, any password). Usage:
//   node oidc-provider.mjs <client_id>
// Listens on 127.0.0.1 at a free port, prints one JSON line {"issuer": …}, and runs
// until its standard input closes.
import http from 'node:http';
import Provider from 'oidc-provider';

const [clientId] = process.argv.slice(2);
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
  }],
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: { openid: ['sub'], profile: ['preferred_username'], email: ['email'] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, email: `${id}@example.org` };
      },
    };
  },
  ttl: { AccessToken: 600 },
});
server.on('request', provider.callback());

console.log(JSON.stringify({ issuer }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
