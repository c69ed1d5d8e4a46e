// The upstream behind jwtgate in the browser-login interop test: records every request it gets.
//
// Usage: node upstream.mjs [--port N]        (default 0: any free port on 127.0.0.1)
// Prints one JSON line {"upstream":"http://127.0.0.1:PORT"} on stdout once it listens.
//   GET /__received  -> 200 application/json: [{method, url, headers}, ...] in arrival order
//                       (headers as node gives them: lower-case names; repeated ones joined);
//                       this request itself is not recorded
//   anything else    -> recorded, then 200 text/html: a small page that shows the method and path
// Stops on SIGTERM/SIGINT.
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: { port: { type: 'string', default: process.env.UPSTREAM_PORT ?? '0' } },
});

const received = [];

const escapeHtml = (s) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/__received') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(received));
    return;
  }
  received.push({ method: req.method, url: req.url, headers: req.headers });
  req.resume(); // drain any body
  req.on('end', () => {
    const body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>upstream ${escapeHtml(req.url)}</title></head>
<body><h1>upstream</h1><p id="path">${escapeHtml(req.url)}</p><p id="method">${escapeHtml(req.method)}</p></body></html>
`;
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  });
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
process.stdout.write(`${JSON.stringify({ upstream: `http://127.0.0.1:${server.address().port}` })}\n`);

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
