-- check-kv-usage — seed 001's open task "KV usage threshold notification":
-- today's KV operations against the Workers Free plan's daily limits (read
-- 100,000; write, delete and list 1,000 each — the seed's table). At the
-- threshold (80 % by default, where the seed decided to move to Workers
-- Paid) it notifies once per day and level; at 100 % it fails, because KV
-- then refuses that operation until the day ends (00:00 UTC).
--
-- The counts come from the local hub's /api/admin/kv-usage, which counts
-- every KV call its routes make; a deployed Worker's usage is in the
-- Cloudflare dashboard, hence local only.
local rb = require("runbook")
local notify = require("stdlib.notify")

-- Workers KV, Free plan, per day (seed 001)
local LIMITS = { read = 100000, write = 1000, delete = 1000, list = 1000 }
local OPS = { "read", "write", "delete", "list" }

local function commas(n)
  local s = tostring(math.floor(n))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

local function over(ctx, pct)
  local names = {}
  for _, op in ipairs(OPS) do
    local p = ctx:get("pct")[op]
    if p >= pct then names[#names + 1] = ("%s %.1f %%"):format(op, p) end
  end
  return names
end

return rb.runbook {
  name = "check-kv-usage",
  summary = "Today's KV operations against the Free plan's daily limits: notify once at 80 %, fail at 100 %",
  -- reads and notifies only: no confirmation on a protected environment
  read_only = true,
  envs = { "local" },
  params = {
    { name = "threshold", type = "number", default = 80, min = 1, max = 100,
      help = "percent of a daily limit at which to notify" },
  },
  fixtures = {
    ["GET /api/admin/kv-usage"] = { status = 200,
      json = { day = "1970-01-01", read = 0, write = 0, delete = 0, list = 0 } },
  },
  steps = {
    rb.step "Read today's KV usage and compare it with the daily limits" {
      run = function(ctx)
        local url = ctx.env.kv_usage_url or (ctx.env.url .. "/api/admin/kv-usage")
        local r = ctx:get_url(url, { timeout = 10 })
        if r.status ~= 200 then
          ctx:fail("%s answered HTTP %d; it is the local hub's admin route (HUB_ADMIN=1, loopback only)", url, r.status)
        end
        local body = require("cjson.safe").decode(r.body)
        if type(body) ~= "table" then ctx:fail("%s did not answer JSON", url) end
        local counts, pct = {}, {}
        for _, op in ipairs(OPS) do
          local n = tonumber(body[op])
          if not n then ctx:fail("%s has no '%s' count", url, op) end
          counts[op] = n
          pct[op] = n * 100 / LIMITS[op]
        end
        ctx:log("KV usage on %s (UTC), Free plan daily limits:", tostring(body.day))
        for _, op in ipairs(OPS) do
          ctx:log("  %-6s %9s / %-9s %6.1f %%%s", op, commas(counts[op]), commas(LIMITS[op]), pct[op],
            pct[op] >= 100 and "  LIMIT REACHED" or (pct[op] >= ctx.params.threshold and "  over threshold" or ""))
        end
        ctx:set("day", body.day)
        ctx:set("counts", counts)
        ctx:set("pct", pct)
      end,
      verify = {
        rb.check("the hub reported all four operations", function(ctx)
          return ctx:get("pct") ~= nil
        end, { independent = true }),
      },
      hint = "Is the hub running (make hub-up)? The route is local-only: HUB_ADMIN=1 and a 127.0.0.1 URL.",
    },
    rb.step "Notify once when an operation reaches the threshold" {
      when = function(ctx) return #over(ctx, ctx.params.threshold) > 0 end,
      run = function(ctx)
        local names = over(ctx, ctx.params.threshold)
        local level = #over(ctx, 100) > 0 and "limit" or "threshold"
        if not ctx.env.notify_url then
          ctx:log("environment '%s' has no notify_url: reported here only", ctx.env.name)
          ctx:set("notified", "no channel")
          return
        end
        local text = ("KV usage on %s (%s): %s of the Free plan's daily limit. Seed 001: at %g %% move to Workers "
          .. "Paid ($5/month)."):format(ctx.env.name, tostring(ctx:get("day")), table.concat(names, ", "),
          ctx.params.threshold)
        -- once per day and level: crossing 80 % and later 100 % are two messages
        local r = notify.send(ctx, { url = ctx.env.notify_url, text = text, min_interval = 86400,
          dedup_key = ("kv-usage:%s:%s:%s"):format(ctx.env.name, tostring(ctx:get("day")), level) })
        ctx:set("notified", r.sent and "sent" or (r.suppressed_for and "suppressed")
          or ("not delivered: " .. (r.error or ("HTTP " .. tostring(r.status)))))
      end,
      verify = {
        rb.check("the notification was taken, or already sent today", function(ctx)
          local n = ctx:get("notified")
          return n == "sent" or n == "suppressed" or n == "no channel", "notification " .. tostring(n)
        end),
      },
      hint = "Check the environment's notify_url in runbook.lua.",
    },
    rb.step "Every operation is under its daily limit" {
      run = function(ctx)
        local worst, at = "read", -1
        for _, op in ipairs(OPS) do
          if ctx:get("pct")[op] > at then worst, at = op, ctx:get("pct")[op] end
        end
        ctx:log("highest: %s at %.1f %% of %s/day", worst, at, commas(LIMITS[worst]))
      end,
      verify = {
        rb.check("no operation at 100 % of its daily limit", function(ctx)
          local names = over(ctx, 100)
          return #names == 0, ("%s: KV refuses these until 00:00 UTC — move to Workers Paid, or cut the calls "
            .. "(seed 001: in-memory rate limiter, longer WebSocket interval)"):format(table.concat(names, ", "))
        end),
      },
    },
  },
}
