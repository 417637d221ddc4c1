-- health.lua — health checks: status plus JSON field expectations, for one
-- endpoint or many at once (ctx:batch), each with its timing.
--
--   local health = require("stdlib.health")
--   local r = health.check(ctx, { url = base .. "/api/health", json = { status = "ok" } })
--   -- r = { ok = true, status = 200, ms = 12.3, why = nil, body = {...} }

local M = {}

local function get_path(t, path)
  for part in path:gmatch("[^%.]+") do
    if type(t) ~= "table" then return nil end
    t = t[part]
  end
  return t
end

---Judge one response against an expectation.
function M.judge(resp, exp)
  exp = exp or {}
  if not resp or resp.error then
    return { ok = false, why = resp and resp.error or "no response", code = resp and resp.code }
  end
  local want = exp.status or 200
  local r = { status = resp.status, ms = resp.time and resp.time.total and resp.time.total * 1000 or nil }
  if resp.status ~= want then
    r.ok, r.why = false, ("HTTP %d, expected %d"):format(resp.status, want)
    return r
  end
  if exp.json or exp.fields then
    local cjson = require("cjson.safe")
    local body = cjson.decode(resp.body or "")
    if type(body) ~= "table" then
      local excerpt = (resp.body or ""):sub(1, 80):gsub("[%c]", " ")
      r.ok, r.why = false, "response is not JSON: " .. excerpt
      return r
    end
    r.body = body
    for k, v in pairs(exp.json or {}) do
      local got = get_path(body, k)
      if got ~= v then
        r.ok, r.why = false, ("%s is %s, expected %s"):format(k, tostring(got), tostring(v))
        return r
      end
    end
    for _, k in ipairs(exp.fields or {}) do
      if get_path(body, k) == nil then
        r.ok, r.why = false, ("field %s is missing"):format(k)
        return r
      end
    end
  end
  r.ok = true
  return r
end

---One check through the step context.
function M.check(ctx, exp)
  local resp, err, code = ctx:try_http({ method = exp.method or "GET", url = exp.url, headers = exp.headers,
    timeout = exp.timeout or 10, fixture = exp.fixture })
  local r = M.judge(resp or { error = err, code = code }, exp)
  r.url, r.name = exp.url, exp.name or exp.url
  return r
end

---Many checks at once; results in the order given.
function M.many(ctx, exps, o)
  local reqs = {}
  for i, e in ipairs(exps) do
    reqs[i] = { method = e.method or "GET", url = e.url, headers = e.headers, timeout = e.timeout or 10,
      fixture = e.fixture }
  end
  local res = ctx:batch(reqs, { concurrency = (o and o.concurrency) or 16 })
  local out = {}
  for i, e in ipairs(exps) do
    local r = M.judge(res[i], e)
    r.url, r.name = e.url, e.name or e.url
    out[i] = r
  end
  return out
end

---One line per result: "✓ name  200  12 ms" (ASCII when asked).
function M.format(r)
  local mark = r.ok and "ok  " or "FAIL"
  return ("%s %-28s %s %s%s"):format(mark, r.name, r.status and tostring(r.status) or "---",
    r.ms and ("%.0f ms"):format(r.ms) or "", r.why and ("  " .. r.why) or "")
end

return M
