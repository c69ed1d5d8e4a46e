// The endpoint jwtgate's `type = "lambda"` authorizers call: each POSTed event is handed to
// lambda-local, which runs the unmodified handler file, and the handler's result is the JSON
// answer. A handler error is a 502 (jwtgate then refuses the request). Counts calls.
//
// Usage: node server.mjs          (listens on a free port on 127.0.0.1)
// Prints one JSON line {"url":"http://127.0.0.1:PORT"} once it listens.
//   POST /simple    -> simple-authorizer.js
//   POST /iam       -> iam-authorizer.js
//   POST /failing   -> failing-authorizer.js (always throws: 502)
//   GET  /__calls   -> {"simple": N, "iam": N, "failing": N}
//   /upstream/...   -> 200 {method, url, headers}: the upstream behind jwtgate, echoing
// Stops on SIGTERM/SIGINT.
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import lambdaLocal from 'lambda-local';

const here = path.dirname(fileURLToPath(import.meta.url));
const handlers = {
  '/simple': 'simple-authorizer.js',
  '/iam': 'iam-authorizer.js',
  '/failing': 'failing-authorizer.js',
};
const calls = { simple: 0, iam: 0, failing: 0 };
lambdaLocal.setLogger({ log() {}, info() {}, warn() {}, error: console.error, transports: [] });

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/__calls') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(calls));
    return;
  }
  if (req.url.startsWith('/upstream/')) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }));
    return;
  }
  const file = handlers[req.url];
  if (req.method !== 'POST' || !file) {
    res.writeHead(404).end();
    return;
  }
  calls[req.url.slice(1)] += 1;
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    try {
      const event = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const result = await lambdaLocal.execute({
        event,
        lambdaPath: path.join(here, file),
        lambdaHandler: 'handler',
        timeoutMs: 3000,
        verboseLevel: 0,
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(result));
    } catch (e) {
      console.error('handler failed:', e);
      // The error object as Lambda reports an unhandled error.
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errorType: (e && e.errorType) || 'Error', errorMessage: String((e && e.errorMessage) || e) }));
    }
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}` }));
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
