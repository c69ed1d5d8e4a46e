// Two sign-in providers behind one jwtgate, in a real browser: `[login]` (provider A, routes
// /app/**) and `[[logins]]` "staff" (provider B, routes /admin/**), each a real oidc-provider of
// its own. run.sh starts everything and calls this after browser-login.mjs.
//
// Usage: node browser-logins.mjs --proxy URL --issuer URL --staff-issuer URL --upstream URL
// Prints "ok  <case>" / "FAIL <case>: ..." lines and "N passed, M failed"; exit 1 on any failure.
// On the first failure a screenshot of the page goes to <repo>/target/interop-oidc-logins-failure.png.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isLoopbackUrl, launchChromium, newLoopbackContext } from './lib.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../../..');
const SCREENSHOT = path.join(REPO, 'target', 'interop-oidc-logins-failure.png');

const { values: opt } = parseArgs({
  options: {
    proxy: { type: 'string' },
    issuer: { type: 'string' },
    'staff-issuer': { type: 'string' },
    upstream: { type: 'string' },
  },
});
for (const k of ['proxy', 'issuer', 'staff-issuer', 'upstream']) {
  if (!opt[k]) {
    console.error(`missing --${k}`);
    process.exit(2);
  }
}
const PROXY = opt.proxy.replace(/\/+$/, '');
const UPSTREAM = opt.upstream.replace(/\/+$/, '');
const PROXY_ORIGIN = new URL(PROXY).origin;
const A_ORIGIN = new URL(opt.issuer).origin;
const B_ORIGIN = new URL(opt['staff-issuer']).origin;
const A_COOKIE = /^AWSELBAuthSessionCookie-\d+$/;
const B_COOKIE = /^AWSELBAuthSessionCookie\.staff-\d+$/;

for (const u of [PROXY, A_ORIGIN, B_ORIGIN, UPSTREAM]) {
  if (!isLoopbackUrl(u)) throw new Error(`not a loopback URL: ${u}`);
}

let passed = 0;
let failed = 0;
let screenshotTaken = false;
let page = null;
const done = new Set();

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
    if (!screenshotTaken && page && !page.isClosed()) {
      screenshotTaken = true;
      try {
        fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
        await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 5_000 });
        console.log(`     screenshot of ${page.url().slice(0, 120)} -> ${path.relative(process.cwd(), SCREENSHOT)}`);
      } catch (se) {
        console.log(`     (no screenshot: ${se.message})`);
      }
    }
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
const j = (v) => JSON.stringify(v);

async function received(urlPath) {
  const res = await fetch(`${UPSTREAM}/__received`);
  return (await res.json()).filter((r) => r.url === urlPath);
}

/** Logs in at the provider page the browser is on, consents, and waits to be back at the proxy. */
async function loginAtProvider(login) {
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any-password');
  await page.click('button[type=submit]');
  await page.waitForURL((u) => u.origin === PROXY_ORIGIN || u.pathname.startsWith('/interaction/'));
  if (new URL(page.url()).origin !== PROXY_ORIGIN) {
    const consent = page.getByRole('button', { name: 'Continue' });
    if (await consent.count()) await consent.click();
  }
  await page
    .waitForURL((u) => u.origin === PROXY_ORIGIN && !u.pathname.startsWith('/oauth2/'), { timeout: 15_000 })
    .catch(() => {});
}

/** The browser is at `origin`'s login form. */
async function atLoginForm(origin) {
  const u = new URL(page.url());
  assert(u.origin === origin, `browser at ${page.url()}, expected the provider at ${origin}`);
  assert(await page.locator('input[name=login]').count(), `no login form at ${page.url()}`);
}

async function proxyCookies(context) {
  return (await context.cookies(PROXY)).map((c) => c.name);
}

const browser = await launchChromium();
const timer = setTimeout(() => {
  console.log('FAIL timeout: the test did not finish within 180 s');
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, 180_000);

try {
  const context = await newLoopbackContext(browser);
  page = await context.newPage();

  const A_IN = "sign in at provider A on A's route";
  await test(A_IN, async () => {
    await page.goto(`${PROXY}/app/two-a`);
    await atLoginForm(A_ORIGIN);
    await loginAtProvider('alice');
    assert(page.url() === `${PROXY}/app/two-a`, `browser at ${page.url()}`);
    assert((await page.textContent('#path')) === '/app/two-a', 'the upstream page is not shown');
    const recs = await received('/app/two-a');
    assert(recs.length === 1 && recs[0].headers['x-amzn-oidc-identity'] === 'alice', `upstream saw ${j(recs)}`);
  });

  await test("A's route works with A's session", async () => {
    const res = await page.goto(`${PROXY}/app/two-a-again`);
    assert(res.request().redirectedFrom() === null && res.status() === 200, `got ${res.status()} at ${page.url()}`);
  }, { needs: [A_IN] });

  const B_REFUSES = "B's route sends the browser to B's provider, A's session is not accepted";
  await test(B_REFUSES, async () => {
    await page.goto(`${PROXY}/admin/two-b`);
    await atLoginForm(B_ORIGIN);
    const recs = await received('/admin/two-b');
    assert(recs.length === 0, `the upstream got /admin/two-b with A's session: ${j(recs)}`);
  }, { needs: [A_IN] });

  const B_IN = 'sign in at provider B too; both sessions are kept';
  await test(B_IN, async () => {
    await loginAtProvider('bob');
    assert(page.url() === `${PROXY}/admin/two-b`, `browser at ${page.url()}`);
    const recs = await received('/admin/two-b');
    assert(recs.length === 1 && recs[0].headers['x-amzn-oidc-identity'] === 'bob', `upstream saw ${j(recs)}`);
    const names = await proxyCookies(context);
    assert(names.some((n) => A_COOKIE.test(n)), `no A session cookie in ${j(names)}`);
    assert(names.some((n) => B_COOKIE.test(n)), `no B session cookie in ${j(names)}`);
    const res = await page.goto(`${PROXY}/app/two-a-with-both`);
    assert(res.status() === 200 && page.url() === `${PROXY}/app/two-a-with-both`, `A's route: ${res.status()} at ${page.url()}`);
    const a = await received('/app/two-a-with-both');
    assert(a.length === 1 && a[0].headers['x-amzn-oidc-identity'] === 'alice', `A's route saw ${j(a)}`);
  }, { needs: [B_REFUSES] });

  await test('neither session cookie reaches the upstream', async () => {
    const all = await (await fetch(`${UPSTREAM}/__received`)).json();
    const leaks = all.filter((r) => /(^|;\s*)(AWSELBAuthSessionCookie|jwtgate-login-state)/.test(r.headers.cookie ?? ''));
    assert(leaks.length === 0, `cookies forwarded on ${j(leaks.map((r) => r.url))}`);
  }, { needs: [B_IN] });

  const A_OUT = "logout of A ends A's session only (and A's provider session)";
  await test(A_OUT, async () => {
    await page.goto(`${PROXY}/oauth2/sign_out`);
    assert(new URL(page.url()).origin === A_ORIGIN, `sign_out went to ${page.url()}, not provider A`);
    const yes = page.locator('button[name=logout][value=yes]');
    assert(await yes.count(), `no logout confirmation at ${page.url()}`);
    await yes.click();
    await page.waitForURL((u) => u.origin === PROXY_ORIGIN);
    const names = await proxyCookies(context);
    assert(!names.some((n) => A_COOKIE.test(n)), `A's cookies still there: ${j(names)}`);
    assert(names.some((n) => B_COOKIE.test(n)), `B's cookies went too: ${j(names)}`);
  }, { needs: [B_IN] });

  await test("after A's logout A's route asks for a login at A", async () => {
    await page.goto(`${PROXY}/app/two-a-after`);
    await atLoginForm(A_ORIGIN);
    assert((await received('/app/two-a-after')).length === 0, 'the upstream got it');
  }, { needs: [A_OUT] });

  await test("after A's logout B's route still works with B's session", async () => {
    const res = await page.goto(`${PROXY}/admin/two-b-after`);
    assert(res.request().redirectedFrom() === null && res.status() === 200, `got ${res.status()} at ${page.url()}`);
    const recs = await received('/admin/two-b-after');
    assert(recs.length === 1 && recs[0].headers['x-amzn-oidc-identity'] === 'bob', `upstream saw ${j(recs)}`);
  }, { needs: [A_OUT] });
} catch (e) {
  failed += 1;
  console.log(`FAIL harness: ${e?.stack ?? e}`);
} finally {
  clearTimeout(timer);
  await browser.close().catch(() => {});
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
