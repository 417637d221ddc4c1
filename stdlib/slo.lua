-- slo.lua — seed 003's alert thresholds over the hub's /ops/metrics, and
-- the reads the ops runbooks share (metrics, open dead letters).
--
--   local slo = require("stdlib.slo")
--   local m = slo.metrics(ctx, ctx.env.url)          -- decoded /ops/metrics
--   for _, r in ipairs(slo.evaluate(m)) do ctx:log("%s", slo.format(r)) end
--
-- A rate the hub cannot compute yet (nothing to rate) is JSON null: it is
-- reported as "no data" and never counts as a breach. The seed's alert
-- windows ("for 5 min") belong to the alerting system; a runbook judges the
-- value it reads now and prints the window beside it.

local M = {}

---The thresholds, in the seed's order. `op` is the breach condition.
M.THRESHOLDS = {
  { name = "heartbeat_stale_ratio", label = "heartbeat stale ratio", op = ">", limit = 0.25, window = "5 min",
    formula = "runs_without_heartbeat / running_runs" },
  { name = "callback_failed_ratio", label = "callback failed ratio", op = ">", limit = 0.10, window = "10 min",
    formula = "callback_events_failed / callback_events_total" },
  { name = "retry_success_rate", label = "retry success rate", op = "<", limit = 0.70, window = "30 min",
    formula = "succeeded / finished retries" },
  { name = "scrape_success_rate", label = "scrape success rate", op = "<", limit = 0.90, window = "30 min",
    formula = "succeeded / finished runs" },
}

-- The fields a usable /ops/metrics answer carries (values may be null).
M.FIELDS = { "running_runs", "runs_without_heartbeat", "callback_events_total", "callback_events_failed",
  "retry_success_rate", "scrape_success_rate", "heartbeat_stale_ratio", "callback_failed_ratio" }

-- A metrics answer inside every threshold, for --offline runs.
M.FIXTURE = { status = 200, json = {
  running_runs = 4, runs_without_heartbeat = 0, callback_events_total = 120, callback_events_failed = 0,
  retry_success_rate = 0.9, scrape_success_rate = 0.97, heartbeat_stale_ratio = 0, callback_failed_ratio = 0,
  overridden = {}, time = "2026-01-01T00:00:00.000Z" } }

---A number, or nil for JSON null / missing / anything else.
function M.number(v)
  return math.type(v) and v or nil
end

---Judge one threshold against a metrics table.
---@return table { name, label, op, limit, window, value (number|nil), breach (bool) }
function M.judge(t, metrics)
  local v = M.number(metrics[t.name])
  local breach = false
  if v then
    if t.op == ">" then breach = v > t.limit else breach = v < t.limit end
  end
  return { name = t.name, label = t.label, op = t.op, limit = t.limit, window = t.window, formula = t.formula,
    value = v, breach = breach }
end

---Every threshold judged, in order.
function M.evaluate(metrics)
  local out = {}
  for i, t in ipairs(M.THRESHOLDS) do out[i] = M.judge(t, metrics) end
  return out
end

---The breaches among evaluated results.
function M.breaches(results)
  local out = {}
  for _, r in ipairs(results) do if r.breach then out[#out + 1] = r end end
  return out
end

local function num(v)
  if v == nil then return "no data" end
  -- JSON numbers arrive as floats: show whole ones as integers
  if math.type(v) == "integer" or (v == math.floor(v) and math.abs(v) < 2 ^ 53) then
    return ("%d"):format(v)
  end
  local s = ("%.3f"):format(v):gsub("0+$", ""):gsub("%.$", ".0")
  return s
end
M.num = num

---"value 0.4 > 0.25" for a breach, "value 0.1 (alert when > 0.25)" otherwise.
function M.describe(r)
  if r.value == nil then
    return ("no data (alert when %s %s)"):format(r.op, num(r.limit))
  end
  if r.breach then
    return ("%s %s %s"):format(num(r.value), r.op, num(r.limit))
  end
  return ("%s (alert when %s %s)"):format(num(r.value), r.op, num(r.limit))
end

---One line per threshold: "BREACH heartbeat stale ratio  0.4 > 0.25  (heartbeat_stale_ratio; alert window 5 min)".
function M.format(r)
  local mark = r.breach and "BREACH" or (r.value == nil and "nodata" or "ok    ")
  return ("%s %-22s %s  (%s; alert window %s)"):format(mark, r.label, M.describe(r), r.name, r.window)
end

---A dedup key naming exactly this set of breaches (order-independent).
function M.breach_key(prefix, breaches)
  local names = {}
  for _, r in ipairs(breaches) do names[#names + 1] = r.name end
  table.sort(names)
  return prefix .. ":" .. table.concat(names, ",")
end

---GET <base>/ops/metrics through the step context; fails the step with a
---one-line reason when it is unreachable, not 200, or not the expected JSON.
function M.metrics(ctx, base, o)
  local url = base .. "/ops/metrics"
  local resp, err = ctx:try_http({ url = url, timeout = (o and o.timeout) or 10,
    fixture = (o and o.fixture) or M.FIXTURE })
  if not resp then ctx:fail("%s; is the hub up? (runbook run verify-deployment)", err) end
  if resp.status ~= 200 then
    ctx:fail("GET %s answered HTTP %d: %s", url, resp.status, (resp.body or ""):sub(1, 120):gsub("%c", " "))
  end
  local m = require("cjson.safe").decode(resp.body or "")
  if type(m) ~= "table" then ctx:fail("GET %s: the answer is not JSON", url) end
  for _, f in ipairs(M.FIELDS) do
    if m[f] == nil then ctx:fail("GET %s: field %s is missing; is this the orchestrator hub?", url, f) end
  end
  return m
end

return M
