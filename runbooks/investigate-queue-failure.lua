-- investigate-queue-failure — seed 002's "Queue Failure Investigation",
-- executable.
--
-- Symptoms: sessions stuck in `processing` for more than 10 minutes, or
-- `failed`. Diagnosis: the health of the API worker and of the processing
-- worker, the stuck sessions, and the reason each failed session recorded
-- (session.processing_failed). Resolution: each reason mapped to the
-- command that fixes it — a missing provider key is set with
-- rotate-provider-key, anything else is reprocessed — printed in the order
-- to run them. The run fails while any session needs attention.
local rb = require("runbook")
local health = require("stdlib.health")
local sessions = require("stdlib.sessions")

local function checks(ctx)
  local out = {}
  for _, w in ipairs({ { "api", ctx.env.url }, { "processing worker", ctx.env.worker_url or ctx.env.url } }) do
    out[#out + 1] = { name = w[1], url = w[2] .. "/api/health", json = { status = "ok" }, timeout = 10 }
  end
  return out
end

return rb.runbook {
  name = "investigate-queue-failure",
  summary = "Find stuck and failed sessions, check both workers, and print the command that fixes each",
  params = {
    { name = "stuck_after", type = "duration", default = "10m",
      help = "a session processing for longer than this is stuck" },
    { name = "max_failed", type = "int", default = 50, min = 1, max = 1000,
      help = "read the reasons of at most this many failed sessions" },
  },
  fixtures = {
    ["GET /api/health"] = { status = 200, json = { status = "ok", worker = "orchestrator-hub" } },
    ["GET /api/sessions"] = { status = 200, json = { count = 0, sessions = {} } },
  },
  steps = {
    rb.step "Check the API and the processing worker, concurrently" {
      run = function(ctx)
        local res = health.many(ctx, checks(ctx))
        for _, r in ipairs(res) do ctx:log("%s", health.format(r)) end
        ctx:set("health", res)
      end,
      verify = {
        rb.check("both workers answer /api/health with status ok", function(ctx)
          local bad = {}
          for _, r in ipairs(ctx:get("health")) do
            if not r.ok then bad[#bad + 1] = ("%s: %s"):format(r.name, r.why) end
          end
          return #bad == 0, table.concat(bad, "; ")
        end),
      },
      hint = "A worker that does not answer cannot process anything: check its logs and deployment " ..
        "(verify-deployment), then run this again.",
    },
    rb.step "Find sessions stuck in processing" {
      run = function(ctx)
        local minutes = ctx.params.stuck_after / 60
        local list, err = sessions.list(ctx, { status = "processing", older_than_min = minutes })
        if not list then ctx:fail("%s", err) end
        local stuck = {}
        for _, s in ipairs(list) do
          stuck[#stuck + 1] = { id = s.id, project = s.project_id, status = "processing",
            started_at = s.processing_started_at }
          ctx:log("stuck: %s (project %s), processing since %s", s.id, tostring(s.project_id),
            tostring(s.processing_started_at))
        end
        ctx:log("%d session(s) processing for more than %g min", #stuck, minutes)
        ctx:set("stuck", stuck)
      end,
      no_verify = "reads only (a failed listing fails the step); the last step judges",
    },
    rb.step "Read why failed sessions failed" {
      run = function(ctx)
        local list, err = sessions.list(ctx, { status = "failed" })
        if not list then ctx:fail("%s", err) end
        local failed = {}
        for i, s in ipairs(list) do
          if i > ctx.params.max_failed then
            ctx:log("… and %d more failed session(s) not read (-p max_failed=...)", #list - ctx.params.max_failed)
            break
          end
          local full, gerr = sessions.get(ctx, s.id, { project = s.project_id })
          if not full then ctx:fail("%s", gerr) end
          failed[#failed + 1] = { id = full.id, project = full.project, status = full.status, reason = full.reason }
          ctx:log("failed: %s — %s", full.id, full.reason or "(no reason recorded)")
        end
        ctx:log("%d failed session(s)", #list)
        ctx:set("failed", failed)
      end,
      no_verify = "reads only (a failed listing fails the step); the last step judges",
    },
    rb.step "Map each finding to the command that fixes it" {
      run = function(ctx)
        local env = ctx.env.name
        local seen, commands, findings = {}, {}, 0
        local function add(c)
          if not seen[c] then
            seen[c] = true
            commands[#commands + 1] = c
          end
        end
        -- provider keys first: reprocessing before the key is set fails again
        local all = {}
        for _, s in ipairs(ctx:get("failed")) do all[#all + 1] = s end
        for _, s in ipairs(ctx:get("stuck")) do all[#all + 1] = s end
        local fixes = {}
        for i, s in ipairs(all) do
          fixes[i] = sessions.fix_for(s, env, s.project)
          findings = findings + 1
          ctx:log("%s: %s → %s", s.id, fixes[i].finding, fixes[i].advice)
          if #fixes[i].commands > 1 then add(fixes[i].commands[1]) end
        end
        for _, f in ipairs(fixes) do
          if #f.commands > 0 then add(f.commands[#f.commands]) end
        end
        for _, c in ipairs(commands) do ctx:log("next: %s", c) end
        ctx:set("findings", findings)
        ctx:set("next_commands", commands)
      end,
      verify = {
        rb.check("no session is stuck or failed", function(ctx)
          local n = ctx:get("findings")
          local c = ctx:get("next_commands")
          return n == 0, ("%d session(s) need attention; run first: %s"):format(n, c[1] or "(see the findings above)")
        end),
      },
      hint = "Run the `next:` commands above in that order, then run this runbook again.",
    },
  },
}
