-- reprocess-session — seed 002's "Session Reprocessing", executable.
--
-- Reprocessing clears the session's processing events (started, failed,
-- processed), re-queues a session.completed message and lets the processing
-- worker pick it up fresh. The seed's verification — poll until
-- processing_status is processed or failed, then look at signal_count and
-- the last event — is done here with a timeout and backoff. A `failed`
-- outcome fails the run with the worker's reason and the command that
-- fixes it (a missing provider key: rotate-provider-key).
local rb = require("runbook")
local ops = require("stdlib.ops")
local sessions = require("stdlib.sessions")

local function session_fixture(status, events, signals)
  return { status = 200, json = { session = { id = "s-offline", project_id = "default", processing_status = status,
    signal_count = signals, processing_started_at = "2026-11-22T00:00:00.000Z" }, processing_status = status,
    events = events } }
end

local function show(ctx, s)
  ctx:log("session %s: %s, %s signals, last event %s", s.id, tostring(s.status), tostring(s.signal_count),
    tostring(s.last_event or "(none)"))
  if s.reason then ctx:log("failure reason: %s", s.reason) end
end

local function get(ctx)
  local s, err = sessions.get(ctx, ctx.params.id, { project = ctx.params.project })
  if not s then ctx:fail("%s", err) end
  return s
end

return rb.runbook {
  name = "reprocess-session",
  summary = "Reprocess one session and wait until it is processed (or say why it failed and what fixes it)",
  params = {
    { name = "id", type = "string", required = true, pattern = "^[%w%-_%.:]+$", example = "s-offline",
      help = "the session id" },
    { name = "project", type = "string", default = "default", pattern = "^[%w%-_%.:]+$",
      help = "the project id (the seed's /api/projects/<projectId>/sessions/...)" },
    { name = "timeout", type = "duration", default = "2m", help = "how long to wait for processed or failed" },
    { name = "min_signals", type = "int", default = 1, min = 0,
      help = "the least signal_count a processed session must have" },
  },
  fixtures = {
    -- offline the session is shown as it was before the request
    ["GET /api/sessions/s-offline"] = session_fixture("failed",
      { { type = "session.processing_failed", data = { reason = "ANTHROPIC_API_KEY is not set" } } }, 0),
  },
  reload = { key = ops.queue_key },
  steps = {
    rb.step "Read the session as it is now" {
      run = function(ctx)
        ctx:log("hub: %s", ctx.env.url)
        ctx:set("key", ops.queue_key(ctx))
        local s = get(ctx)
        show(ctx, s)
        ctx:set("status_before", s.status)
      end,
      no_verify = "reads only (a missing session fails the step)",
      hint = "404 'Session not found' is a data problem: look the session up in D1; reprocessing cannot help.",
    },
    rb.step "Ask for reprocessing" {
      run = function(ctx)
        local resp, err = sessions.reprocess(ctx, ctx.params.id, ctx:get("key"), { project = ctx.params.project })
        if not resp then ctx:fail("%s", err) end
        if resp.status == 401 then
          ctx:fail("the hub refused the key (401): the canonical key is not the hub's — run recover-queue-401")
        end
        if resp.status ~= 202 and resp.status ~= 200 then
          ctx:fail("reprocess answered HTTP %d: %s", resp.status, (resp.body or ""):sub(1, 120))
        end
        if not resp.simulated then
          ctx:log("accepted (HTTP %d): the processing events are cleared and session.completed is re-queued",
            resp.status)
        end
      end,
      no_verify = "the next step waits for the outcome (any answer but 200/202 fails this one)",
    },
    rb.step "Wait until the session is processed or failed" {
      run = function(ctx)
        local last
        local _, skipped = ctx:poll({ what = "processing_status processed or failed", every = 0.5, backoff = 1.5,
          max_every = 5, timeout = ctx.params.timeout,
          check = function()
            local s, err = sessions.get(ctx, ctx.params.id, { project = ctx.params.project })
            if not s then return false, err end
            last = s
            return s.status == "processed" or s.status == "failed", "processing_status " .. tostring(s.status)
          end })
        if skipped then return end
        show(ctx, last)
        ctx:set("status", last.status)
        ctx:set("signal_count", last.signal_count)
        ctx:set("last_event", last.last_event)
        if last.status == "failed" then
          local fix = sessions.fix_for(last, ctx.env.name, ctx.params.project)
          local next_cmd = fix.commands[1] and ("; fix: " .. table.concat(fix.commands, " && ")) or ""
          ctx:fail("session %s failed: %s (%s)%s", last.id, last.reason or "(no reason recorded)", fix.advice, next_cmd)
        end
      end,
      verify = {
        rb.check("processing_status is processed", function(ctx)
          return ctx:get("status") == "processed", "processing_status " .. tostring(ctx:get("status"))
        end),
        rb.check("the last event is session.processed", function(ctx)
          return ctx:get("last_event") == sessions.PROCESSED, "last event " .. tostring(ctx:get("last_event"))
        end),
        rb.check("signal_count is at least min_signals", function(ctx)
          local n = tonumber(ctx:get("signal_count")) or 0
          return n >= ctx.params.min_signals, ("signal_count %d < %d"):format(n, ctx.params.min_signals)
        end),
      },
      hint = "Failed: run the fix named above, then this runbook again. Still processing at the timeout: is the " ..
        "processing worker up (investigate-queue-failure)? -p timeout=5m waits longer.",
    },
  },
}
