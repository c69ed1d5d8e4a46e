// Checks the harness itself, without jwtgate: the provider (provider.mjs), the upstream
// (upstream.mjs), Chromium driven through playwright-core, and the AlbJwtVerifier wiring with an
// ALB-format token signed here. Run it when browser-login.mjs fails in a way that may not be
// jwtgate's fault, or after changing a pinned version:   node selftest.mjs
// Prints ok/FAIL lines and "N passed, M failed"; exit 1 on any failure.
import http from 'node:http';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import readline from 'node:readline';
import {
  b64urlPadded,
  createAlbVerifier,
  inspectAlbToken,
  launchChromium,
  newLoopbackContext,
  parseSetCookie,
  tamperPayloadByte,
} from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLIENT_ID = 'jwtgate-test';
const CLIENT_SECRET = crypto.randomBytes(16).toString('hex');
const ALB_ARN = 'arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/jwtgate-test/50dc6c495c0c9188';

let passed = 0;
let failed = 0;
async function test(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e?.message ?? e}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

const children = [];
function startChild(script, args, key) {
  const child = spawn(process.execPath, [path.join(HERE, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      if (line.startsWith(`{"${key}"`)) resolve(JSON.parse(line)[key]);
    });
    child.on('exit', (code) => reject(new Error(`${script} exited ${code}: ${stderr}`)));
    setTimeout(() => reject(new Error(`${script} did not start: ${stderr}`)), 15_000).unref();
  });
}
async function listen(handler) {
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}

// A stand-in relying party on the port where the proxy would be: it answers the callback with a
// 302 and a session-like Set-Cookie (to check that the test sees the Set-Cookie of a redirect)
// and shows a small page elsewhere.
const callbacks = [];
const rp = await listen((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/oauth2/idpresponse') {
    callbacks.push(url);
    res.writeHead(302, {
      location: '/landing',
      'set-cookie': ['AWSELBAuthSessionCookie-0=abc; Path=/; HttpOnly; SameSite=Lax', 'other=1; Path=/'],
    });
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(`<!DOCTYPE html><p id="path">${url.pathname}</p>`);
});

let browser;
const cleanup = async () => {
  await browser?.close().catch(() => {});
  for (const c of children) c.kill('SIGTERM');
  rp.server.close();
  rp.server.closeAllConnections();
};

try {
  const issuer = await startChild('provider.mjs', ['--proxy-base', rp.base, '--client-secret', CLIENT_SECRET], 'issuer');
  const upstream = await startChild('upstream.mjs', [], 'upstream');
  let discovery;
  const basic = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64')}`;
  let tokens;
  let userinfo;

  await test('provider discovery', async () => {
    const res = await fetch(`${issuer}/.well-known/openid-configuration`);
    assert(res.status === 200, `status ${res.status}`);
    discovery = await res.json();
    assert(discovery.issuer === issuer, `issuer ${discovery.issuer}`);
    assert(discovery.end_session_endpoint, 'no end_session_endpoint');
    assert(discovery.code_challenge_methods_supported?.includes('S256'), 'S256 not supported');
    assert(discovery.scopes_supported.includes('offline_access'), 'no offline_access scope');
  });

  browser = await launchChromium();
  const context = await newLoopbackContext(browser);
  const page = await context.newPage();
  const rpSetCookies = [];
  context.on('response', async (r) => {
    if (new URL(r.url()).origin !== rp.base) return;
    for (const h of await r.headersArray()) if (h.name.toLowerCase() === 'set-cookie') rpSetCookies.push(h.value);
  });
  const state = crypto.randomBytes(12).toString('base64url');
  const verifier = crypto.randomBytes(32).toString('base64url');
  const authUrl = () => {
    const u = new URL(discovery.authorization_endpoint);
    u.search = new URLSearchParams({
      response_type: 'code',
      client_id: CLIENT_ID,
      redirect_uri: `${rp.base}/oauth2/idpresponse`,
      scope: 'openid email profile offline_access',
      prompt: 'consent',
      state,
      nonce: crypto.randomBytes(12).toString('base64url'),
      code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    }).toString();
    return u.toString();
  };

  await test('browser login at the provider returns a code to the redirect URI', async () => {
    await page.goto(authUrl());
    assert(page.url().startsWith(`${issuer}/interaction/`), `not the login page: ${page.url()}`);
    await page.fill('input[name=login]', 'alice');
    await page.fill('input[name=password]', 'anything');
    await page.click('button[type=submit]');
    await page.waitForURL((u) => u.pathname.startsWith('/interaction/') || u.origin === rp.base);
    if (page.url().startsWith(`${issuer}/interaction/`)) {
      await page.getByRole('button', { name: 'Continue' }).click();
    }
    await page.waitForURL(`${rp.base}/landing`);
    assert(callbacks.length === 1, `${callbacks.length} callbacks`);
    const cb = callbacks[0].searchParams;
    assert(cb.get('code'), 'no code');
    assert(cb.get('state') === state, 'state differs');
    assert(cb.get('iss') === issuer, `iss ${cb.get('iss')}`);
    assert((await page.textContent('#path')) === '/landing', 'landing page not shown');
  });

  await test('Set-Cookie of a redirect response is visible to the test', async () => {
    const names = rpSetCookies.map((l) => parseSetCookie(l).name);
    assert(names.includes('AWSELBAuthSessionCookie-0') && names.includes('other'), `saw ${JSON.stringify(rpSetCookies)}`);
    const c = parseSetCookie(rpSetCookies.find((l) => l.startsWith('AWSELBAuthSessionCookie-0')));
    assert(c.attrs.httponly === true && c.attrs.samesite === 'Lax' && c.attrs.path === '/', JSON.stringify(c));
  });

  await test('code exchange (client_secret_basic, PKCE) issues access, ID and refresh tokens', async () => {
    const res = await fetch(discovery.token_endpoint, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: callbacks[0].searchParams.get('code'),
        redirect_uri: `${rp.base}/oauth2/idpresponse`,
        code_verifier: verifier,
      }),
    });
    tokens = await res.json();
    assert(res.status === 200, `status ${res.status}: ${JSON.stringify(tokens)}`);
    assert(tokens.access_token && tokens.id_token && tokens.refresh_token, `got ${Object.keys(tokens)}`);
    assert(tokens.scope.split(' ').includes('offline_access'), `scope ${tokens.scope}`);
  });

  await test('userinfo gives sub, email, email_verified, name', async () => {
    const res = await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    userinfo = await res.json();
    assert(res.status === 200, `status ${res.status}`);
    assert(userinfo.sub === 'alice' && userinfo.email === 'alice@example.test', JSON.stringify(userinfo));
    assert(userinfo.email_verified === true && userinfo.name === 'Alice', JSON.stringify(userinfo));
  });

  await test('refresh_token grant', async () => {
    const res = await fetch(discovery.token_endpoint, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }),
    });
    const body = await res.json();
    assert(res.status === 200 && body.access_token, `status ${res.status}: ${JSON.stringify(body)}`);
  });

  await test('RP-initiated logout ends the provider session and returns to the RP', async () => {
    const u = new URL(discovery.end_session_endpoint);
    u.search = new URLSearchParams({ client_id: CLIENT_ID, post_logout_redirect_uri: `${rp.base}/` }).toString();
    await page.goto(u.toString());
    await page.click('button[name=logout][value=yes]');
    await page.waitForURL(`${rp.base}/`);
    await page.goto(authUrl());
    assert(page.url().startsWith(`${issuer}/interaction/`), `not at the provider: ${page.url()}`);
    assert(await page.locator('input[name=login]').count(), 'login form not shown: provider session still alive');
  });

  await test('upstream records requests', async () => {
    const res = await fetch(`${upstream}/app/x?y=1`, { headers: { 'x-test': 'v' } });
    assert(res.status === 200 && (await res.text()).includes('/app/x?y=1'), 'page');
    const rec = await (await fetch(`${upstream}/__received`)).json();
    assert(rec.length === 1 && rec[0].url === '/app/x?y=1' && rec[0].headers['x-test'] === 'v', JSON.stringify(rec));
  });

  // An ALB-format token signed here, its key served as PEM at <keys>/<kid>.
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = crypto.randomUUID();
  const keys = await listen((req, res) => {
    if (req.url === `/alb-keys/${kid}`) {
      res.writeHead(200, { 'content-type': 'application/x-pem-file' });
      res.end(publicKey.export({ format: 'pem', type: 'spki' }));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const exp = Math.floor(Date.now() / 1000) + 120;
  const sign = (header, payload, { pad = true } = {}) => {
    const enc = (o) => (pad ? b64urlPadded(Buffer.from(JSON.stringify(o))) : Buffer.from(JSON.stringify(o)).toString('base64url'));
    const input = `${enc(header)}.${enc(payload)}`;
    const sig = crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return `${input}.${pad ? b64urlPadded(sig) : sig.toString('base64url')}`;
  };
  const header = { typ: 'JWT', kid, alg: 'ES256', iss: issuer, client: CLIENT_ID, signer: ALB_ARN, exp };
  const token = sign(header, { ...(userinfo ?? { sub: 'alice', email: 'alice@example.test' }), exp, iss: issuer });
  const expect = { issuer, clientId: CLIENT_ID, albArn: ALB_ARN };
  const { verifier: alb, fetcher } = createAlbVerifier({ ...expect, keysUrl: `${keys.base}/alb-keys` });

  await test('ALB token format checks accept a padded token', async () => {
    const { problems, segments } = inspectAlbToken(token, expect);
    assert(problems.length === 0, problems.join('; '));
    assert(segments[2].padding === 2, 'a 64-byte signature needs "=="');
  });
  await test('ALB token format checks catch stripped padding', async () => {
    const stripped = token.split('.').map((s) => s.replace(/=+$/, '')).join('.');
    const { problems } = inspectAlbToken(stripped, expect);
    assert(problems.some((p) => p.startsWith('signature segment: 0')), problems.join('; ') || 'no problem found');
  });
  await test('AlbJwtVerifier over http accepts the token', async () => {
    const payload = await alb.verify(token);
    assert(payload.sub === 'alice' && payload.email === 'alice@example.test', JSON.stringify(payload));
    assert(fetcher.fetched.length === 1 && fetcher.fetched[0] === `${keys.base}/alb-keys/${kid}`, JSON.stringify(fetcher.fetched));
  });
  const rejects = async (tok, errName, verifier = alb) => {
    try {
      await verifier.verify(tok);
    } catch (e) {
      assert(e.constructor?.name === errName, `rejected with ${e.constructor?.name}: ${e.message}, expected ${errName}`);
      return;
    }
    throw new Error('accepted');
  };
  await test('AlbJwtVerifier rejects one changed payload byte', () =>
    rejects(tamperPayloadByte(token), 'JwtInvalidSignatureError'));
  await test('AlbJwtVerifier rejects a padded-signed token sent without padding', () =>
    rejects(token.split('.').map((s) => s.replace(/=+$/, '')).join('.'), 'JwtInvalidSignatureError'));
  await test('AlbJwtVerifier rejects another signer', () =>
    rejects(sign({ ...header, signer: `${ALB_ARN}0` }, { sub: 'alice', exp, iss: issuer }), 'AlbJwtInvalidSignerError'));
  await test('AlbJwtVerifier rejects an unknown kid (key URL 404)', () =>
    rejects(sign({ ...header, kid: crypto.randomUUID() }, { sub: 'alice', exp, iss: issuer }), 'NonRetryableFetchError'));
  keys.server.close();
} catch (e) {
  failed += 1;
  console.log(`FAIL harness: ${e?.stack ?? e}`);
} finally {
  await cleanup();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
