// Browser-login interop test: headless Chromium logs in through jwtgate's ALB-style login mode
// (auth = "login") against a real OpenID Provider, and aws-jwt-verify's AlbJwtVerifier checks the
// x-amzn-oidc-data header jwtgate hands the upstream. run.sh starts everything and calls this.
//
// Usage: node browser-login.mjs --proxy URL --admin URL --issuer URL --upstream URL
//                               [--client-id jwtgate-test] [--alb-arn ARN]
// (or env PROXY_URL, ADMIN_URL, ISSUER, UPSTREAM_URL, CLIENT_ID, ALB_ARN)
// Prints "ok  <case>" / "FAIL <case>: ..." lines and "N passed, M failed"; exit 1 on any failure.
// On the first failure a screenshot of the page goes to <repo>/target/interop-oidc-failure.png.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  cookieIsDeletion,
  createAlbVerifier,
  inspectAlbToken,
  isLoopbackUrl,
  launchChromium,
  newLoopbackContext,
  parseSetCookie,
  tamperPayloadByte,
} from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../../..');
const SCREENSHOT = path.join(REPO, 'target', 'interop-oidc-failure.png');

const { values: opt } = parseArgs({
  options: {
    proxy: { type: 'string', default: process.env.PROXY_URL },
    admin: { type: 'string', default: process.env.ADMIN_URL },
    issuer: { type: 'string', default: process.env.ISSUER },
    upstream: { type: 'string', default: process.env.UPSTREAM_URL },
    'client-id': { type: 'string', default: process.env.CLIENT_ID ?? 'jwtgate-test' },
    'alb-arn': { type: 'string', default: process.env.ALB_ARN },
  },
});
for (const k of ['proxy', 'admin', 'issuer', 'upstream', 'alb-arn']) {
  if (!opt[k]) {
    console.error(`missing --${k}`);
    process.exit(2);
  }
}
const PROXY = opt.proxy.replace(/\/+$/, '');
const ADMIN = opt.admin.replace(/\/+$/, '');
const ISSUER = opt.issuer; // exact string: it is compared with iss
const UPSTREAM = opt.upstream.replace(/\/+$/, '');
const CLIENT_ID = opt['client-id'];
const ALB_ARN = opt['alb-arn'];
const PROXY_ORIGIN = new URL(PROXY).origin;
const ISSUER_ORIGIN = new URL(ISSUER).origin;
const SESSION_COOKIE = /^AWSELBAuthSessionCookie-(\d+)$/;
const REDIRECT = new Set([301, 302, 303, 307, 308]);

for (const u of [PROXY, ADMIN, ISSUER, UPSTREAM]) {
  if (!isLoopbackUrl(u)) throw new Error(`not a loopback URL: ${u}`);
}

// ---------------------------------------------------------------------------------------------
// Reporting

let passed = 0;
let failed = 0;
let screenshotTaken = false;
let currentPage = null;

async function test(name, fn, { needs = [] } = {}) {
  const missing = needs.filter((n) => !done.has(n));
  if (missing.length) {
    failed += 1;
    console.log(`FAIL ${name}: not run, needs: ${missing.join(', ')}`);
    return;
  }
  try {
    await fn();
    passed += 1;
    done.add(name);
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e?.message ?? e}`);
    if (!screenshotTaken && currentPage && !currentPage.isClosed()) {
      screenshotTaken = true;
      try {
        fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
        await currentPage.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 5_000 });
        console.log(`     screenshot of ${currentPage.url().slice(0, 120)} -> ${path.relative(process.cwd(), SCREENSHOT)}`);
      } catch (se) {
        console.log(`     (no screenshot: ${se.message})`);
      }
    }
  }
}
const done = new Set();

class Failure extends Error {}
async function assert(cond, msg) {
  if (!cond) throw new Failure(typeof msg === 'function' ? await msg() : msg);
}
const j = (v) => JSON.stringify(v);
const info = (msg) => console.log(`     ${msg}`);

// ---------------------------------------------------------------------------------------------
// What the browser sees from the proxy: every response from the proxy's origin, with its
// Set-Cookie lines (the browser's cookie jar also holds the provider's cookies, since cookies
// ignore ports, so only Set-Cookie headers the proxy itself sent are looked at).

const proxyResponses = [];
function recordProxyResponses(context) {
  context.on('response', (r) => {
    if (new URL(r.url()).origin !== PROXY_ORIGIN) return;
    const entry = {
      method: r.request().method(),
      url: r.url(),
      status: r.status(),
      nav: r.request().isNavigationRequest(),
      headers: r.headersArray().catch(() => []),
    };
    proxyResponses.push(entry);
  });
}
async function describe(entry) {
  const h = await entry.headers;
  const interesting = h
    .filter((x) => ['location', 'set-cookie', 'content-type', 'www-authenticate'].includes(x.name.toLowerCase()))
    .map((x) => `${x.name}: ${x.value.length > 200 ? `${x.value.slice(0, 200)}...` : x.value}`);
  return `${entry.method} ${entry.url} -> ${entry.status}${interesting.length ? ` [${interesting.join(' | ')}]` : ''}`;
}
async function headerValues(entry, name) {
  return (await entry.headers).filter((x) => x.name.toLowerCase() === name).map((x) => x.value);
}
async function setCookies(entry) {
  return (await headerValues(entry, 'set-cookie')).flatMap((v) => v.split('\n')).map(parseSetCookie);
}
function responsesFor(pathname, since = 0) {
  return proxyResponses.slice(since).filter((e) => new URL(e.url).pathname === pathname);
}
async function received() {
  const res = await fetch(`${UPSTREAM}/__received`);
  return res.json();
}
function requestOf(records, urlPath) {
  return records.filter((r) => r.url === urlPath);
}
function sessionCookieHeaderLeaks(rec) {
  const c = rec.headers.cookie ?? '';
  return /(^|;\s*)AWSELBAuthSessionCookie/.test(c);
}

// ---------------------------------------------------------------------------------------------

const discovery = await (await fetch(`${ISSUER}/.well-known/openid-configuration`)).json();
const browser = await launchChromium();
const timer = setTimeout(() => {
  console.log('FAIL timeout: the test did not finish within 180 s');
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, 180_000);

const state = {};
try {
  const context = await newLoopbackContext(browser);
  recordProxyResponses(context);
  const page = await context.newPage();
  currentPage = page;

  // a. Login through the provider.
  await test('unauthenticated page request redirects to the provider login', async () => {
    const since = proxyResponses.length;
    await page.goto(`${PROXY}/app/hello`);
    const first = proxyResponses[since];
    await assert(first && new URL(first.url).pathname === '/app/hello', 'no proxy response for /app/hello');
    await assert(REDIRECT.has(first.status), async () => `expected a redirect, got ${await describe(first)}`);
    const [location] = await headerValues(first, 'location');
    await assert(location, 'redirect without Location');
    const auth = new URL(location, first.url);
    await assert(
      `${auth.origin}${auth.pathname}` === discovery.authorization_endpoint,
      `redirect to ${auth.origin}${auth.pathname}, expected the authorization endpoint ${discovery.authorization_endpoint}`,
    );
    const p = auth.searchParams;
    const problems = [];
    if (p.get('response_type') !== 'code') problems.push(`response_type=${p.get('response_type')}`);
    if (p.get('client_id') !== CLIENT_ID) problems.push(`client_id=${p.get('client_id')}`);
    if (p.get('redirect_uri') !== `${PROXY}/oauth2/idpresponse`) problems.push(`redirect_uri=${p.get('redirect_uri')}`);
    const scope = (p.get('scope') ?? '').split(' ');
    for (const s of ['openid', 'email', 'profile', 'offline_access']) if (!scope.includes(s)) problems.push(`scope lacks ${s}`);
    if (p.get('prompt') !== 'consent') problems.push(`prompt=${p.get('prompt')} (extra_params)`);
    if (!p.get('state')) problems.push('no state');
    await assert(problems.length === 0, `authorization request: ${problems.join(', ')} in ${location}`);
    info(`authorization request: nonce ${p.get('nonce') ? 'sent' : 'NOT sent'}, PKCE ${p.get('code_challenge_method') ?? 'not used'}`);
    const sc = await setCookies(first);
    if (sc.length) info(`cookies set with the redirect: ${sc.map((c) => c.name).join(', ')}`);
    await assert(new URL(page.url()).origin === ISSUER_ORIGIN, `browser ended at ${page.url()}, not at the provider`);
    await assert(await page.locator('input[name=login]').count(), `no login form at ${page.url()}`);
  });

  await test('login and consent at the provider land on the requested page', async () => {
    const since = proxyResponses.length;
    await page.fill('input[name=login]', 'alice');
    await page.fill('input[name=password]', 'any-password');
    await page.click('button[type=submit]');
    await page.waitForURL((u) => u.origin === PROXY_ORIGIN || u.pathname.startsWith('/interaction/'));
    if (new URL(page.url()).origin === ISSUER_ORIGIN) {
      const consent = page.getByRole('button', { name: 'Continue' });
      if (await consent.count()) {
        info('consent page shown: Continue');
        await consent.click();
      }
    }
    await page
      .waitForURL((u) => u.origin === PROXY_ORIGIN && !u.pathname.startsWith('/oauth2/'), { timeout: 15_000 })
      .catch(() => {});
    const chain = await Promise.all(proxyResponses.slice(since).map(describe));
    await assert(page.url() === `${PROXY}/app/hello`, () => `browser at ${page.url()}; proxy answered: ${chain.join(' ; ')}`);
    const callback = responsesFor('/oauth2/idpresponse', since);
    await assert(callback.length === 1, `${callback.length} callback responses: ${chain.join(' ; ')}`);
    state.callback = callback[0];
    const cb = new URL(callback[0].url).searchParams;
    await assert(cb.get('code') && cb.get('state'), `callback without code/state: ${callback[0].url}`);
    await assert(REDIRECT.has(callback[0].status), async () => `callback answered ${await describe(callback[0])}`);
    const [loc] = await headerValues(callback[0], 'location');
    await assert(loc && new URL(loc, callback[0].url).href === `${PROXY}/app/hello`, `callback redirects to ${loc}, expected /app/hello`);
    const landing = responsesFor('/app/hello', since).at(-1);
    await assert(landing?.status === 200, async () => `final response ${landing ? await describe(landing) : 'none'}`);
    await assert((await page.textContent('#path')) === '/app/hello', 'the upstream page for /app/hello is not shown');
  });

  // b. The session cookie jwtgate set.
  await test('session cookie: AWSELBAuthSessionCookie-N, HttpOnly, SameSite=Lax, Path=/', async () => {
    const cookies = (await setCookies(state.callback)).filter((c) => SESSION_COOKIE.test(c.name));
    await assert(cookies.length > 0, async () => `no AWSELBAuthSessionCookie-N in the callback response: ${await describe(state.callback)}`);
    const names = cookies.map((c) => c.name);
    const shards = names.map((n) => Number(SESSION_COOKIE.exec(n)[1])).sort((a, b) => a - b);
    await assert(shards.every((n, i) => n === i), `shards are not -0..-${shards.length - 1}: ${names.join(', ')}`);
    for (const c of cookies) {
      const bad = [];
      if (c.attrs.httponly !== true) bad.push('not HttpOnly');
      if (String(c.attrs.samesite).toLowerCase() !== 'lax') bad.push(`SameSite=${c.attrs.samesite}`);
      if (c.attrs.path !== '/') bad.push(`Path=${c.attrs.path}`);
      if (c.attrs.secure) bad.push('Secure (secure_cookies = false)');
      if (cookieIsDeletion(c)) bad.push('already expired');
      if (!c.value) bad.push('empty value');
      if (Buffer.byteLength(`${c.name}=${c.value}`) > 4096) bad.push(`${Buffer.byteLength(c.value)} bytes (over 4 KB)`);
      await assert(bad.length === 0, `${c.name}: ${bad.join(', ')} in "${c.raw.slice(0, 300)}"`);
    }
    state.shards = names;
    const others = (await setCookies(state.callback)).filter((c) => !SESSION_COOKIE.test(c.name));
    if (others.length) info(`other cookies in the callback response: ${others.map((c) => `${c.name}${cookieIsDeletion(c) ? ' (expired)' : ''}`).join(', ')}`);
    info(`session cookies: ${cookies.map((c) => `${c.name} (${c.value.length} chars)`).join(', ')}`);
    const jar = (await context.cookies(PROXY)).map((c) => c.name).filter((n) => SESSION_COOKIE.test(n));
    await assert(names.every((n) => jar.includes(n)), `browser kept ${j(jar)}, was sent ${j(names)}`);
  }, { needs: ['login and consent at the provider land on the requested page'] });

  // c. What the upstream received.
  const HEADERS_CASE = 'upstream gets x-amzn-oidc-identity = alice, -accesstoken and -data';
  await test(HEADERS_CASE, async () => {
    const recs = requestOf(await received(), '/app/hello');
    await assert(recs.length === 1, `upstream received /app/hello ${recs.length} times`);
    const h = recs[0].headers;
    await assert(h['x-amzn-oidc-identity'] === 'alice', `x-amzn-oidc-identity = ${j(h['x-amzn-oidc-identity'])}`);
    await assert(h['x-amzn-oidc-accesstoken'], 'no x-amzn-oidc-accesstoken');
    await assert(h['x-amzn-oidc-data'], 'no x-amzn-oidc-data');
    state.data = h['x-amzn-oidc-data'];
    state.accessToken = h['x-amzn-oidc-accesstoken'];
    info(`access token: ${state.accessToken.split('.').length === 3 ? 'a JWT' : `opaque, ${state.accessToken.length} chars`}`);
  }, { needs: ['login and consent at the provider land on the requested page'] });

  await test('the session cookie is not forwarded to the upstream', async () => {
    const recs = requestOf(await received(), '/app/hello');
    await assert(recs.length === 1, `upstream received /app/hello ${recs.length} times`);
    await assert(!sessionCookieHeaderLeaks(recs[0]), `cookie: ${recs[0].headers.cookie?.slice(0, 300)}`);
  }, { needs: ['login and consent at the provider land on the requested page'] });

  await test("x-amzn-oidc-accesstoken is the provider's access token (userinfo accepts it)", async () => {
    const res = await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${state.accessToken}` } });
    const body = await res.text();
    await assert(res.status === 200, `userinfo answered ${res.status}: ${body.slice(0, 200)}`);
    await assert(JSON.parse(body).sub === 'alice', `userinfo sub: ${body}`);
  }, { needs: [HEADERS_CASE] });

  // d. x-amzn-oidc-data, as an application behind an ALB would check it.
  const expect = { issuer: ISSUER, clientId: CLIENT_ID, albArn: ALB_ARN };
  await test('x-amzn-oidc-data has the ALB format (padded base64url, raw ES256, ALB header)', async () => {
    const { problems, header, payload, segments } = inspectAlbToken(state.data, expect);
    info(`segments: ${segments.map((s) => `${s.name} ${s.length} chars, ${s.padding} '='`).join('; ')}`);
    if (header) info(`header: ${j(header)}`);
    if (payload) info(`payload: ${j(payload)}`);
    await assert(problems.length === 0, problems.join('; '));
  }, { needs: [HEADERS_CASE] });

  const { verifier, fetcher } = createAlbVerifier({ ...expect, keysUrl: `${ADMIN}/alb-keys` });
  await test('AlbJwtVerifier (aws-jwt-verify) accepts x-amzn-oidc-data; sub and email', async () => {
    let payload;
    try {
      payload = await verifier.verify(state.data);
    } catch (e) {
      throw new Failure(`rejected: ${e.constructor?.name}: ${e.message}`);
    }
    await assert(payload.sub === 'alice', `sub ${j(payload.sub)}`);
    await assert(payload.email === 'alice@example.test', `email ${j(payload.email)}`);
    info(`key fetched from ${fetcher.fetched.join(', ')}`);
  }, { needs: [HEADERS_CASE] });

  await test('AlbJwtVerifier rejects x-amzn-oidc-data with one payload byte changed', async () => {
    const tampered = tamperPayloadByte(state.data, 'email');
    await assert(tampered !== state.data, 'tampering changed nothing');
    try {
      await verifier.verify(tampered);
    } catch (e) {
      await assert(e.constructor?.name === 'JwtInvalidSignatureError', `rejected, but with ${e.constructor?.name}: ${e.message}`);
      return;
    }
    throw new Failure('the tampered token was accepted');
  }, { needs: ['AlbJwtVerifier (aws-jwt-verify) accepts x-amzn-oidc-data; sub and email'] });

  // e. The session works for the next request.
  await test('a second page goes straight through with the session', async () => {
    const since = proxyResponses.length;
    const res = await page.goto(`${PROXY}/app/other`);
    const chain = await Promise.all(proxyResponses.slice(since).filter((e) => e.nav).map(describe));
    await assert(res.request().redirectedFrom() === null && chain.length === 1, `redirected: ${chain.join(' ; ')}`);
    await assert(res.status() === 200 && page.url() === `${PROXY}/app/other`, `got ${chain.join(' ; ')}`);
    const recs = requestOf(await received(), '/app/other');
    await assert(recs.length === 1 && recs[0].headers['x-amzn-oidc-identity'] === 'alice', `upstream saw ${j(recs.map((r) => r.headers))}`);
    await assert(!sessionCookieHeaderLeaks(recs[0]), 'the session cookie reached the upstream');
  }, { needs: ['session cookie: AWSELBAuthSessionCookie-N, HttpOnly, SameSite=Lax, Path=/'] });

  // f. An API call without a session: 401, not a redirect to the login page.
  let fresh;
  await test('API request without a session (Accept: application/json) gets 401, not a redirect', async () => {
    fresh = await newLoopbackContext(browser);
    const p = await fresh.newPage();
    currentPage = p;
    const landing = await p.goto(`${PROXY}/`);
    await assert(landing.status() === 200, `anonymous route / answered ${landing.status()}`);
    const result = await p.evaluate(async (url) => {
      const r = await fetch(url, { headers: { Accept: 'application/json' }, redirect: 'manual' });
      return { status: r.status, type: r.type, body: r.type === 'opaqueredirect' ? '' : await r.text() };
    }, `${PROXY}/app/api`);
    if (result.type === 'opaqueredirect') {
      // The page cannot see an opaque redirect: repeat the request outside the page to report it.
      const r = await fresh.request.get(`${PROXY}/app/api`, { headers: { Accept: 'application/json' }, maxRedirects: 0 });
      throw new Failure(`got a redirect (the same request from outside the page: ${r.status()} location: ${r.headers().location})`);
    }
    await assert(result.status === 401, `status ${result.status} ${result.body.slice(0, 200)}`);
    info(`401 body: ${result.body.slice(0, 200)}`);
    const recs = requestOf(await received(), '/app/api');
    await assert(recs.length === 0, 'the unauthenticated API request reached the upstream');
  });
  await fresh?.close();
  currentPage = page;

  // g. Logout: jwtgate expires its cookies, then the provider's end-session, then back to /.
  const SIGN_OUT_CASE = 'sign_out redirects to the end_session_endpoint (client_id, post_logout_redirect_uri)';
  await test(SIGN_OUT_CASE, async () => {
    const since = proxyResponses.length;
    await page.goto(`${PROXY}/oauth2/sign_out`);
    const so = responsesFor('/oauth2/sign_out', since)[0];
    const chain = await Promise.all(proxyResponses.slice(since).map(describe));
    await assert(so, `no response for /oauth2/sign_out: ${chain.join(' ; ')}`);
    state.signOut = so;
    await assert(REDIRECT.has(so.status), async () => `sign_out answered ${await describe(so)}`);
    const [location] = await headerValues(so, 'location');
    const end = new URL(location, so.url);
    await assert(
      `${end.origin}${end.pathname}` === discovery.end_session_endpoint,
      `redirects to ${location}, expected the end_session_endpoint ${discovery.end_session_endpoint}`,
    );
    const q = end.searchParams;
    await assert(q.get('client_id') === CLIENT_ID, `client_id=${q.get('client_id')}`);
    await assert(q.get('post_logout_redirect_uri') === `${PROXY}/`, `post_logout_redirect_uri=${q.get('post_logout_redirect_uri')}`);
    info(`end-session request: id_token_hint ${q.get('id_token_hint') ? 'sent' : 'not sent'}`);
  }, { needs: ['session cookie: AWSELBAuthSessionCookie-N, HttpOnly, SameSite=Lax, Path=/'] });

  await test('sign_out expires every session cookie shard (Path=/)', async () => {
    const so = state.signOut;
    await assert(so, 'no sign_out response');
    const cleared = (await setCookies(so)).filter((c) => SESSION_COOKIE.test(c.name));
    const notCleared = state.shards.filter((n) => !cleared.some((c) => c.name === n && cookieIsDeletion(c)));
    await assert(notCleared.length === 0, async () => `not expired: ${notCleared.join(', ')} in ${await describe(so)}`);
    for (const c of cleared) await assert(c.attrs.path === '/', `${c.name} cleared with Path=${c.attrs.path}`);
    const jar = (await context.cookies(PROXY)).map((c) => c.name).filter((n) => SESSION_COOKIE.test(n));
    await assert(jar.length === 0, `browser still holds ${j(jar)}`);
  }, { needs: ['session cookie: AWSELBAuthSessionCookie-N, HttpOnly, SameSite=Lax, Path=/'] });

  await test('the provider confirms the logout and returns to the proxy', async () => {
    await assert(new URL(page.url()).origin === ISSUER_ORIGIN, `not at the provider: ${page.url()}`);
    const yes = page.locator('button[name=logout][value=yes]');
    await assert(await yes.count(), `no logout confirmation at ${page.url()}: ${(await page.textContent('body')).slice(0, 200)}`);
    await yes.click();
    await page.waitForURL((u) => u.origin === PROXY_ORIGIN);
    const u = new URL(page.url());
    await assert(`${u.origin}${u.pathname}` === `${PROXY}/`, `landed at ${page.url()}`);
    await assert((await page.textContent('#path'))?.startsWith('/'), 'the upstream page for / is not shown');
  }, { needs: [SIGN_OUT_CASE] });

  await test('after logout the app page sends the browser to the provider login again', async () => {
    await page.goto(`${PROXY}/app/hello`);
    const u = new URL(page.url());
    await assert(u.origin === ISSUER_ORIGIN, `browser at ${page.url()}, not at the provider`);
    await assert(await page.locator('input[name=login]').count(), `no login form at ${page.url()} (provider session still alive?)`);
  }, { needs: ['the provider confirms the logout and returns to the proxy'] });

  await test('the upstream never saw a session cookie or an /oauth2/ path', async () => {
    const recs = await received();
    const leaks = recs.filter(sessionCookieHeaderLeaks).map((r) => r.url);
    const oauth = recs.filter((r) => r.url.startsWith('/oauth2/')).map((r) => r.url);
    await assert(leaks.length === 0, `session cookie forwarded on ${j(leaks)}`);
    await assert(oauth.length === 0, `forwarded ${j(oauth)}`);
  });
} catch (e) {
  failed += 1;
  console.log(`FAIL harness: ${e?.stack ?? e}`);
} finally {
  clearTimeout(timer);
  await browser.close().catch(() => {});
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
