-- sessions.lua — seed 002's session processing as runbooks see it: read a
-- session (processing_status, signal_count, events), ask for reprocessing,
-- find the reason of a failure in its events, and map that reason to the
-- command that fixes it (the seed's Resolution table):
--   "<NAME> is not set" (a provider key)  → rotate-provider-key -p name=<NAME>,
--                                           then reprocess-session
--   "Session not found"                   → a data problem: look in D1
--   anything else (rate limit, timeout…)  → reprocess-session
--
--   local sessions = require("stdlib.sessions")
--   local s = sessions.get(ctx, "s-1")        -- { status, signal_count, events, last_event, reason }

local cjson = require("cjson.safe")

local M = {}

M.STARTED = "session.processing_started"
M.FAILED = "session.processing_failed"
M.PROCESSED = "session.processed"

local function base(ctx, project)
  if project and project ~= "" and project ~= "default" then
    return ("%s/api/projects/%s/sessions"):format(ctx.env.url, project)
  end
  return ctx.env.url .. "/api/sessions"
end

local function enc(s) return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end)) end

---The reason of the last session.processing_failed event, or nil.
function M.failure_reason(events)
  for i = #(events or {}), 1, -1 do
    local e = events[i]
    if e.type == M.FAILED then
      local d = e.data
      if type(d) ~= "table" then d = cjson.decode(e.data_json or "") end
      return type(d) == "table" and d.reason and tostring(d.reason) or "(no reason recorded)"
    end
  end
  return nil
end

---A session's view from GET /api/sessions/:id: { id, status, signal_count,
---started_at, events, last_event, reason }, or nil, err, http status.
function M.get(ctx, id, o)
  o = o or {}
  local url = base(ctx, o.project) .. "/" .. enc(id)
  local resp, err = ctx:try_http({ url = url, timeout = o.timeout or 15, fixture = o.fixture })
  if not resp then return nil, "GET " .. url .. ": " .. err end
  local b = cjson.decode(resp.body or "")
  if resp.status == 404 then
    return nil, ("session %s: Session not found (GET %s answered 404)"):format(id, url), 404
  end
  if resp.status ~= 200 or type(b) ~= "table" or type(b.session) ~= "table" then
    return nil, ("GET %s answered %d%s"):format(url, resp.status,
      type(b) == "table" and b.error and (": " .. tostring(b.error)) or ""), resp.status
  end
  local events = type(b.events) == "table" and b.events or {}
  return {
    id = b.session.id or id,
    project = b.session.project_id,
    status = b.session.processing_status or b.processing_status,
    signal_count = math.tointeger(b.session.signal_count) or b.session.signal_count,
    started_at = b.session.processing_started_at,
    events = events,
    last_event = events[#events] and events[#events].type or nil,
    reason = M.failure_reason(events),
  }
end

---Sessions by status (and older than N minutes): a list of session views
---without events, or nil, err.
function M.list(ctx, o)
  o = o or {}
  local q = {}
  if o.status then q[#q + 1] = "status=" .. enc(o.status) end
  if o.older_than_min then q[#q + 1] = "older_than_min=" .. tostring(o.older_than_min) end
  local url = base(ctx, o.project) .. (#q > 0 and ("?" .. table.concat(q, "&")) or "")
  local resp, err = ctx:try_http({ url = url, timeout = o.timeout or 15, fixture = o.fixture })
  if not resp then return nil, "GET " .. url .. ": " .. err end
  local b = cjson.decode(resp.body or "")
  if resp.status ~= 200 or type(b) ~= "table" or type(b.sessions) ~= "table" then
    return nil, ("GET %s answered %d"):format(url, resp.status)
  end
  return b.sessions
end

---POST .../sessions/:id/reprocess with the queue key. A write. Returns the
---response (status 202 when accepted) or nil, err.
function M.reprocess(ctx, id, key, o)
  o = o or {}
  local url = base(ctx, o.project) .. "/" .. enc(id) .. "/reprocess"
  return ctx:try_http({ method = "POST", url = url, timeout = o.timeout or 15, body = "{}",
    headers = { ["X-API-Key"] = key, ["Content-Type"] = "application/json" },
    simulate = { status = 202, json = { id = id, processing_status = "processing", requeued = "session.completed" } } })
end

---The name of the missing secret in a reason like "ANTHROPIC_API_KEY is not
---set" or "OPENAI_API_KEY not set", else nil.
function M.missing_secret(reason)
  if type(reason) ~= "string" then return nil end
  return reason:match("^%s*([%u][%u%d_]*)%s+is%s+not%s+set") or reason:match("^%s*([%u][%u%d_]*)%s+not%s+set")
end

local function cmd(...)
  return table.concat({ "runbook", "run", ... }, " ")
end

---What to do about one session: { finding, commands = {...}, advice }.
---`s` is a session view (status, reason); `env` the environment name.
function M.fix_for(s, env, project)
  local where = "--env " .. env
  local proj = project and project ~= "" and project ~= "default" and (" -p project=" .. project) or ""
  local reprocess = cmd("reprocess-session", where, "-p id=" .. s.id .. proj)
  if s.status == "failed" then
    local name = M.missing_secret(s.reason)
    if name then
      return { finding = ("failed: %s"):format(s.reason),
        commands = { cmd("rotate-provider-key", where, "-p name=" .. name), reprocess },
        advice = ("set %s on the processing worker, then reprocess"):format(name) }
    end
    if s.reason and s.reason:lower():find("session not found", 1, true) then
      return { finding = "failed: " .. s.reason, commands = {},
        advice = "a data integrity problem: look the session up in D1 (sessions, session_events); reprocessing will not help" }
    end
    if not s.reason then
      return { finding = "failed without a session.processing_failed event", commands = { reprocess },
        advice = "no reason was recorded (changed by hand?): reprocess, and look at it in D1 if it fails again" }
    end
    return { finding = "failed: " .. s.reason, commands = { reprocess },
      advice = "a transient failure (rate limit, timeout): reprocess" }
  end
  return { finding = ("stuck in processing since %s"):format(tostring(s.started_at or "?")), commands = { reprocess },
    advice = "the worker never finished it (crashed or lost the message): reprocess" }
end

return M
