// Helpers shared by browser-login.mjs and selftest.mjs: the headless browser, an http fetcher for
// aws-jwt-verify's AlbJwtVerifier, and the ALB `x-amzn-oidc-data` format checks.
import { Buffer } from 'node:buffer';
import { chromium } from 'playwright-core';
import { AlbJwtVerifier } from 'aws-jwt-verify';
import { AlbJwksCache } from 'aws-jwt-verify/alb-cache';
import { NonRetryableFetchError } from 'aws-jwt-verify/error';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** True for http(s) URLs on the loopback interface (127.0.0.0/8, localhost, [::1]). */
export function isLoopbackUrl(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return false;
  const h = u.hostname;
  return h === 'localhost' || h === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Debian's Chromium, headless. Playwright gives every launch a fresh temporary user-data-dir
 * (under $TMPDIR) and removes it on close; nothing is downloaded.
 */
export function launchChromium() {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
}

/**
 * A new, empty browser context (no cookies) in which every request that leaves the loopback
 * interface is aborted (the provider's pages import Google Fonts).
 */
export async function newLoopbackContext(browser) {
  const context = await browser.newContext();
  await context.route('**/*', (route) =>
    isLoopbackUrl(route.request().url()) ? route.continue() : route.abort('blockedbyclient'),
  );
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(15_000);
  return context;
}

/**
 * An aws-jwt-verify Fetcher for plain-http loopback key URLs (the library's own fetcher is
 * https-only). Same contract as the library's: resolves to the body as an ArrayBuffer on 200,
 * NonRetryableFetchError otherwise. `fetched` lists the URLs it was asked for.
 */
export function loopbackHttpFetcher() {
  const fetched = [];
  return {
    fetched,
    async fetch(uri) {
      fetched.push(uri);
      if (!isLoopbackUrl(uri)) throw new NonRetryableFetchError(uri, 'refusing to fetch a non-loopback URL');
      const res = await globalThis.fetch(uri, { redirect: 'error', signal: AbortSignal.timeout(5_000) });
      if (res.status !== 200) {
        throw new NonRetryableFetchError(uri, `Status code is ${res.status}, expected 200`);
      }
      return res.arrayBuffer();
    },
  };
}

/**
 * AlbJwtVerifier for jwtgate's signer: keys come from `${keysUrl}/${kid}` (PEM), fetched over http.
 * Returns { verifier, fetcher }.
 */
export function createAlbVerifier({ albArn, issuer, clientId, keysUrl }) {
  const fetcher = loopbackHttpFetcher();
  const verifier = AlbJwtVerifier.create(
    { albArn, issuer, clientId, jwksUri: keysUrl },
    { jwksCache: new AlbJwksCache({ fetcher }) },
  );
  return { verifier, fetcher };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** base64url with `=` padding, as ALB writes each segment. */
export function b64urlPadded(bytes) {
  const s = Buffer.from(bytes).toString('base64url');
  return s + '='.repeat((4 - (s.length % 4)) % 4);
}

/**
 * Checks the ALB shape of an `x-amzn-oidc-data` value: three base64url segments, each carrying
 * exactly the `=` padding its length requires (none when it needs none), canonical encoding,
 * a 64-byte raw r||s signature, and the ALB header fields. Returns
 * { problems: [string], header, payload, segments: [{length, padding}] }.
 */
export function inspectAlbToken(token, { issuer, clientId, albArn }) {
  const problems = [];
  const segs = String(token).split('.');
  if (segs.length !== 3) return { problems: [`expected 3 segments, got ${segs.length}`], segments: [] };
  const names = ['header', 'payload', 'signature'];
  const decoded = [];
  const segments = [];
  segs.forEach((seg, i) => {
    const m = /^([A-Za-z0-9_-]+)(=*)$/.exec(seg);
    if (!m) {
      problems.push(`${names[i]} segment is not base64url (with optional = padding)`);
      decoded.push(null);
      return;
    }
    const [, raw, pad] = m;
    const want = (4 - (raw.length % 4)) % 4;
    segments.push({ name: names[i], length: seg.length, padding: pad.length });
    if (raw.length % 4 === 1) problems.push(`${names[i]} segment has an impossible base64 length ${raw.length}`);
    if (pad.length !== want) {
      problems.push(`${names[i]} segment: ${pad.length} '=' but its length ${raw.length} needs ${want}`);
    }
    const bytes = Buffer.from(raw, 'base64url');
    if (bytes.toString('base64url') !== raw) problems.push(`${names[i]} segment is not canonical base64url`);
    // Decoding with the padding must give the same bytes as without it.
    if (!Buffer.from(seg.replace(/-/g, '+').replace(/_/g, '/'), 'base64').equals(bytes)) {
      problems.push(`${names[i]} segment decodes differently with its padding`);
    }
    decoded.push(bytes);
  });
  let header;
  let payload;
  try {
    if (decoded[0]) header = JSON.parse(decoded[0].toString('utf8'));
  } catch (e) {
    problems.push(`header is not JSON: ${e.message}`);
  }
  try {
    if (decoded[1]) payload = JSON.parse(decoded[1].toString('utf8'));
  } catch (e) {
    problems.push(`payload is not JSON: ${e.message}`);
  }
  if (decoded[2] && decoded[2].length !== 64) {
    problems.push(`signature is ${decoded[2].length} bytes, expected 64 (raw r||s for ES256)`);
  }
  if (header) {
    if (header.typ !== 'JWT') problems.push(`header typ ${JSON.stringify(header.typ)}, expected "JWT"`);
    if (header.alg !== 'ES256') problems.push(`header alg ${JSON.stringify(header.alg)}, expected "ES256"`);
    if (typeof header.kid !== 'string' || !UUID.test(header.kid)) {
      problems.push(`header kid ${JSON.stringify(header.kid)} is not a UUID`);
    }
    if (header.iss !== issuer) problems.push(`header iss ${JSON.stringify(header.iss)}, expected ${JSON.stringify(issuer)}`);
    if (header.client !== clientId) {
      problems.push(`header client ${JSON.stringify(header.client)}, expected ${JSON.stringify(clientId)}`);
    }
    if (header.signer !== albArn) {
      problems.push(`header signer ${JSON.stringify(header.signer)}, expected ${JSON.stringify(albArn)}`);
    }
    if (typeof header.exp !== 'number') problems.push(`header exp ${JSON.stringify(header.exp)} is not a number`);
  }
  if (payload) {
    if (payload.iss !== issuer) problems.push(`payload iss ${JSON.stringify(payload.iss)}, expected ${JSON.stringify(issuer)}`);
    if (typeof payload.exp !== 'number') problems.push(`payload exp ${JSON.stringify(payload.exp)} is not a number`);
    else if (payload.exp <= Date.now() / 1000) problems.push(`payload exp ${payload.exp} is in the past`);
  }
  return { problems, header, payload, segments };
}

/**
 * The same token with exactly one byte of the decoded payload changed (re-encoded with the same
 * padding rule), header and signature untouched. The byte is inside the first string value
 * of `claim`, so the payload stays valid JSON and only the signature can refuse it.
 */
export function tamperPayloadByte(token, claim = 'email') {
  const [h, p, s] = token.split('.');
  const bytes = Buffer.from(p.replace(/=+$/, ''), 'base64url');
  const text = bytes.toString('utf8');
  const keyAt = text.indexOf(`"${claim}":"`);
  if (keyAt < 0) throw new Error(`payload has no string claim ${claim}`);
  const at = keyAt + claim.length + 4; // first character of the value
  const out = Buffer.from(bytes);
  out[at] = out[at] === 0x61 ? 0x62 : 0x61; // 'a' <-> 'b' (or anything -> 'a')
  const tampered = b64urlPadded(out);
  const padded = /=$/.test(p) || p.replace(/=+$/, '').length % 4 === 0;
  return [h, padded ? tampered : tampered.replace(/=+$/, ''), s].join('.');
}

/** Parses one Set-Cookie header value: { name, value, attrs: {lower-case name: value|true} }. */
export function parseSetCookie(line) {
  const [pair, ...rest] = line.split(';');
  const eq = pair.indexOf('=');
  const attrs = {};
  for (const part of rest) {
    const p = part.trim();
    if (!p) continue;
    const i = p.indexOf('=');
    if (i < 0) attrs[p.toLowerCase()] = true;
    else attrs[p.slice(0, i).trim().toLowerCase()] = p.slice(i + 1).trim();
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs, raw: line };
}

/** True when a parsed Set-Cookie deletes its cookie (Max-Age <= 0 or Expires in the past). */
export function cookieIsDeletion(c) {
  if (c.attrs['max-age'] !== undefined && Number(c.attrs['max-age']) <= 0) return true;
  if (c.attrs.expires !== undefined) {
    const t = Date.parse(c.attrs.expires);
    if (!Number.isNaN(t) && t <= Date.now()) return true;
  }
  return false;
}
