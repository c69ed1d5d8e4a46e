// A real OpenID Provider (oidc-provider) on plain-http loopback, for the browser-login interop test.
//
// Usage: node provider.mjs --proxy-base http://127.0.0.1:PROXYPORT [--port N] [--client-secret S]
//                          [--callback-path P] [--cookie-prefix X]
//   --port           listening port on 127.0.0.1 (default 0: any free port)
//   --proxy-base     the proxy's base URL; registers <base><callback-path> as the redirect URI
//                    and <base>/ as the post-logout redirect URI (env PROXY_BASE)
//   --client-secret  secret of the confidential client "jwtgate-test" (env CLIENT_SECRET)
//   --callback-path  the proxy's callback path for this provider (default /oauth2/idpresponse)
//   --cookie-prefix  prefix of the provider's own cookie names (default none): a second provider
//                    on 127.0.0.1 needs one, since cookies ignore ports
// Prints one JSON line {"issuer":"http://127.0.0.1:PORT"} on stdout once it listens (oidc-provider's
// own notices go to stdout/stderr too: look for the line that starts with {"issuer").
// Stops on SIGTERM/SIGINT.
import http from 'node:http';
import crypto from 'node:crypto';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PROVIDER_PORT ?? '0' },
    'proxy-base': { type: 'string', default: process.env.PROXY_BASE },
    'client-secret': { type: 'string', default: process.env.CLIENT_SECRET },
    'client-id': { type: 'string', default: process.env.CLIENT_ID ?? 'jwtgate-test' },
    'callback-path': { type: 'string', default: '/oauth2/idpresponse' },
    'cookie-prefix': { type: 'string', default: '' },
  },
});
if (!args['proxy-base']) throw new Error('--proxy-base (or PROXY_BASE) is required');
if (!args['client-secret']) throw new Error('--client-secret (or CLIENT_SECRET) is required');
const proxyBase = args['proxy-base'].replace(/\/+$/, '');

// Bind first so that port 0 works: the issuer URL must contain the real port.
let handler = (_req, res) => {
  res.statusCode = 503;
  res.end('starting');
};
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

// A fresh RS256 key per start (a restart is a key rotation, and every old token is forgotten).
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `rs256-${crypto.randomBytes(4).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

const displayName = (login) => login.charAt(0).toUpperCase() + login.slice(1);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: args['client-id'],
      client_secret: args['client-secret'],
      application_type: 'web',
      redirect_uris: [`${proxyBase}${args['callback-path']}`],
      post_logout_redirect_uris: [`${proxyBase}/`],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signingJwk] },
  cookies: {
    keys: [crypto.randomBytes(32).toString('base64url')],
    names: {
      session: `${args['cookie-prefix']}_session`,
      interaction: `${args['cookie-prefix']}_interaction`,
      resume: `${args['cookie-prefix']}_interaction_resume`,
    },
  },
  // Any login and password are accepted (devInteractions' login page); account id = login.
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims(_use, _scope) {
        return {
          sub: id,
          email: `${id}@example.test`,
          email_verified: true,
          name: displayName(id),
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  // PKCE: S256 only (the library's only method); optional for this confidential client.
  pkce: { required: () => false },
  // Always issue a refresh token to a client allowed to use the grant (not only with offline_access).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
});

handler = provider.callback();
process.stdout.write(`${JSON.stringify({ issuer })}\n`);

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
