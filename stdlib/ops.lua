-- ops.lua — small chores shared by the seed-003 runbooks (verify-deployment,
-- replay-dead-letters, retry-failed-run, daily-checks): which base URL to
-- use, credentials read from the env file that holds them, the server's
-- one-line reason out of an error answer, and the hub's callback stores.

local secrets = require("stdlib.secrets")

local M = {}

---A base URL: the param if given, else the environment's field; fails the
---step naming both places when neither is set.
---@param ctx table
---@param param string   parameter name (e.g. "worker_url")
---@param field string   environment field (e.g. "worker_url")
function M.base(ctx, param, field)
  local v = ctx.params[param] or ctx.env[field]
  if not v or v == "" then
    ctx:fail("no %s: set %s = ... for environment '%s' in runbook.lua, or pass -p %s=URL",
      field, field, ctx.env.name, param)
  end
  return (v:gsub("/+$", ""))
end

---A secret from an env file (registered for masking). Missing file or key
---fails the step with what to do — except offline, where nothing is sent and
---a placeholder keeps the control flow going.
---@param ctx table
---@param path string|nil  the env file
---@param name string      the key
---@param field string     the environment field naming the file (for the message)
function M.env_secret(ctx, path, name, field)
  if not path then
    if ctx.offline then return ctx:secret("offline-placeholder-" .. name) end
    ctx:fail("environment '%s' names no file holding %s (%s = ... in runbook.lua)", ctx.env.name, name, field)
  end
  local doc, err = secrets.read_env_file(ctx, path, { missing_ok = true })
  if not doc then ctx:fail("%s", err) end
  local v = doc:get(name)
  if v == nil or v == "" then
    if ctx.offline then return ctx:secret("offline-placeholder-" .. name) end
    ctx:fail("%s is not set in %s (the file %s names); add it there", name, path, field)
  end
  return ctx:secret(v)
end

---The file holding TASKS_AUTH_TOKEN: env.tasks_token_file, else the local
---hub's .dev.vars (the first dev_vars Worker target).
function M.tasks_token_file(ctx)
  if ctx.env.tasks_token_file then return ctx.env.tasks_token_file end
  for _, t in ipairs(ctx.env.workers or {}) do
    if t.backend == "dev_vars" then return t.path end
  end
  return nil
end

---The Bearer token for /callbacks/replay (seed 003: same auth as /tasks).
function M.tasks_token(ctx)
  return M.env_secret(ctx, M.tasks_token_file(ctx), "TASKS_AUTH_TOKEN", "tasks_token_file")
end

---The worker-callback signing secret: WORKER_CALLBACK_SECRET (or the seed's
---WORKER_CALLBACK_SIGNING_SECRET) from env.callback_secret_file, else from
---the local hub's .dev.vars.
function M.callback_secret(ctx)
  local path = ctx.env.callback_secret_file
  if not path then
    for _, t in ipairs(ctx.env.workers or {}) do
      if t.backend == "dev_vars" then path = t.path break end
    end
  end
  if path then
    -- the hub's precedence: WORKER_CALLBACK_SECRET, then the seed's name
    local doc = secrets.read_env_file(ctx, path, { missing_ok = true })
    local primary = doc and doc:get("WORKER_CALLBACK_SECRET")
    local alt = doc and doc:get("WORKER_CALLBACK_SIGNING_SECRET")
    if (primary == nil or primary == "") and alt and alt ~= "" then return ctx:secret(alt) end
  end
  return M.env_secret(ctx, path, "WORKER_CALLBACK_SECRET", "callback_secret_file")
end

---The queue key (X-API-Key) from the canonical env file (seed 000), a
---registered secret; runbooks declare `reload = { key = ops.queue_key }` so a
---resumed run reads it again from the same file, never from the journal.
function M.queue_key(ctx)
  return M.env_secret(ctx, ctx.env.canonical, "ASSISTANT_API_KEY", "canonical")
end

---The server's reason from an error answer: "reason" or "error" of a JSON
---body, else the first line of the body; always one line.
function M.reason(resp)
  if not resp then return "no answer" end
  local body = require("cjson.safe").decode(resp.body or "")
  local why
  if type(body) == "table" then
    why = type(body.reason) == "string" and body.reason or (type(body.error) == "string" and body.error) or nil
    if type(body.errors) == "table" then
      local parts = {}
      for k, v in pairs(body.errors) do parts[#parts + 1] = tostring(k) .. ": " .. tostring(v) end
      table.sort(parts)
      if #parts > 0 then why = (why and (why .. "; ") or "") .. table.concat(parts, "; ") end
    end
  end
  why = why or (resp.body or ""):match("[^\n]*%S[^\n]*") or ""
  why = why:gsub("%c", " ")
  if #why > 160 then why = why:sub(1, 157) .. "..." end
  return why
end

-- JSON numbers decode as floats; counts and ids read better as integers.
local function integers(t, depth)
  if depth > 8 then return t end
  for k, v in pairs(t) do
    if type(v) == "table" then integers(v, depth + 1)
    elseif math.type(v) == "float" and math.tointeger(v) then t[k] = math.tointeger(v) end
  end
  return t
end

---Decode a JSON answer (whole numbers as integers) or fail the step naming the request.
function M.json(ctx, resp, what)
  local body = require("cjson.safe").decode(resp.body or "")
  if type(body) ~= "table" then ctx:fail("%s: the answer is not JSON (HTTP %s)", what, tostring(resp.status)) end
  return integers(body, 0)
end

-- The callback stores ------------------------------------------------------

---Open dead letters. Locally the admin endpoint lists them (ids, eventIds,
---reasons); a deployed hub refuses admin routes, and then only the count
---from /ops/metrics is known. Returns { count, items|nil, source }.
function M.dead_letters(ctx, base, o)
  local url = base .. "/api/admin/dead-letters"
  local resp, err = ctx:try_http({ url = url, timeout = 10, fixture = o and o.fixture })
  if not resp then ctx:fail("%s", err) end
  if resp.status == 200 then
    local body = M.json(ctx, resp, "GET " .. url)
    return { count = body.count, items = body.items, source = "admin list" }
  end
  if resp.status ~= 403 and resp.status ~= 404 then
    ctx:fail("GET %s answered HTTP %d: %s", url, resp.status, M.reason(resp))
  end
  local m = require("stdlib.slo").metrics(ctx, base)
  return { count = math.tointeger(m.callback_events_failed) or m.callback_events_failed,
    source = "/ops/metrics (admin list refused)" }
end

---The replay guard's records for these eventIds: eventId → record.
function M.delivered(ctx, base, token, ids, o)
  local out = {}
  for i = 1, #ids, 100 do
    local q = {}
    for j = i, math.min(i + 99, #ids) do
      q[#q + 1] = "event_id=" .. ids[j]:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end)
    end
    local url = base .. "/callbacks/events?" .. table.concat(q, "&")
    local resp, err = ctx:try_http({ url = url, timeout = 10,
      headers = { Authorization = "Bearer " .. token }, fixture = (o and o.fixture) or { status = 200, json = { count = 0, items = {} } } })
    if not resp then ctx:fail("%s", err) end
    if resp.status ~= 200 then
      ctx:fail("GET %s/callbacks/events answered HTTP %d: %s", base, resp.status, M.reason(resp))
    end
    for _, e in ipairs(M.json(ctx, resp, "GET /callbacks/events").items or {}) do out[e.event_id] = e end
  end
  return out
end

return M
