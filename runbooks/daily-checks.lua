-- daily-checks — seed 002's "Monitoring Checklist (Daily)" and seed 003's
-- health and alert baseline as one pass of verifications:
--   error rates        → API and worker health, API readiness, SLO thresholds
--   queue backlog      → pending tasks at most max_backlog ("0 or near 0")
--   callbacks          → open dead letters at most max_dead_letters
--   stale runs         → RUNNING runs without a recent heartbeat
--   stuck sessions     → none in processing for more than stuck_minutes
--   processing_failed  → failed sessions listed for review
--   activity           → a session processed in the last 24 h (when active=true)
-- Everything is read at once; every item is then judged, so one bad item
-- does not hide the others. R2 storage has no API here: it stays a
-- dashboard look, and the runbook says so.
local rb = require("runbook")
local health = require("stdlib.health")
local ops = require("stdlib.ops")
local slo = require("stdlib.slo")

local cjson = require("cjson.safe")

local HEALTH = { status = 200, json = { status = "ok", worker = "orchestrator-hub", time = "2026-01-01T00:00:00Z" } }
local NONE = { status = 200, json = { count = 0, sessions = {} } }

-- name → request (base is "api" or "worker"), expectation, offline fixture
local READS = {
  { name = "api health", path = "/api/health", exp = { json = { status = "ok" } }, fixture = HEALTH },
  { name = "worker health", base = "worker", path = "/api/health", exp = { json = { status = "ok" } }, fixture = HEALTH },
  { name = "api readiness", path = "/api/ready", exp = { json = { status = "ok" } },
    fixture = { status = 200, json = { status = "ok", d1 = true, kv = true } } },
  { name = "metrics", path = "/ops/metrics", exp = { fields = slo.FIELDS }, fixture = slo.FIXTURE },
  { name = "queue", path = "/api/queue/peek", key = true, exp = { fields = { "pending" } },
    fixture = { status = 200, json = { store = "d1", pending = 0 } } },
  { name = "stuck sessions", path = function(p) return "/api/sessions?status=processing&older_than_min=" .. p.stuck_minutes end,
    exp = { fields = { "count" } }, fixture = NONE },
  { name = "failed sessions", path = "/api/sessions?status=failed", exp = { fields = { "count" } }, fixture = NONE },
  { name = "processed sessions", path = "/api/sessions?status=processed", exp = { fields = { "count" } },
    fixture = function()
      return { status = 200, json = { count = 1, sessions = {
        { id = "session-offline", processing_status = "processed", updated_at = os.date("!%Y-%m-%dT%H:%M:%S.000Z") } } } }
    end },
}

local function got(ctx, name)
  local r = ctx:get("reads")[name]
  return r, r and r.ok and r.body or nil
end

-- A check on one read: fails with the read's own failure when it did not answer.
local function item(title, name, judge)
  return rb.check(title, function(ctx)
    local r, body = got(ctx, name)
    if not r then return false, name .. ": not read" end
    if not r.ok then return false, name .. ": " .. tostring(r.why) end
    return judge(ctx, body)
  end)
end

local function count(v) return math.tointeger(v) or v end

local function ids(list, max)
  local out = {}
  for i, s in ipairs(list or {}) do
    if i > max then out[#out + 1] = "..." break end
    out[#out + 1] = tostring(s.id)
  end
  return table.concat(out, ", ")
end

local CHECKLIST = {
  item("API answers health", "api health", function() return true end),
  item("worker answers health", "worker health", function() return true end),
  item("API is ready (database and store)", "api readiness", function() return true end),
  item("every SLO within its alert threshold", "metrics", function(_, m)
    local bad = {}
    for _, r in ipairs(slo.breaches(slo.evaluate(m))) do bad[#bad + 1] = r.label .. " " .. slo.describe(r) end
    return #bad == 0, table.concat(bad, "; ") .. " (runbook run check-slos)"
  end),
  item("no stale runs (RUNNING without a recent heartbeat)", "metrics", function(ctx, m)
    local n = slo.number(m.runs_without_heartbeat) or 0
    return n <= ctx.params.max_stale_runs, ("%d running runs have no recent heartbeat (at most %d allowed)"):format(
      count(n), ctx.params.max_stale_runs)
  end),
  item("open callback dead letters within the limit", "metrics", function(ctx, m)
    local n = slo.number(m.callback_events_failed) or 0
    return n <= ctx.params.max_dead_letters, ("%d open dead letters (at most %d allowed): runbook run replay-dead-letters")
      :format(count(n), ctx.params.max_dead_letters)
  end),
  item("queue backlog near zero", "queue", function(ctx, q)
    local n = slo.number(q.pending) or 0
    return n <= ctx.params.max_backlog, ("%d tasks pending (at most %d allowed): is the consumer running?")
      :format(count(n), ctx.params.max_backlog)
  end),
  item("no session stuck in processing", "stuck sessions", function(ctx, s)
    return (s.count or 0) == 0, ("%d sessions processing for over %d min: %s (runbook run investigate-queue-failure)")
      :format(count(s.count), ctx.params.stuck_minutes, ids(s.sessions, 5))
  end),
  item("no failed sessions awaiting review", "failed sessions", function(_, s)
    return (s.count or 0) == 0, ("%d sessions failed processing: %s (runbook run investigate-queue-failure)")
      :format(count(s.count), ids(s.sessions, 5))
  end),
}

-- Sessions processed within `hours`, from the list's updated_at.
local function recent(list, hours, now)
  local n = 0
  for _, s in ipairs(list or {}) do
    local y, mo, d, h, mi, sec = tostring(s.updated_at):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
    if y then
      local t = os.time({ year = y, month = mo, day = d, hour = h, min = mi, sec = sec, isdst = false })
      -- os.time reads the fields as local time; updated_at is UTC
      local offset = os.time(os.date("*t", now)) - os.time(os.date("!*t", now))
      if now - (t + offset) <= hours * 3600 then n = n + 1 end
    end
  end
  return n
end

return rb.runbook {
  name = "daily-checks",
  summary = "The daily monitoring checklist: health, readiness, SLOs, backlog, dead letters, stale runs, sessions",
  -- reads and notifies only: no confirmation on a protected environment
  read_only = true,
  params = {
    { name = "max_backlog", type = "int", default = 10, min = 0, help = "pending queue tasks allowed" },
    { name = "max_dead_letters", type = "int", default = 0, min = 0, help = "open callback dead letters allowed" },
    { name = "max_stale_runs", type = "int", default = 0, min = 0, help = "RUNNING runs without heartbeat allowed" },
    { name = "stuck_minutes", type = "int", default = 10, min = 1, help = "processing longer than this is stuck" },
    { name = "active", type = "bool", default = false,
      help = "the product is in active use: require a session processed in the last 24 h" },
  },
  steps = {
    rb.step "Read everything at once" {
      run = function(ctx)
        local bases = { api = ops.base(ctx, "url", "url"), worker = ops.base(ctx, "worker_url", "worker_url") }
        local key = ops.queue_key(ctx)
        local reqs = {}
        for i, r in ipairs(READS) do
          local path = type(r.path) == "function" and r.path(ctx.params) or r.path
          reqs[i] = { method = "GET", url = bases[r.base or "api"] .. path, timeout = 10, fixture = r.fixture,
            headers = r.key and { ["X-API-Key"] = key } or nil }
        end
        local res = ctx:batch(reqs, { concurrency = #reqs })
        local reads = {}
        for i, r in ipairs(READS) do
          local j = health.judge(res[i], r.exp)
          if not j.ok and res[i] and res[i].status then j.why = j.why .. ": " .. ops.reason(res[i]) end
          j.name = r.name
          ctx:log("%s", health.format(j))
          -- top-level JSON nulls (a rate with nothing to rate) become nil
          if j.body then
            for k, v in pairs(j.body) do if v == cjson.null then j.body[k] = nil end end
          end
          reads[r.name] = { ok = j.ok, why = j.why, body = j.body }
        end
        ctx:set("reads", reads)
      end,
      verify = {
        rb.check("every read was attempted", function(ctx)
          local n = 0
          for _ in pairs(ctx:get("reads")) do n = n + 1 end
          return n == #READS
        end),
      },
      hint = "Nothing answers? Check the environment's url and worker_url in runbook.lua.",
    },
    rb.step "The daily checklist" {
      run = function(ctx)
        local _, m = got(ctx, "metrics")
        if m then
          for _, r in ipairs(slo.evaluate(m)) do ctx:log("%s", slo.format(r)) end
        end
        local _, q = got(ctx, "queue")
        if q then ctx:log("queue: %s pending (%s store)", tostring(count(q.pending)), tostring(q.store)) end
        ctx:log("R2 storage usage: not exposed by an API; look at its trend in the Cloudflare dashboard")
      end,
      verify = CHECKLIST,
      hint = "Each failed item names its next runbook: check-slos, replay-dead-letters, investigate-queue-failure.",
    },
    rb.step "A session processed in the last 24 hours" {
      when = function(ctx) return ctx.params.active end,
      run = function(ctx)
        local _, s = got(ctx, "processed sessions")
        local n = s and recent(s.sessions, 24, os.time()) or 0
        ctx:set("recent", n)
        ctx:log("%d sessions processed in the last 24 h", n)
      end,
      verify = {
        item("at least one session processed in the last 24 h", "processed sessions", function(ctx)
          return ctx:get("recent") > 0, "none processed in 24 h while in active use: is the processing worker consuming?"
        end),
      },
      hint = "runbook run investigate-queue-failure",
    },
  },
}
