-- replay-dead-letters — seed 003's "Dead-letter Recovery": callbacks the
-- worker could not deliver wait as dead letters; POST /callbacks/replay
-- (same auth as /tasks: Bearer TASKS_AUTH_TOKEN) delivers each open one.
-- Callbacks are idempotent by eventId (the replay guard,
-- job_source_callback_events): a letter whose eventId was already
-- delivered must be closed as a duplicate, never applied a second time.
--
-- The runbook counts the open letters, notes which eventIds the guard
-- already holds, replays, then proves the count dropped and that every
-- already-delivered eventId's record is exactly as it was (the replay did
-- not apply it again). Locally the admin list names each letter; against a
-- deployed hub, which refuses admin routes, only the count (from
-- /ops/metrics) is known and the per-eventId proof is skipped, said so.
local rb = require("runbook")
local ops = require("stdlib.ops")

local OFFLINE_LETTERS = { status = 200, json = { count = 2, items = {
  { id = 1, event_id = "evt-offline-1", payload = { eventId = "evt-offline-1", runId = "run-1", type = "run.completed" },
    reason = "run run-1 not found", attempts = 1 },
  { id = 2, event_id = "evt-offline-2", payload = { eventId = "evt-offline-2", runId = "run-2" },
    reason = "run run-2 not found", attempts = 2 },
} } }

local function token_header(ctx)
  return { Authorization = "Bearer " .. ops.tasks_token(ctx) }
end

-- open letters → { count, ids (distinct eventIds, sorted), by_event = {eventId → n}, source }
local function open_letters(ctx)
  local dl = ops.dead_letters(ctx, ctx:get("base"), { fixture = OFFLINE_LETTERS })
  local out = { count = dl.count, source = dl.source }
  if dl.items then
    local n, ids = {}, {}
    for _, it in ipairs(dl.items) do
      if not n[it.event_id] then ids[#ids + 1] = it.event_id end
      n[it.event_id] = (n[it.event_id] or 0) + 1
    end
    table.sort(ids)
    out.ids, out.by_event, out.items = ids, n, dl.items
  end
  return out
end

local function record_view(e)
  return { source = e.source, received_at = e.received_at, run_id = e.run_id }
end

return rb.runbook {
  name = "replay-dead-letters",
  summary = "Replay the open callback dead letters; verify the count drops and no eventId is applied twice",
  params = {
    { name = "url", type = "url", help = "API/worker base URL serving /callbacks/replay (default: the environment's url)" },
  },
  fixtures = {
    ["GET /api/admin/dead-letters"] = OFFLINE_LETTERS,
  },
  steps = {
    rb.step "Count the open dead letters" {
      run = function(ctx)
        ctx:set("base", ops.base(ctx, "url", "url"))
        local open = open_letters(ctx)
        ctx:set("before", open.count)
        ctx:set("ids", open.ids or false)
        ctx:set("by_event", open.by_event or false)
        ctx:log("%s open dead letter%s (from the %s)", tostring(open.count), open.count == 1 and "" or "s", open.source)
        for i, it in ipairs(open.items or {}) do
          if i > 20 then ctx:log("... and %d more", #open.items - 20) break end
          ctx:log("#%s %s (attempts %s): %s", tostring(it.id), it.event_id, tostring(it.attempts), tostring(it.reason))
        end
      end,
      verify = {
        rb.check("the open count is known", function(ctx)
          return math.type(ctx:get("before")) ~= nil, "no count"
        end),
      },
      hint = "The count comes from /api/admin/dead-letters (local hub) or /ops/metrics; check the hub answers.",
    },
    rb.step "Note which eventIds were already delivered" {
      when = function(ctx) return ctx:get("ids") and #ctx:get("ids") > 0 end,
      run = function(ctx)
        local rec = ops.delivered(ctx, ctx:get("base"), ops.tasks_token(ctx), ctx:get("ids"))
        local snapshot, already = {}, {}
        for _, id in ipairs(ctx:get("ids")) do
          if rec[id] then
            snapshot[id] = record_view(rec[id])
            already[#already + 1] = id
            ctx:log("%s already delivered (%s, %s): its letter will be closed as a duplicate, not applied again",
              id, rec[id].source, rec[id].received_at)
          end
        end
        for _, id in ipairs(ctx:get("ids")) do
          local n = ctx:get("by_event")[id]
          if n > 1 and not rec[id] then
            ctx:log("%s has %d open letters: at most one is delivered, the rest are duplicates", id, n)
          end
        end
        ctx:set("already", already)
        ctx:set("snapshot", snapshot)
        ctx:log("%d of %d eventIds already delivered", #already, #ctx:get("ids"))
      end,
      verify = {
        rb.check("the replay guard answered for every eventId", function(ctx) return ctx:get("snapshot") ~= nil end),
      },
      hint = "GET /callbacks/events needs TASKS_AUTH_TOKEN (or a queue key) from the environment's tasks_token_file.",
    },
    rb.step "Replay them" {
      when = function(ctx) return (ctx:get("before") or 0) > 0 end,
      run = function(ctx)
        local url = ctx:get("base") .. "/callbacks/replay"
        local resp = ctx:http({ method = "POST", url = url, headers = token_header(ctx), body = "", timeout = 60,
          simulate = { status = 200, json = { replayed = 0, duplicates = 0, failed = 0, remaining = ctx:get("before") } } })
        if resp.status ~= 200 then
          ctx:fail("POST %s answered HTTP %d: %s", url, resp.status, ops.reason(resp))
        end
        local r = ops.json(ctx, resp, "POST " .. url)
        ctx:set("replay", { replayed = r.replayed, duplicates = r.duplicates, failed = r.failed, remaining = r.remaining })
        ctx:set("simulated", resp.simulated and true or false)
        ctx:log("replayed %s, duplicates %s (closed, not applied), still failing %s, remaining open %s",
          tostring(r.replayed), tostring(r.duplicates), tostring(r.failed), tostring(r.remaining))
        if resp.simulated then return end
        local open = open_letters(ctx)
        ctx:set("after", open.count)
        local still = {}
        for _, it in ipairs(open.items or {}) do
          still[#still + 1] = it.event_id .. ": " .. tostring(it.reason)
          if #still >= 5 then break end
        end
        ctx:set("still_open", still)
        ctx:log("open dead letters: %d -> %d", ctx:get("before"), open.count)
      end,
      verify = {
        rb.check("the open dead-letter count dropped", function(ctx)
          local before, after = ctx:get("before"), ctx:get("after")
          if after < before then return true end
          return false, ("still %d open (was %d): %s"):format(after, before, table.concat(ctx:get("still_open"), "; "))
        end),
      },
      hint = "A letter stays open while its callback still fails (e.g. its run does not exist): read the reasons " ..
        "above, fix the cause, run this again. 401: TASKS_AUTH_TOKEN in the environment's tasks_token_file is wrong.",
    },
    rb.step "Verify no eventId was applied twice" {
      when = function(ctx)
        return (ctx:get("before") or 0) > 0 and ctx:get("ids") and not (ctx:get("simulated") and ctx.dry_run)
      end,
      run = function(ctx)
        local rec = ops.delivered(ctx, ctx:get("base"), ops.tasks_token(ctx), ctx:get("ids"))
        local now = {}
        for _, id in ipairs(ctx:get("ids")) do now[id] = rec[id] and record_view(rec[id]) or false end
        ctx:set("records_after", now)
        for _, id in ipairs(ctx:get("already")) do
          ctx:log("duplicate %s: kept its original delivery (%s, %s)", id, now[id] and now[id].source or "?",
            now[id] and now[id].received_at or "?")
        end
      end,
      verify = {
        rb.check("every already-delivered eventId kept its one original delivery", function(ctx)
          local before, after = ctx:get("snapshot"), ctx:get("records_after")
          for _, id in ipairs(ctx:get("already")) do
            local a, b = before[id], after[id]
            if not b or a.received_at ~= b.received_at or a.source ~= b.source then
              return false, ("%s was delivered again (%s at %s)"):format(id, b and b.source or "?", b and b.received_at or "?")
            end
          end
          return true
        end),
        rb.check("every eventId replayed now was delivered once, by the replay", function(ctx)
          local before, after = ctx:get("snapshot"), ctx:get("records_after")
          local replayed = 0
          for _, id in ipairs(ctx:get("ids")) do
            if not before[id] and after[id] then
              if after[id].source ~= "replay" then
                return false, ("%s was delivered by %s, not by the replay"):format(id, after[id].source)
              end
              replayed = replayed + 1
            end
          end
          local want = ctx:get("replay").replayed
          return replayed == want, ("the replay reported %s delivered, the guard holds %d new records"):format(
            tostring(want), replayed)
        end),
        rb.check("every duplicate letter was reported as one", function(ctx)
          -- an already-delivered eventId: all its letters are duplicates;
          -- one delivered now: all its letters but the delivered one
          local before, after, by_event = ctx:get("snapshot"), ctx:get("records_after"), ctx:get("by_event")
          local want = 0
          for _, id in ipairs(ctx:get("ids")) do
            if before[id] then want = want + by_event[id]
            elseif after[id] then want = want + by_event[id] - 1 end
          end
          local got = ctx:get("replay").duplicates
          return got == want, ("the replay reported %s duplicates; the letters imply %d"):format(tostring(got), want)
        end),
      },
      hint = "An eventId applied twice is a bug in the callback receiver's replay guard; stop replaying and report it.",
    },
  },
}
