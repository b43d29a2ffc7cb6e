// A rogue OpenID issuer for gatehouse's negative SSO tests: it speaks the
// protocol (discovery, JWKS, an authorization endpoint that sends the
// browser straight back with a code, a token endpoint) and signs ID tokens
// with jose, but each token is broken the way the test asks, by
// POST /_mode with one of:
//   good          a valid token (the control: the setup itself works)
//   wrong_key     signed by a key that is not in the JWKS (same kid)
//   alg_none      an unsigned token (alg "none")
//   wrong_aud     for another client
//   wrong_iss     from another issuer
//   wrong_azp     for this client among others, but authorized for another party
//   future_nbf    not valid before an hour from now
//   unverified_email  a valid token whose email the provider has not verified
//   expired       expired an hour ago
//   replay_nonce  carrying the nonce of the previous login, not this one's
//   rotate        the provider rotated its key: the JWKS now holds only a
//                 new key (kid k2), which signs valid tokens
// Env: ROGUE_PORT, ROGUE_CLIENT_ID. Prints "ready <issuer>"; exits when its
// stdin closes or after an hour at most.
import http from 'node:http';
import { generateKeyPair, exportJWK, SignJWT } from 'jose';

const port = Number(process.env.ROGUE_PORT ?? '0');
const clientId = process.env.ROGUE_CLIENT_ID ?? 'gatehouse';
const issuer = `http://127.0.0.1:${port}`;

const good = await generateKeyPair('RS256');
const bad = await generateKeyPair('RS256');
const next = await generateKeyPair('RS256');
const publicJwk = { ...(await exportJWK(good.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
const nextJwk = { ...(await exportJWK(next.publicKey)), kid: 'k2', alg: 'RS256', use: 'sig' };

let mode = 'good';
const codes = new Map();
let previousNonce = 'no-previous-login';

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

async function idToken(login) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: 'rogue-sub-0001',
    preferred_username: 'eve',
    email: 'eve@example.org',
    email_verified: true,
    groups: ['research-team'],
    nonce: login.nonce,
  };
  let iss = issuer;
  let aud = clientId;
  let exp = now + 300;
  let iat = now;
  if (mode === 'wrong_aud') aud = 'someone-else';
  if (mode === 'wrong_iss') iss = 'https://evil.example';
  if (mode === 'expired') { exp = now - 3600; iat = now - 3700; }
  if (mode === 'replay_nonce') claims.nonce = login.previousNonce;
  if (mode === 'wrong_azp') { aud = [clientId, 'someone-else']; claims.azp = 'someone-else'; }
  if (mode === 'future_nbf') claims.nbf = now + 3600;
  if (mode === 'unverified_email') claims.email_verified = false;
  if (mode === 'no_email_verified') delete claims.email_verified;
  if (mode === 'alg_none') {
    return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, iss, aud, exp, iat })}.`;
  }
  const key = { wrong_key: bad.privateKey, rotate: next.privateKey }[mode] ?? good.privateKey;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: mode === 'rotate' ? 'k2' : 'k1', typ: 'JWT' })
    .setIssuer(iss)
    .setAudience(aud)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key);
}

function body(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; if (data.length > 65536) req.destroy(); });
    req.on('end', () => resolve(data));
  });
}

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(value));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/.well-known/openid-configuration') {
    return json(res, 200, {
      issuer,
      authorization_endpoint: `${issuer}/auth`,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      response_types_supported: ['code'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256', 'none'],
      code_challenge_methods_supported: ['S256'],
    });
  }
  if (url.pathname === '/jwks') {
    return json(res, 200, { keys: [mode === 'rotate' ? nextJwk : publicJwk] });
  }
  if (url.pathname === '/_mode' && req.method === 'POST') {
    mode = (await body(req)).trim();
    return json(res, 200, { mode });
  }
  if (url.pathname === '/auth') {
    const code = `code-${codes.size + 1}-${Math.random().toString(36).slice(2)}`;
    const nonce = url.searchParams.get('nonce');
    codes.set(code, { nonce, previousNonce });
    previousNonce = nonce;
    const back = new URL(url.searchParams.get('redirect_uri'));
    back.searchParams.set('code', code);
    back.searchParams.set('state', url.searchParams.get('state'));
    res.writeHead(303, { location: back.toString() });
    return res.end();
  }
  if (url.pathname === '/token' && req.method === 'POST') {
    const form = new URLSearchParams(await body(req));
    const login = codes.get(form.get('code'));
    if (!login) return json(res, 400, { error: 'invalid_grant' });
    codes.delete(form.get('code'));
    return json(res, 200, {
      access_token: 'rogue-access-token',
      token_type: 'Bearer',
      expires_in: 300,
      id_token: await idToken(login),
    });
  }
  json(res, 404, { error: 'not_found' });
});

server.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
const stop = () => server.close(() => process.exit(0));
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
setTimeout(stop, 3600 * 1000).unref();
