-- check-secret-drift — seed 001's drift-detection job and secret inventory:
-- every holder of the queue key (canonical file, daemon env and the key the
-- running daemon actually polls with, each Worker environment) side by side
-- as fingerprints, a synthetic probe of the queue with each distinct key,
-- and a verdict. Drift fails the check and is reported once through the
-- notification channel: the same drift state (who, which fingerprints) is
-- not reported again within `min_notify_interval`, across runs — the seed's
-- cure for alert spam. Read-only: it never changes a holder (sync-queue-keys
-- does).
local rb = require("runbook")
local keysync = require("stdlib.keysync")
local notify = require("stdlib.notify")

local function drifted(ctx)
  local names = {}
  for _, r in ipairs(ctx:get("holders") or {}) do
    if r.drift then names[#names + 1] = r.name end
  end
  return names
end

-- the inventory without values: what later steps and the journal may keep
local function public(rows)
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { name = r.name, kind = r.kind, fps = r.fps, drift = r.drift, why = r.why }
  end
  return out
end

return rb.runbook {
  name = "check-secret-drift",
  summary = "Inventory every holder of the queue key, probe with each distinct key, report drift once",
  -- reads and notifies only: no confirmation on a protected environment
  read_only = true,
  params = {
    { name = "min_notify_interval", type = "duration", default = "1h",
      help = "the same drift is reported at most once per this interval" },
  },
  steps = {
    rb.step "Inventory every holder of the queue key" {
      run = function(ctx)
        local key = keysync.canonical_key(ctx)
        local rows = keysync.inventory(ctx, key)
        ctx:log("%-48s %-18s %-18s %s", "HOLDER", keysync.NAMES[1], keysync.NAMES[2], "")
        for _, r in ipairs(rows) do
          ctx:log("%-48s %-18s %-18s %s", r.name, r.fps[keysync.NAMES[1]] or "-", r.fps[keysync.NAMES[2]] or "-",
            r.drift and ("DRIFT: " .. (r.why or "differs")) or (r.why and ("(" .. r.why .. ")") or "ok"))
        end
        ctx:set("canonical_fp", keysync.fp(key))
        ctx:set("holders", public(rows))
      end,
      verify = {
        rb.check("every holder was read", function(ctx)
          for _, r in ipairs(ctx:get("holders")) do
            if r.kind == "remote" and r.fps[keysync.NAMES[1]] == "(unknown)" then
              return false, r.name .. ": " .. tostring(r.why)
            end
          end
          return true
        end),
      },
      hint = "A Worker environment that cannot be listed: check `wrangler whoami` (recover-queue-401 does).",
    },
    rb.step "Probe the queue with each distinct key" {
      run = function(ctx)
        local key = keysync.canonical_key(ctx)
        local keys = keysync.distinct_keys(keysync.inventory(ctx, key))
        local probes = {}
        local status = keysync.probe_once(ctx, nil, false)
        ctx:log("%-18s -> HTTP %s", "no key", tostring(status))
        probes[#probes + 1] = { fp = "(no key)", status = status }
        for _, k in ipairs(keys) do
          local s, why = keysync.probe_once(ctx, k.value, k.value == key)
          ctx:log("%-18s -> HTTP %s%s  held by %s", k.fp, tostring(s), why and (" (" .. why .. ")") or "",
            table.concat(k.holders, ", "))
          probes[#probes + 1] = { fp = k.fp, status = s, canonical = k.value == key }
          if s == 0 then ctx:fail("cannot reach %s/api/queue: %s — is it running? is url right in runbook.lua?",
            ctx.env.url, tostring(why)) end
        end
        -- a queue that refuses the canonical key while every readable holder
        -- agrees: the served key drifted (a Worker not restarted or redeployed)
        local holders = ctx:get("holders")
        local canonical_refused = false
        for _, p in ipairs(probes) do if p.canonical and p.status ~= 200 then canonical_refused = true end end
        local explained = false
        for _, r in ipairs(holders) do
          if r.drift and (r.kind == "worker" or r.kind == "remote") then explained = true end
        end
        if canonical_refused and not explained then
          holders[#holders + 1] = { name = "served by " .. ctx.env.url .. "/api/queue", kind = "served",
            fps = { [keysync.NAMES[1]] = "(not canonical)", [keysync.NAMES[2]] = "(not canonical)" }, drift = true,
            why = "refuses the canonical key though the Worker's secrets match: restart or redeploy it" }
          ctx:log("DRIFT: %s refuses the canonical key although no Worker holder differs", ctx.env.url)
        end
        ctx:set("holders", holders)
        ctx:set("probes", probes)
      end,
      verify = {
        rb.check("without a key the queue answers 401", function(ctx)
          local s = ctx:get("probes")[1].status
          return s == 401, "HTTP " .. tostring(s) .. ": the queue does not check X-API-Key"
        end),
      },
    },
    rb.step "Report the drift once through the notification channel" {
      when = function(ctx) return #drifted(ctx) > 0 end,
      run = function(ctx)
        local names = drifted(ctx)
        if not ctx.env.notify_url then
          ctx:log("environment '%s' has no notify_url: the drift is reported here only", ctx.env.name)
          ctx:set("notified", "no channel")
          return
        end
        local dedup = keysync.drift_key(ctx.env.name, ctx:get("holders"))
        local text = ("Queue key drift on %s: %s differ from the canonical key %s. Fix: runbook run sync-queue-keys "
          .. "--env %s"):format(ctx.env.name, table.concat(names, ", "), ctx:get("canonical_fp"), ctx.env.name)
        local r = notify.send(ctx, { url = ctx.env.notify_url, text = text, dedup_key = dedup,
          min_interval = ctx.params.min_notify_interval })
        if r.sent then
          ctx:log("drift reported to %s (dedup key %s)", ctx.env.notify_url, dedup)
          ctx:set("notified", "sent")
        elseif r.suppressed_for then
          ctx:set("notified", "suppressed")
        else
          ctx:set("notified", "not delivered: " .. (r.error or ("HTTP " .. tostring(r.status))))
        end
      end,
      verify = {
        rb.check("the report was taken, or the same drift was reported within the interval", function(ctx)
          local n = ctx:get("notified")
          return n == "sent" or n == "suppressed" or n == "no channel",
            "notification " .. tostring(n) .. " (drifted: " .. table.concat(drifted(ctx), ", ") .. ")"
        end),
      },
      hint = "Check the environment's notify_url in runbook.lua.",
    },
    rb.step "Verdict: every holder matches the canonical key" {
      run = function(ctx)
        local names = drifted(ctx)
        if #names == 0 then
          ctx:log("no drift: every holder uses %s", ctx:get("canonical_fp"))
        else
          ctx:log("drifted holders: %s", table.concat(names, "; "))
        end
      end,
      verify = {
        rb.check("no holder differs from the canonical key", function(ctx)
          local names = drifted(ctx)
          return #names == 0, ("drifted: %s — run `runbook run sync-queue-keys --env %s`"):format(
            table.concat(names, "; "), ctx.env.name)
        end),
      },
      hint = "sync-queue-keys moves every holder to the canonical key; recover-queue-401 also diagnoses a 401 that stays.",
    },
  },
}
