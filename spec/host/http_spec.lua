-- http: the core client (runbook.http.core) and the face (runbook.http)
-- against the local fixture server (spec/helpers/server.js) on 127.0.0.1.
local core = require("runbook.http.core")
local http = require("runbook.http")
local cjson = require("cjson")
local ts = require("testserver")

local srv

-- base64, to compare what the server saw with what was sent
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return (s:gsub("..?.?", function(c)
    local a, b, d = c:byte(1, 3)
    local n = a * 65536 + (b or 0) * 256 + (d or 0)
    local out = {}
    for i = 1, 4 do
      local v = (n >> (6 * (4 - i))) & 63
      out[i] = B64:sub(v + 1, v + 1)
    end
    if not b then out[3], out[4] = "=", "=" elseif not d then out[4] = "=" end
    return table.concat(out)
  end))
end

local function urlencode(s)
  return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- every byte value, NULs included
local all_bytes = {}
for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(i) end
all_bytes = table.concat(all_bytes)

local function pattern_bytes(n)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = string.char(i % 256) end
  return table.concat(t)
end

-- what the server logged since the last /reset
local function server_log()
  local c = core.client()
  local resp = assert(c:request({ url = srv.url .. "/requests", timeout = 5 }))
  c:close()
  return cjson.decode(resp.body)
end

local function reset()
  local c = core.client()
  assert(c:request({ url = srv.url .. "/reset", timeout = 5 }))
  c:close()
end

-- a port with nothing listening: a port the server held and released would
-- race, port 1 is privileged and unused on a test machine
local CLOSED = "http://127.0.0.1:1/"
-- a 64-character DNS label: glibc refuses it without asking any resolver,
-- so the DNS failure path is exercised with no network traffic
local BAD_HOST = "http://" .. ("a"):rep(64) .. ".invalid/"

setup(function() srv = ts.start() end)
teardown(function() if srv then srv.stop() end end)

describe("http core: client:request", function()
  local c
  before_each(function()
    c = core.client()
    reset()
  end)
  after_each(function() c:close() end)

  it("sends GET, POST, PUT, DELETE and their bodies", function()
    for _, m in ipairs({ "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS" }) do
      local body = (m ~= "GET") and (m:lower() .. " body") or nil
      local resp, err = c:request({ method = m, url = srv.url .. "/echo?x=1", body = body, timeout = 5 })
      assert.is_nil(err)
      assert.equals(200, resp.status)
      local echo = cjson.decode(resp.body)
      assert.equals(m, echo.method)
      assert.equals("1", echo.query.x)
      assert.equals(body and #body or 0, echo.body_length)
      assert.equals(b64(body or ""), echo.body_b64)
    end
  end)

  it("sends an empty body with POST and PUT (Content-Length: 0)", function()
    for _, m in ipairs({ "POST", "PUT" }) do
      local resp = assert(c:request({ method = m, url = srv.url .. "/echo", timeout = 5 }))
      local echo = cjson.decode(resp.body)
      assert.equals(m, echo.method)
      assert.equals("0", echo.headers["content-length"])
    end
  end)

  it("HEAD returns status and headers without a body", function()
    local resp = assert(c:request({ method = "HEAD", url = srv.url .. "/bytes/1000", timeout = 5 }))
    assert.equals(200, resp.status)
    assert.equals("", resp.body)
    assert.equals("1000", resp.headers["content-length"])
    assert.equals("HEAD", server_log().log[1].method)
  end)

  it("does not add a Content-Type or Expect header of its own", function()
    local resp = assert(c:request({ method = "POST", url = srv.url .. "/echo", body = ("x"):rep(2 * 1024 * 1024),
      timeout = 10 }))
    local echo = cjson.decode(resp.body)
    assert.equals(2 * 1024 * 1024, echo.body_length)
    assert.is_nil(echo.headers["content-type"])
    assert.is_nil(echo.headers["expect"])
  end)

  it("sends request headers, including an empty one, and keeps a given Content-Type", function()
    local resp = assert(c:request({ method = "POST", url = srv.url .. "/echo", timeout = 5, body = "{}",
      headers = { ["X-Name"] = "value 1", ["X-Empty"] = "", ["Content-Type"] = "application/json", ["X-Num"] = 42 } }))
    local h = cjson.decode(resp.body).headers
    assert.equals("value 1", h["x-name"])
    assert.equals("", h["x-empty"])
    assert.equals("application/json", h["content-type"])
    assert.equals("42", h["x-num"])
  end)

  it("returns response headers lower-cased, repeated ones joined with ', '", function()
    local resp = assert(c:request({ url = srv.url .. "/headers?X-Multi=one&X-Multi=two&X-Single=only",
      timeout = 5 }))
    assert.equals("one, two", resp.headers["x-multi"])
    assert.equals("only", resp.headers["x-single"])
    assert.is_nil(resp.headers["X-Single"])
    assert.equals("8", resp.headers["content-length"])
  end)

  it("round-trips binary bodies both ways", function()
    local resp = assert(c:request({ method = "PUT", url = srv.url .. "/echo", body = all_bytes, timeout = 5 }))
    local echo = cjson.decode(resp.body)
    assert.equals(256, echo.body_length)
    assert.equals(b64(all_bytes), echo.body_b64)
    resp = assert(c:request({ url = srv.url .. "/bytes/70000", timeout = 5 }))
    assert.equals(70000, #resp.body)
    assert.equals(pattern_bytes(70000), resp.body)
  end)

  it("reports the status of the final response, never following a redirect", function()
    local resp = assert(c:request({ url = srv.url .. "/redirect?to=/echo&code=307", timeout = 5 }))
    assert.equals(307, resp.status)
    assert.equals("/echo", resp.headers.location)
    assert.equals(1, server_log().count)
    resp = assert(c:request({ url = srv.url .. "/status/503", timeout = 5 }))
    assert.equals(503, resp.status)
    assert.equals("status 503\n", resp.body)
  end)

  it("gives the effective URL and timings in seconds", function()
    local resp = assert(c:request({ url = srv.url .. "/json", timeout = 5 }))
    assert.equals(srv.url .. "/json", resp.url)
    for _, k in ipairs({ "total", "namelookup", "connect", "tls", "ttfb" }) do
      assert.is_number(resp.time[k])
      assert.is_true(resp.time[k] >= 0 and resp.time[k] < 5, k)
    end
    assert.is_true(resp.time.total >= resp.time.ttfb)
  end)

  it("keeps the connection alive across requests and into a batch", function()
    local a = cjson.decode(assert(c:request({ url = srv.url .. "/conn", timeout = 5 })).body).port
    local b = cjson.decode(assert(c:request({ url = srv.url .. "/conn", timeout = 5 })).body).port
    assert.equals(a, b)
    local res = c:batch({ { url = srv.url .. "/conn", timeout = 5 } }, { concurrency = 1 })
    assert.equals(a, cjson.decode(res[1].body).port)
    -- a second client has its own connections
    local other = core.client()
    local o = cjson.decode(assert(other:request({ url = srv.url .. "/conn", timeout = 5 })).body).port
    other:close()
    assert.not_equals(a, o)
  end)

  it("refused connection -> ECONNREFUSED", function()
    local resp, err, code = c:request({ url = CLOSED, timeout = 5 })
    assert.is_nil(resp)
    assert.equals("ECONNREFUSED", code)
    assert.matches("^GET http://127%.0%.0%.1:1/: .+", err)
  end)

  it("unresolvable host -> DNS", function()
    local resp, err, code = c:request({ url = BAD_HOST, timeout = 5 })
    assert.is_nil(resp)
    assert.equals("DNS", code)
    assert.matches("resolve", err)
  end)

  it("a server that never answers -> TIMEOUT after the timeout", function()
    local resp, err, code = c:request({ url = srv.url .. "/stall", timeout = 0.5 })
    assert.is_nil(resp)
    assert.equals("TIMEOUT", code)
    assert.matches("^GET http://127%.0%.0%.1:%d+/stall: .*[Tt]imed out", err)
  end)

  it("a self-signed certificate -> TLS with curl's reason; insecure = true accepts it", function()
    local resp, err, code = c:request({ url = srv.https_url .. "/json", timeout = 5 })
    assert.is_nil(resp)
    assert.equals("TLS", code)
    assert.matches("self%-signed certificate", err)
    resp = assert(c:request({ url = srv.https_url .. "/json", timeout = 5, insecure = true }))
    assert.equals(200, resp.status)
    assert.is_true(cjson.decode(resp.body).ok)
    resp, err, code = c:request({ url = srv.https_url .. "/json", timeout = 5, insecure = false })
    assert.is_nil(resp, err)
    assert.is_nil(resp)
    assert.equals("TLS", code)
  end)

  it("max_body -> TOO_LARGE, with or without a Content-Length", function()
    for _, q in ipairs({ "", "?chunked=1" }) do
      local resp, err, code = c:request({ url = srv.url .. "/bytes/10485760" .. q, timeout = 10,
        max_body = 1024 * 1024 })
      assert.is_nil(resp, q)
      assert.equals("TOO_LARGE", code, q)
      assert.matches("exceeds max_body %(1048576 bytes%)", err)
    end
    local resp = assert(c:request({ url = srv.url .. "/bytes/5000?chunked=1", timeout = 5, max_body = 5000 }))
    assert.equals(5000, #resp.body)
    -- the client is still usable after an aborted transfer
    assert.equals(200, assert(c:request({ url = srv.url .. "/json", timeout = 5 })).status)
  end)

  it("never puts header values, the body or URL credentials in a message", function()
    local _, err = c:request({ method = "POST", url = "http://alice:hunter22@127.0.0.1:1/x", timeout = 5,
      headers = { Authorization = "Bearer sekrit-token" }, body = "password=opensesame" })
    assert.matches("^POST http://127%.0%.0%.1:1/x: ", err)
    assert.not_matches("hunter22", err)
    assert.not_matches("alice", err)
    assert.not_matches("sekrit", err)
    assert.not_matches("opensesame", err)
  end)

  it("refuses schemes other than http and https", function()
    local resp, _, code = c:request({ url = "file:///etc/passwd", timeout = 5 })
    assert.is_nil(resp)
    assert.equals("EHTTP", code)
  end)

  it("raises on misuse", function()
    local u = srv.url .. "/echo"
    assert.has_error(function() c:request({ url = u }) end, "request: field 'timeout' is required (seconds)")
    assert.has_error(function() c:request({ url = u, timeout = 0 }) end)
    assert.has_error(function() c:request({ url = u, timeout = 5, timeuot = 5 }) end,
      "request: unknown field 'timeuot'")
    assert.has_error(function() c:request({ timeout = 5 }) end, "request: field 'url' must be a string")
    assert.has_error(function() c:request({ url = u, timeout = 5, method = "GET /x" }) end)
    assert.has_error(function() c:request({ url = u, timeout = 5, headers = { ["X-A"] = "a\r\nX-B: b" } }) end,
      "request: header value contains CR, LF or NUL")
    assert.has_error(function() c:request({ url = u, timeout = 5, headers = { ["Bad Name"] = "x" } }) end)
    assert.has_error(function() c:request({ url = u, timeout = 5, method = "HEAD", body = "x" }) end)
    assert.has_error(function() c:request({ url = u, timeout = 5, max_body = -1 }) end)
    assert.has_error(function() c:request({ url = u, timeout = 5, insecure = "yes" }) end)
    assert.has_error(function() c:request("http://x") end)
    -- and is still usable afterwards
    assert.equals(200, assert(c:request({ url = u, timeout = 5 })).status)
  end)
end)

describe("http core: client:batch", function()
  local c
  before_each(function()
    c = core.client()
    reset()
  end)
  after_each(function() c:close() end)

  it("returns results in input order with at most `concurrency` in flight", function()
    local reqs = {}
    for i = 1, 12 do
      -- later requests finish sooner, so completion order is not input order
      reqs[i] = { url = ("%s/slow/%d?i=%d"):format(srv.url, 260 - i * 20, i), timeout = 10 }
    end
    local res = c:batch(reqs, { concurrency = 3 })
    assert.equals(12, #res)
    for i = 1, 12 do
      assert.equals(200, res[i].status, i)
      assert.equals(("slow %d\n"):format(260 - i * 20), res[i].body)
      assert.equals(reqs[i].url, res[i].url)
    end
    local log = server_log()
    assert.equals(12, log.count)
    assert.is_true(log.max_inflight <= 3, "saw " .. log.max_inflight .. " in flight")
    assert.is_true(log.max_inflight > 1, "requests did not overlap")
  end)

  it("reports failures in place as { error, code }", function()
    local res = c:batch({
      { url = srv.url .. "/json", timeout = 5 },
      { url = CLOSED, timeout = 5 },
      { url = srv.url .. "/stall", timeout = 0.5 },
      { url = srv.url .. "/bytes/100000", timeout = 5, max_body = 10 },
      { method = "POST", url = srv.url .. "/echo", timeout = 5, body = all_bytes },
    }, { concurrency = 5 })
    assert.equals(200, res[1].status)
    assert.same({ "ECONNREFUSED", "TIMEOUT", "TOO_LARGE" }, { res[2].code, res[3].code, res[4].code })
    assert.matches("^GET http://127%.0%.0%.1:1/: ", res[2].error)
    assert.equals(b64(all_bytes), cjson.decode(res[5].body).body_b64)
  end)

  it("handles an empty list and more requests than connections", function()
    assert.same({}, c:batch({}))
    local reqs = {}
    for i = 1, 40 do reqs[i] = { url = srv.url .. "/echo?i=" .. i, timeout = 5 } end
    local res = c:batch(reqs) -- default concurrency 16
    for i = 1, 40 do assert.equals(tostring(i), cjson.decode(res[i].body).query.i) end
  end)

  it("validates every request before sending any", function()
    assert.has_error(function()
      c:batch({ { url = srv.url .. "/echo", timeout = 5 }, { url = srv.url .. "/echo" } })
    end, "batch request #2: field 'timeout' is required (seconds)")
    assert.has_error(function() c:batch({ { url = srv.url, timeout = 5 } }, { concurrency = 0 }) end)
    assert.has_error(function() c:batch({ { url = srv.url, timeout = 5 } }, { parallel = 2 }) end)
    assert.equals(0, server_log().count)
  end)
end)

describe("http core: client lifetime", function()
  it("a closed client raises; close is idempotent", function()
    local c = core.client()
    c:close()
    c:close()
    assert.has_error(function() c:request({ url = srv.url .. "/json", timeout = 5 }) end,
      "attempt to use a closed http client")
    assert.has_error(function() c:batch({}) end, "attempt to use a closed http client")
    assert.matches("closed", tostring(c))
  end)

  it("<close> closes the client at the end of the scope", function()
    local outer
    do
      local c <close> = core.client()
      outer = c
      assert.equals(200, assert(c:request({ url = srv.url .. "/json", timeout = 5 })).status)
    end
    assert.has_error(function() outer:request({ url = srv.url .. "/json", timeout = 5 }) end,
      "attempt to use a closed http client")
  end)
end)

describe("http face", function()
  before_each(reset)

  it("request applies defaults and works without a timeout", function()
    local resp = assert(http.request({ url = srv.url .. "/echo" }))
    assert.equals("GET", cjson.decode(resp.body).method)
  end)

  it("get and post; post sends a table as JSON", function()
    local resp = assert(http.get(srv.url .. "/echo?q=1", { headers = { ["X-A"] = "1" } }))
    local echo = cjson.decode(resp.body)
    assert.same({ "GET", "1", "1" }, { echo.method, echo.query.q, echo.headers["x-a"] })
    resp = assert(http.post(srv.url .. "/echo", "raw"))
    echo = cjson.decode(resp.body)
    assert.same({ "POST", 3 }, { echo.method, echo.body_length })
    resp = assert(http.post(srv.url .. "/echo", { n = 1 }))
    echo = cjson.decode(resp.body)
    assert.equals("application/json", echo.headers["content-type"])
    assert.equals(b64('{"n":1}'), echo.body_b64)
  end)

  it("keeps the default client's connection alive", function()
    local a = cjson.decode(assert(http.get(srv.url .. "/conn")).body).port
    local b = cjson.decode(assert(http.get(srv.url .. "/conn")).body).port
    assert.equals(a, b)
  end)

  it("follows redirects, relative and absolute", function()
    local resp = assert(http.get(srv.url .. "/redirect?to=/echo%3Fhop%3D1"))
    assert.equals(200, resp.status)
    assert.equals("1", cjson.decode(resp.body).query.hop)
    assert.equals(srv.url .. "/echo?hop=1", resp.url)
    resp = assert(http.get(srv.url .. "/redirect?code=301&to=" .. urlencode(srv.url .. "/json")))
    assert.equals(srv.url .. "/json", resp.url)
  end)

  it("303 becomes GET without the body; 307 keeps method and body", function()
    local resp = assert(http.post(srv.url .. "/redirect?code=303&to=/echo", "payload",
      { headers = { ["Content-Type"] = "text/plain" } }))
    local echo = cjson.decode(resp.body)
    assert.same({ "GET", 0 }, { echo.method, echo.body_length })
    assert.is_nil(echo.headers["content-type"])
    resp = assert(http.request({ method = "PUT", url = srv.url .. "/redirect?code=307&to=/echo", body = "payload" }))
    echo = cjson.decode(resp.body)
    assert.same({ "PUT", 7 }, { echo.method, echo.body_length })
  end)

  it("a 302 after POST becomes GET; a body without a method is a POST", function()
    local resp = assert(http.post(srv.url .. "/redirect?code=302&to=/echo", "payload"))
    assert.same({ "GET", 0 }, { cjson.decode(resp.body).method, cjson.decode(resp.body).body_length })
    resp = assert(http.request({ url = srv.url .. "/echo", body = "x" }))
    assert.equals("POST", cjson.decode(resp.body).method)
    resp = assert(http.request({ url = srv.url .. "/echo", json = { 1, 2 } }))
    local echo = cjson.decode(resp.body)
    assert.same({ "POST", "application/json", b64("[1,2]") }, { echo.method, echo.headers["content-type"], echo.body_b64 })
  end)

  it("stops after 5 redirects; max_redirects = 0 returns the 3xx", function()
    local function chain(n)
      local u = "/echo"
      for _ = 1, n do u = "/redirect?to=" .. urlencode(u) end
      return srv.url .. u
    end
    assert.equals(200, assert(http.get(chain(5))).status)
    local resp, err, code = http.get(chain(6))
    assert.is_nil(resp)
    assert.equals("EHTTP", code)
    assert.matches("more than 5 redirects", err)
    resp = assert(http.get(chain(1), { max_redirects = 0 }))
    assert.equals(302, resp.status)
  end)

  it("drops credentials on a redirect to another host, keeps them on the same host", function()
    local other = srv.url:gsub("127%.0%.0%.1", "localhost")
    local headers = { Authorization = "Bearer t0k", ["X-API-Key"] = "k3y", Cookie = "s=1",
      ["Proxy-Authorization"] = "Basic eA==", ["X-Custom-Secret"] = "c5", ["X-Plain"] = "p" }
    local resp = assert(http.get(srv.url .. "/redirect?to=" .. urlencode(other .. "/echo"),
      { headers = headers, sensitive_headers = { "x-custom-secret" } }))
    assert.equals(200, resp.status)
    local log = server_log().log
    assert.equals(2, #log)
    assert.equals("Bearer t0k", log[1].headers.authorization)
    local h = log[2].headers
    assert.matches("^localhost:", h.host)
    assert.is_nil(h.authorization)
    assert.is_nil(h["x-api-key"])
    assert.is_nil(h.cookie)
    assert.is_nil(h["proxy-authorization"])
    assert.is_nil(h["x-custom-secret"])
    assert.equals("p", h["x-plain"])

    reset()
    resp = assert(http.get(srv.url .. "/redirect?to=/echo", { headers = headers }))
    h = cjson.decode(resp.body).headers
    assert.equals("Bearer t0k", h.authorization)
    assert.equals("k3y", h["x-api-key"])
    assert.equals("c5", h["x-custom-secret"])
  end)

  it("treats a change of port or scheme as another origin", function()
    local to = srv.https_url .. "/echo"
    local resp = assert(http.get(srv.url .. "/redirect?to=" .. urlencode(to),
      { headers = { Authorization = "Bearer t0k" }, insecure = true }))
    assert.is_nil(cjson.decode(resp.body).headers.authorization)
  end)

  it("verifies TLS unless insecure is exactly true", function()
    local resp, err, code = http.get(srv.https_url .. "/json")
    assert.is_nil(resp)
    assert.equals("TLS", code)
    assert.matches("self%-signed", err)
    assert.has_error(function() http.get(srv.https_url .. "/json", { insecure = "true" }) end)
    assert.equals(200, assert(http.get(srv.https_url .. "/json", { insecure = true })).status)
  end)

  it("passes failures through with their codes", function()
    local _, _, code = http.get(CLOSED)
    assert.equals("ECONNREFUSED", code)
    _, _, code = http.get(srv.url .. "/stall", { timeout = 0.5 })
    assert.equals("TIMEOUT", code)
    _, _, code = http.get(srv.url .. "/bytes/10485760", { max_body = 1000 })
    assert.equals("TOO_LARGE", code)
  end)

  it("raises on unknown fields and bad types", function()
    assert.has_error(function() http.request({ url = srv.url, timout = 1 }) end,
      "http.request: unknown field 'timout'")
    assert.has_error(function() http.get(srv.url, { timeout = "5" }) end)
    assert.has_error(function() http.request({ url = srv.url, body = "a", json = {} }) end)
    assert.has_error(function() http.get(srv.url, { sensitive_headers = { 1 } }) end)
  end)

  it("batch: order, concurrency, redirects and failures", function()
    local reqs = {}
    for i = 1, 8 do reqs[i] = { url = ("%s/slow/%d"):format(srv.url, 200 - i * 20) } end
    reqs[9] = { url = srv.url .. "/redirect?to=/echo%3Fr%3D1" }
    reqs[10] = { url = CLOSED }
    local res = http.batch(reqs, { concurrency = 2 })
    for i = 1, 8 do assert.equals(("slow %d\n"):format(200 - i * 20), res[i].body) end
    assert.equals("1", cjson.decode(res[9].body).query.r)
    assert.equals("ECONNREFUSED", res[10].code)
    assert.is_true(server_log().max_inflight <= 2)
    assert.has_error(function() http.batch(reqs, { workers = 2 }) end)
    assert.has_error(function() http.batch({ { url = srv.url, bogus = 1 } }) end,
      "http.batch: request #1: unknown field 'bogus'")
  end)

  it("json decodes a JSON body", function()
    local doc = assert(http.json(http.get(srv.url .. "/json")))
    assert.same({ 1, 2, 3 }, doc.items)
  end)

  it("json on HTML -> EJSON with a short, single-line excerpt", function()
    local resp = assert(http.get(srv.url .. "/html/502"))
    local doc, err, code = http.json(resp)
    assert.is_nil(doc)
    assert.equals("EJSON", code)
    local prefix = "response from " .. srv.url .. "/html/502 is not JSON (HTTP 502): "
    assert.equals(prefix, err:sub(1, #prefix))
    assert.matches("<!DOCTYPE html> <html> <head><title>502 Bad Gateway", err, 1, true)
    assert.not_matches("%c", err)
    -- 120 characters of a longer page, then an ellipsis
    assert.equals(120, utf8.len(err:sub(#prefix + 1)) - 1)
    assert.equals("…", err:sub(-3))
    doc, err = http.json(assert(http.get(srv.url .. "/html")))
    assert.is_nil(doc)
    assert.matches("(HTTP 200)", err, 1, true)
    doc, err = http.json({ status = 204, body = "", url = "http://u:p@h/x" })
    assert.is_nil(doc)
    assert.equals("response from http://h/x is not JSON (HTTP 204): (empty body)", err)
  end)

  it("json passes a request failure through", function()
    local doc, err, code = http.json(http.get(CLOSED))
    assert.is_nil(doc)
    assert.equals("ECONNREFUSED", code)
    assert.matches("^GET http://127%.0%.0%.1:1/", err)
  end)

  it("new_client is independent and closes with <close>", function()
    local port
    local kept
    do
      local c <close> = http.new_client()
      kept = c
      local a = cjson.decode(assert(c:get(srv.url .. "/conn")).body).port
      local b = cjson.decode(assert(c:request({ url = srv.url .. "/conn" })).body).port
      assert.equals(a, b)
      port = a
      local d = cjson.decode(assert(http.get(srv.url .. "/conn")).body).port
      assert.not_equals(port, d)
      assert.equals(3, cjson.decode(assert(c:post(srv.url .. "/echo", "abc")).body).body_length)
      assert.equals(200, c:batch({ { url = srv.url .. "/json" } })[1].status)
    end
    assert.has_error(function() kept:get(srv.url .. "/json") end, "attempt to use a closed http client")
  end)
end)

describe("the fixture server", function()
  before_each(reset)

  it("/fail/<n> answers 503 n times, then 200; /reset starts over", function()
    local statuses = {}
    for i = 1, 4 do statuses[i] = assert(http.get(srv.url .. "/fail/2")).status end
    assert.same({ 503, 503, 200, 200 }, statuses)
    reset()
    assert.equals(503, assert(http.get(srv.url .. "/fail/2")).status)
  end)

  it("/retry-after/<s> is a 429 with Retry-After", function()
    local resp = assert(http.get(srv.url .. "/retry-after/7"))
    assert.same({ 429, "7" }, { resp.status, resp.headers["retry-after"] })
  end)

  it("/requests logs what it saw, not itself", function()
    assert(http.get(srv.url .. "/status/204", { headers = { ["X-Seen"] = "yes" } }))
    local log = server_log()
    assert.equals(1, log.count)
    assert.same({ "GET", "/status/204", "yes" }, { log.log[1].method, log.log[1].path, log.log[1].headers["x-seen"] })
  end)
end)
