-- http.lua — runbook.http, the public face of runbook.http.core.
--
-- The core only performs one transfer as told. This face adds the policy:
-- finite defaults (timeout 30 s, connect 10 s, body cap 64 MiB), redirect
-- following (at most 5; 303 becomes GET) that drops credentials —
-- Authorization, Cookie, X-API-Key and any header the request names in
-- `sensitive_headers` — as soon as a redirect leaves the scheme, host and
-- port it was sent to, JSON bodies in and out, and a default client whose
-- connections stay alive across calls.
--
--   local http = require("runbook.http")
--   local resp, err, code = http.get("https://example.test/health")
--   local doc, jerr = http.json(resp)
--
-- Failures follow the host convention: nil, "what: why", CODE (ECONNREFUSED,
-- TIMEOUT, TLS, DNS, TOO_LARGE, EHTTP, and EJSON from http.json); misuse
-- (a wrong field type, an unknown field, a closed client) raises.
local core = require("runbook.http.core")
local cjson = require("cjson.safe")

local M = {}

M.DEFAULT_TIMEOUT = 30
M.DEFAULT_CONNECT_TIMEOUT = 10
M.DEFAULT_MAX_BODY = 64 * 1024 * 1024
M.MAX_REDIRECTS = 5
M.DEFAULT_CONCURRENCY = 16

local FIELDS = {
  method = "string", url = "string", headers = "table", body = "string", json = true,
  timeout = "number", connect_timeout = "number", insecure = "boolean", max_body = "number",
  sensitive_headers = "table", max_redirects = "number",
}

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- never sent on to another origin, whatever the request says
local ALWAYS_SENSITIVE = { authorization = true, cookie = true, ["x-api-key"] = true,
  ["proxy-authorization"] = true }

local DEFAULT_PORT = { http = 80, https = 443 }

-- The URL without "user:password@", for messages.
local function safe_url(url)
  return (tostring(url):gsub("^(%a[%w+.-]*://)[^/?#]*@", "%1"))
end

-- scheme, host, port of an absolute URL (nil if it is not one)
local function origin(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil end
  scheme = scheme:lower()
  local auth = rest:match("^[^/?#]*"):gsub("^.*@", "")
  local host, port
  if auth:sub(1, 1) == "[" then
    host, port = auth:match("^(%b[])(.*)$")
  else
    host, port = auth:match("^([^:]*)(.*)$")
  end
  port = tonumber(port:match("^:(%d+)$")) or DEFAULT_PORT[scheme]
  return scheme, host:lower(), port
end

local function same_origin(a, b)
  local s1, h1, p1 = origin(a)
  local s2, h2, p2 = origin(b)
  return s1 ~= nil and s1 == s2 and h1 == h2 and p1 == p2
end

-- Resolve a Location header against the URL that answered with it.
local function resolve(base, loc)
  if loc:match("^%a[%w+.-]*:") then return loc end
  local scheme, auth, path = base:match("^(%a[%w+.-]*)://([^/?#]*)([^?#]*)")
  if not scheme then return loc end
  if loc:sub(1, 2) == "//" then return scheme .. ":" .. loc end
  if loc:sub(1, 1) == "/" then return scheme .. "://" .. auth .. loc end
  if loc == "" or loc:sub(1, 1) == "#" then return (base:gsub("#.*$", "")) end
  if path == "" then path = "/" end
  if loc:sub(1, 1) == "?" then return scheme .. "://" .. auth .. path .. loc end
  return scheme .. "://" .. auth .. path:match("^(.*/)") .. loc
end

-- lower-cased names that must not follow a cross-origin redirect
local function sensitive_set(list)
  local set = {}
  for k in pairs(ALWAYS_SENSITIVE) do set[k] = true end
  for _, name in ipairs(list or {}) do set[name:lower()] = true end
  return set
end

-- Check a face request and build the core request from it.
local function to_core(req, who)
  if type(req) ~= "table" then
    error(("%s: expected a request table, got %s"):format(who, type(req)), 3)
  end
  for k, v in pairs(req) do
    local want = FIELDS[k]
    if not want then error(("%s: unknown field '%s'"):format(who, tostring(k)), 3) end
    if want ~= true and type(v) ~= want then
      error(("%s: field '%s' must be a %s, got %s"):format(who, k, want, type(v)), 3)
    end
  end
  if type(req.url) ~= "string" then error(who .. ": field 'url' must be a string", 3) end
  for i, name in ipairs(req.sensitive_headers or {}) do
    if type(name) ~= "string" then
      error(("%s: sensitive_headers[%d] must be a header name, got %s"):format(who, i, type(name)), 3)
    end
  end
  local headers
  if req.headers then
    headers = {}
    for k, v in pairs(req.headers) do headers[k] = v end
  end
  local body = req.body
  if req.json ~= nil then
    if body ~= nil then error(who .. ": give either 'body' or 'json', not both", 3) end
    local encoded, jerr = cjson.encode(req.json)
    if not encoded then error(who .. ": field 'json' cannot be encoded: " .. tostring(jerr), 3) end
    body = encoded
    headers = headers or {}
    local has_ctype = false
    for k in pairs(headers) do
      if k:lower() == "content-type" then has_ctype = true end
    end
    if not has_ctype then headers["Content-Type"] = "application/json" end
  end
  local method = (req.method or (body and "POST") or "GET"):upper()
  return {
    method = method,
    url = req.url,
    headers = headers,
    body = body,
    timeout = req.timeout or M.DEFAULT_TIMEOUT,
    connect_timeout = req.connect_timeout or M.DEFAULT_CONNECT_TIMEOUT,
    max_body = req.max_body or M.DEFAULT_MAX_BODY,
    insecure = req.insecure == true or nil, -- only an explicit true disables verification
  }
end

-- The request for the next hop of a redirect.
local function next_hop(creq, status, location, sensitive)
  local nreq = {}
  for k, v in pairs(creq) do nreq[k] = v end
  nreq.url = resolve(creq.url, location)
  local headers = creq.headers and {}
  for k, v in pairs(creq.headers or {}) do headers[k] = v end
  if not same_origin(creq.url, nreq.url) then
    for k in pairs(creq.headers or {}) do
      if sensitive[k:lower()] then headers[k] = nil end
    end
  end
  -- 303 means "see this with GET"; 301/302 after a POST are, by long
  -- practice (browsers, curl), re-sent as GET too. 307/308 keep both.
  if (status == 303 and creq.method ~= "HEAD") or ((status == 301 or status == 302) and creq.method == "POST") then
    nreq.method = "GET"
    nreq.body = nil
    for k in pairs(creq.headers or {}) do
      local l = k:lower()
      if l == "content-type" or l == "content-length" then headers[k] = nil end
    end
  end
  nreq.headers = headers
  return nreq
end

-- Send creq on client c and follow redirects. `resp`, when given, is the
-- already received answer to creq (from a batch).
local function follow(c, req, creq, resp)
  local limit = req.max_redirects or M.MAX_REDIRECTS
  local sensitive -- built on the first redirect: most requests have none
  local hops = 0
  while true do
    if not resp then
      local err, code
      resp, err, code = c:request(creq)
      if not resp then return nil, err, code end
    end
    local location = resp.headers.location
    if not REDIRECT[resp.status] or not location or limit <= 0 then return resp end
    if hops >= limit then
      return nil, ("%s %s: more than %d redirects"):format(creq.method, safe_url(req.url), limit), "EHTTP"
    end
    hops = hops + 1
    sensitive = sensitive or sensitive_set(req.sensitive_headers)
    creq = next_hop(creq, resp.status, location, sensitive)
    resp = nil
  end
end

local function request(c, req, who)
  return follow(c, req, to_core(req, who))
end

local function with(opts, fields, who)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(who, type(opts)), 3)
  end
  local req = {}
  for k, v in pairs(opts or {}) do req[k] = v end
  for k, v in pairs(fields) do req[k] = v end
  return req
end

local function batch(c, reqs, opts)
  if type(reqs) ~= "table" then error("http.batch: expected a table of requests", 3) end
  if opts ~= nil and type(opts) ~= "table" then error("http.batch: options must be a table", 3) end
  for k in pairs(opts or {}) do
    if k ~= "concurrency" then error(("http.batch: unknown option '%s'"):format(tostring(k)), 3) end
  end
  local creqs = {}
  for i = 1, #reqs do creqs[i] = to_core(reqs[i], "http.batch: request #" .. i) end
  local results = c:batch(creqs, { concurrency = opts and opts.concurrency or M.DEFAULT_CONCURRENCY })
  for i = 1, #results do
    local r = results[i]
    if r.status and REDIRECT[r.status] and r.headers.location then
      local resp, err, code = follow(c, reqs[i], creqs[i], r)
      results[i] = resp or { error = err, code = code }
    end
  end
  return results
end

-- the module-level client, created on first use
local default
local function default_client()
  default = default or core.client()
  return default
end

---Send one request; redirects are followed. Fields: method (default GET, or
---POST with a body), url, headers, body (string) or json (any value, sent as
---JSON), timeout, connect_timeout, max_body, insecure (only `true` counts),
---sensitive_headers (names dropped on a cross-origin redirect), max_redirects
---(0: return the 3xx response).
---@param req table
---@return table|nil resp { status, headers, body, url, time }
---@return string|nil err
---@return string|nil code
function M.request(req)
  return request(default_client(), req, "http.request")
end

---GET a URL; opts are request fields.
---@param url string
---@param opts table|nil
---@return table|nil resp
---@return string|nil err
---@return string|nil code
function M.get(url, opts)
  return request(default_client(), with(opts, { url = url, method = "GET" }, "http.get"), "http.get")
end

---POST a body (a string, or a table sent as JSON); opts are request fields.
---@param url string
---@param body string|table|nil
---@param opts table|nil
---@return table|nil resp
---@return string|nil err
---@return string|nil code
function M.post(url, body, opts)
  local fields = { url = url, method = "POST" }
  if type(body) == "table" then fields.json = body else fields.body = body end
  return request(default_client(), with(opts, fields, "http.post"), "http.post")
end

---Many requests at once (at most opts.concurrency, default 16, in flight);
---results in input order, each a resp or { error = msg, code = code }.
---@param reqs table[]
---@param opts table|nil { concurrency = n }
---@return table[] results
function M.batch(reqs, opts)
  return batch(default_client(), reqs, opts)
end

---Decode a JSON response body. Accepts a request's return values directly:
---http.json(http.get(url)) passes a transport failure through.
---@param resp table|nil
---@param err string|nil
---@param code string|nil
---@return any|nil value
---@return string|nil err
---@return string|nil code "EJSON" when the body is not JSON
function M.json(resp, err, code)
  if resp == nil then return nil, err, code end
  local body = resp.body or ""
  local value = cjson.decode(body)
  if value ~= nil then return value end
  local excerpt = body:sub(1, 600):gsub("%c+", " "):gsub("%s+", " "):gsub("^ ", "")
  if #excerpt > 120 then
    excerpt = excerpt:sub(1, 120)
    -- do not cut a UTF-8 sequence in half
    for _ = 1, 3 do
      if utf8.len(excerpt) then break end
      excerpt = excerpt:sub(1, -2)
    end
    excerpt = excerpt .. "…"
  end
  if excerpt == "" then excerpt = "(empty body)" end
  return nil, ("response from %s is not JSON (HTTP %s): %s"):format(
    safe_url(resp.url or "?"), tostring(resp.status), excerpt), "EJSON"
end

local Client = {}
Client.__index = Client
Client.__name = "runbook.http face client"

---An independent client (its own connections); close it when done, or
---declare it `local c <close> = http.new_client()`.
---@return table client with request, get, post, batch, close
function M.new_client()
  return setmetatable({ core = core.client() }, Client)
end

---@param req table
function Client:request(req) return request(self.core, req, "client:request") end

---@param url string
---@param opts table|nil
function Client:get(url, opts)
  return request(self.core, with(opts, { url = url, method = "GET" }, "client:get"), "client:get")
end

---@param url string
---@param body string|table|nil
---@param opts table|nil
function Client:post(url, body, opts)
  local fields = { url = url, method = "POST" }
  if type(body) == "table" then fields.json = body else fields.body = body end
  return request(self.core, with(opts, fields, "client:post"), "client:post")
end

---@param reqs table[]
---@param opts table|nil
function Client:batch(reqs, opts) return batch(self.core, reqs, opts) end

function Client:close() self.core:close() end

Client.__close = Client.close

return M
