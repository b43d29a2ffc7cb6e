// The identity provider of gatehouse's SSO tests: panva's certified
// oidc-provider, configured by the test through the environment:
//   OIDC_PORT      the port to listen on
//   OIDC_HOST      the address to listen on (default 127.0.0.1)
//   OIDC_TLS_CERT, OIDC_TLS_KEY  PEM files: serve https (the issuer is then
//                  https://<host>:<port>), else plain http
//   OIDC_CLIENTS   JSON list of clients ({client_id, client_secret, redirect_uris})
//   OIDC_ACCOUNTS  a JSON file {"<sub>": {"preferred_username", "email", "groups"}},
//                  read again at every login, so a test can change someone's
//                  groups at the provider between two logins
// Its own login and consent pages (devInteractions) sign in any account the
// file lists. ID tokens carry the requested claims (groups included), as
// Keycloak, Okta and Entra ID can be set to do. Prints "ready <issuer>" once
// it listens; exits when its stdin closes or after an hour at most.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT ?? '0');
const host = process.env.OIDC_HOST ?? '127.0.0.1';
const tls = process.env.OIDC_TLS_CERT
  ? { cert: readFileSync(process.env.OIDC_TLS_CERT), key: readFileSync(process.env.OIDC_TLS_KEY) }
  : undefined;
const issuer = `${tls ? 'https' : 'http'}://${host}:${port}`;
const clients = JSON.parse(process.env.OIDC_CLIENTS ?? '[]');
const accountsFile = process.env.OIDC_ACCOUNTS;

function accounts() {
  return JSON.parse(readFileSync(accountsFile, 'utf8'));
}

const provider = new Provider(issuer, {
  clients: clients.map((c) => ({
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  })),
  // Every client must send a PKCE S256 challenge.
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false,
  findAccount(_ctx, sub) {
    const account = accounts()[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email_verified: true, ...account };
      },
    };
  },
  cookies: { keys: ['gatehouse-test-only-cookie-key'] },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AccessToken: 600, IdToken: 600 },
});
provider.proxy = false;

const ready = () => console.log(`ready ${issuer}`);
const server = tls
  ? https.createServer(tls, provider.callback()).listen(port, host, ready)
  : provider.listen(port, host, ready);
const stop = () => server.close(() => process.exit(0));
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, 3600 * 1000).unref();
