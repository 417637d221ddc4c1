// server.js — the local HTTP/HTTPS fixture for the http specs.
//
//   node server.js <portfile> [parent-pid]
//
// Listens on 127.0.0.1, port 0, once for HTTP and once for HTTPS (a
// throw-away self-signed certificate for CN=localhost made with the openssl
// CLI at start), then writes {"http":P,"https":Q} to <portfile> (atomically:
// temp file + rename). No dependencies beyond Node itself. It exits on
// SIGTERM, when the parent pid disappears, or after an hour at the latest,
// so a crashed test run leaves nothing behind.
//
// Endpoints (same on both ports):
//   /echo                 JSON: method, path, query, headers, body_b64, body_length
//   /status/<n>           status n
//   /headers?k=v&k=w      response headers from the query (repeats → repeated header lines)
//   /json                 a valid JSON document
//   /html, /html/502      an HTML error page with 200, or with 502
//   /bytes/<n>[?chunked=1] n bytes (byte i = i % 256); chunked omits Content-Length
//   /slow/<ms>            answers after ms milliseconds
//   /stall                accepts, never answers
//   /redirect?to=<url>&code=<n>  redirect (302 by default)
//   /conn                 JSON: the remote port of this socket (keep-alive proof)
//   /requests             JSON: count, max_inflight, log [{method, path, headers}]
//   /reset                clears the log, counters and /fail state
//   /retry-after/<s>      429 with Retry-After: s
//   /fail/<n>[?json=1]    the next n requests to it get 503, then 200 (JSON {"ok":true} with json=1)
//   /limited/<n>/<s>      the next n requests to it get 429 with Retry-After: s, then 200 (JSON)
"use strict";

const http = require("http");
const https = require("https");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { execFileSync } = require("child_process");

const portfile = process.argv[2];
const parent = Number(process.argv[3] || 0);
if (!portfile) {
  process.stderr.write("usage: node server.js <portfile> [parent-pid]\n");
  process.exit(2);
}

// A fixture must not die of a client hanging up: log and carry on.
process.on("uncaughtException", (err) => {
  try { process.stderr.write(`server.js: ${err && err.stack || err}\n`); } catch (_) { /* EPIPE */ }
});
process.stdout.on("error", () => {});
process.stderr.on("error", () => {});

let log = [];
let count = 0;
let inflight = 0;
let maxInflight = 0;
let failState = new Map();
const stalled = new Set();

function send(res, status, body, headers) {
  if (res.writableEnded || res.destroyed) return;
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(String(body));
  res.writeHead(status, Object.assign({ "Content-Length": buf.length }, headers || {}));
  res.end(buf);
}

function json(res, status, obj, headers) {
  send(res, status, JSON.stringify(obj), Object.assign({ "Content-Type": "application/json" }, headers || {}));
}

const HTML = (code) => `<!DOCTYPE html>
<html>
<head><title>${code} Bad Gateway</title></head>
<body>
<h1>Error ${code}</h1>
<p>The upstream server is not responding.\tPlease try again later.</p>
</body>
</html>
`;

function bytes(res, n, chunked) {
  const headers = { "Content-Type": "application/octet-stream" };
  if (!chunked) headers["Content-Length"] = n;
  res.writeHead(200, headers);
  const CHUNK = 65536;
  const pattern = Buffer.alloc(CHUNK);
  for (let i = 0; i < CHUNK; i++) pattern[i] = i % 256; // CHUNK % 256 == 0, so the pattern continues
  let sent = 0;
  const pump = () => {
    while (sent < n) {
      const len = Math.min(CHUNK, n - sent);
      sent += len;
      if (!res.write(len === CHUNK ? pattern : pattern.subarray(0, len))) {
        res.once("drain", pump);
        return;
      }
    }
    res.end();
  };
  res.on("close", () => { sent = n; }); // client gave up: stop producing
  pump();
}

function handle(req, res, body) {
  const url = new URL(req.url, "http://placeholder");
  const p = url.pathname;
  let m;
  if (p === "/echo") {
    const query = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    return json(res, 200, {
      method: req.method, path: p, query, raw_query: url.search.slice(1),
      headers: req.headers, body_b64: body.toString("base64"), body_length: body.length,
    });
  }
  if ((m = p.match(/^\/status\/(\d{3})$/))) return send(res, Number(m[1]), `status ${m[1]}\n`);
  if (p === "/headers") {
    const headers = {};
    for (const k of new Set(url.searchParams.keys())) headers[k] = url.searchParams.getAll(k);
    return send(res, 200, "headers\n", headers);
  }
  if (p === "/json") return json(res, 200, { ok: true, items: [1, 2, 3], name: "runbook" });
  if (p === "/html") return send(res, 200, HTML(200), { "Content-Type": "text/html" });
  if (p === "/html/502") return send(res, 502, HTML(502), { "Content-Type": "text/html" });
  if ((m = p.match(/^\/bytes\/(\d+)$/))) return bytes(res, Number(m[1]), url.searchParams.get("chunked") === "1");
  if ((m = p.match(/^\/slow\/(\d+)$/))) {
    const t = setTimeout(() => send(res, 200, `slow ${m[1]}\n`), Number(m[1]));
    res.on("close", () => clearTimeout(t));
    return;
  }
  if (p === "/stall") {
    stalled.add(res);
    res.on("close", () => stalled.delete(res));
    return;
  }
  if (p === "/redirect") {
    const to = url.searchParams.get("to") || "/echo";
    const code = Number(url.searchParams.get("code") || 302);
    return send(res, code, `redirect to ${to}\n`, { Location: to });
  }
  if (p === "/conn") return json(res, 200, { port: req.socket.remotePort });
  if (p === "/requests") return json(res, 200, { count, max_inflight: maxInflight, log });
  if (p === "/reset") {
    log = []; count = 0; maxInflight = 0; failState = new Map();
    return json(res, 200, { reset: true });
  }
  if ((m = p.match(/^\/retry-after\/(\d+)$/))) return send(res, 429, "slow down\n", { "Retry-After": m[1] });
  if ((m = p.match(/^\/limited\/(\d+)\/(\d+)$/))) {
    const left = failState.has(p) ? failState.get(p) : Number(m[1]);
    if (left > 0) {
      failState.set(p, left - 1);
      return send(res, 429, "slow down\n", { "Retry-After": m[2] });
    }
    return json(res, 200, { ok: true });
  }
  if ((m = p.match(/^\/fail\/(\d+)$/))) {
    const left = failState.has(p) ? failState.get(p) : Number(m[1]);
    if (left > 0) {
      failState.set(p, left - 1);
      return send(res, 503, `failing, ${left - 1} more\n`);
    }
    failState.set(p, 0);
    if (url.searchParams.get("json")) return json(res, 200, { ok: true });
    return send(res, 200, "recovered\n");
  }
  return send(res, 404, "not found\n");
}

function onRequest(req, res) {
  req.on("error", () => {});
  res.on("error", () => {});
  const p = req.url.split("?")[0];
  const bookkeeping = p === "/requests" || p === "/reset";
  if (!bookkeeping) {
    count++;
    log.push({ method: req.method, path: req.url, headers: req.headers });
    inflight++;
    if (inflight > maxInflight) maxInflight = inflight;
    let counted = true;
    const done = () => { if (counted) { counted = false; inflight--; } };
    res.on("finish", done);
    res.on("close", done);
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    try {
      handle(req, res, Buffer.concat(chunks));
    } catch (err) {
      try { send(res, 500, `server.js: ${err.message}\n`); } catch (_) { /* gone */ }
    }
  });
}

function harden(server) {
  server.keepAliveTimeout = 60000;
  server.headersTimeout = 65000;
  server.requestTimeout = 0;
  server.on("clientError", (err, socket) => { socket.destroy(); });
  server.on("tlsClientError", () => {});
  server.on("error", (err) => {
    process.stderr.write(`server.js: ${err.message}\n`);
    process.exit(1);
  });
  return server;
}

function selfSigned() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "runbook-tls-"));
  const key = path.join(dir, "key.pem");
  const cert = path.join(dir, "cert.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    "-subj", "/CN=localhost", "-keyout", key, "-out", cert], { stdio: "ignore" });
  const pair = { key: fs.readFileSync(key), cert: fs.readFileSync(cert) };
  fs.rmSync(dir, { recursive: true, force: true });
  return pair;
}

const plain = harden(http.createServer(onRequest));
const secure = harden(https.createServer(selfSigned(), onRequest));

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

function shutdown() {
  for (const res of stalled) res.destroy();
  plain.close();
  secure.close();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
process.on("SIGPIPE", () => {});

Promise.all([listen(plain), listen(secure)]).then(([hp, sp]) => {
  const tmp = `${portfile}.tmp${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify({ http: hp, https: sp }));
  fs.renameSync(tmp, portfile);
});

// never outlive the test run
if (parent > 0) {
  setInterval(() => {
    try { process.kill(parent, 0); } catch (err) { if (err.code === "ESRCH") shutdown(); }
  }, 1000).unref();
}
setTimeout(shutdown, 3600 * 1000).unref();
