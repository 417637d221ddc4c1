-- check-slos — seed 003's initial alert thresholds, evaluated against the
-- hub's /ops/metrics:
--   heartbeat stale ratio  (runningWithoutHeartbeat / runningRuns)  > 0.25
--   callback failed ratio  (failedEvents / totalEvents)             > 0.10
--   retry success rate                                              < 0.70
--   scrape success rate                                             < 0.90
-- Every threshold is printed with its value; any breach fails the run
-- (exit 1) after one notification to the alert channel. The notification's
-- dedup key names the set of breaches, so a cron that runs this every few
-- minutes posts once per new situation, not once per run (the seeds' Slack
-- spam lesson); a different set of breaches is a new situation.
local rb = require("runbook")
local slo = require("stdlib.slo")
local notify = require("stdlib.notify")

local function check_threshold(t)
  local op = t.op == ">" and "<=" or ">="
  return rb.check(("%s %s %s"):format(t.label, op, slo.num(t.limit)), function(ctx)
    local r = slo.judge(t, ctx:get("metrics"))
    if r.breach then
      return false, ("%s is %s (%s)"):format(t.name, slo.describe(r), t.formula)
    end
    return true
  end)
end

local checks = {}
for i, t in ipairs(slo.THRESHOLDS) do checks[i] = check_threshold(t) end

return rb.runbook {
  name = "check-slos",
  summary = "Evaluate the SLO alert thresholds on /ops/metrics; exit 1 and notify once on a breach",
  -- reads and notifies only: no confirmation on a protected environment
  read_only = true,
  params = {
    { name = "url", type = "url", help = "API base URL (default: the environment's url)" },
    { name = "notify_interval", type = "duration", default = "6h",
      help = "do not repeat a notification for the same set of breaches within this time" },
  },
  steps = {
    rb.step "Read /ops/metrics" {
      run = function(ctx)
        local base = ctx.params.url or ctx.env.url
        if not base then ctx:fail("no API URL: set url = ... for environment '%s' in runbook.lua, or -p url=...", ctx.env.name) end
        ctx:set("base", base)
        local m = slo.metrics(ctx, base)
        local keep = {}
        for _, f in ipairs(slo.FIELDS) do keep[f] = slo.number(m[f]) end
        ctx:set("metrics", keep)
        ctx:log("running runs %s, without heartbeat %s; callback events %s, failed %s",
          slo.num(keep.running_runs), slo.num(keep.runs_without_heartbeat),
          slo.num(keep.callback_events_total), slo.num(keep.callback_events_failed))
        if type(m.overridden) == "table" and #m.overridden > 0 then
          ctx:log("note: pinned on the hub (admin seed): %s", table.concat(m.overridden, ", "))
        end
      end,
      verify = {
        rb.check("metrics answered with every SLO input", function(ctx) return ctx:get("metrics") ~= nil end),
      },
      hint = "Check the hub answers: runbook run verify-deployment.",
    },
    rb.step "Evaluate the alert thresholds" {
      run = function(ctx)
        local results = slo.evaluate(ctx:get("metrics"))
        for _, r in ipairs(results) do ctx:log("%s", slo.format(r)) end
        local breaches = slo.breaches(results)
        local names = {}
        for i, r in ipairs(breaches) do names[i] = r.label .. " " .. slo.describe(r) end
        ctx:set("breach_lines", names)
        ctx:set("breach_key", #breaches > 0 and slo.breach_key("check-slos:" .. ctx.env.name, breaches) or nil)
        ctx:log("%d of %d thresholds breached", #breaches, #results)
      end,
      no_verify = "only reads and prints; the last step judges",
    },
    rb.step "Notify the alert channel once for this set of breaches" {
      when = function(ctx) return ctx:get("breach_key") ~= nil end,
      run = function(ctx)
        local url = ctx.env.notify_url
        if not url then
          ctx:log("environment '%s' has no notify_url; not notifying", ctx.env.name)
          ctx:set("notified", "no channel")
          return
        end
        local text = ("SLO breach on %s (%s): %s"):format(ctx.env.name, ctx:get("base"),
          table.concat(ctx:get("breach_lines"), "; "))
        local r = notify.send(ctx, { url = url, text = text, dedup_key = ctx:get("breach_key"),
          min_interval = ctx.params.notify_interval })
        if r.sent then
          ctx:log("notified: %s", text)
        elseif r.suppressed_for then
          ctx:log("already notified for this set of breaches; not repeating")
        end
        ctx:set("notified", r.sent and "sent" or (r.suppressed_for and "suppressed" or
          (r.simulated and "simulated" or ("HTTP " .. tostring(r.status)))))
      end,
      verify = {
        rb.check("the alert channel has been told (now or earlier)", function(ctx)
          local n = ctx:get("notified")
          return n == "sent" or n == "suppressed" or n == "no channel", "notification answered " .. tostring(n)
        end),
      },
      hint = "Check the environment's notify_url (the Slack webhook) answers.",
    },
    rb.step "Every SLO within its threshold" {
      run = function(ctx)
        local n = #ctx:get("breach_lines")
        if n > 0 then ctx:log("%d breach%s: see the checks below", n, n == 1 and "" or "es") end
      end,
      verify = checks,
      hint = "Stale heartbeats: look for a stuck worker. Failed callbacks: runbook run replay-dead-letters. " ..
        "Low retry/scrape success: read the failed runs (GET /api/job-sources/runs?status=FAILED) " ..
        "and retry them with runbook run retry-failed-run.",
    },
  },
}
