-- recover-queue-401 — seed 000's recovery ("when Slack spams 401"),
-- executable: confirm the queue refuses the canonical key, sync every holder
-- (the same code as sync-queue-keys, stdlib/keysync.lua), probe again, and
-- when it is still 401 work through the seed's list in order — wrong URL or
-- environment, wrong wrangler account, missing secrets — and stop naming the
-- one found, with its fix.
local rb = require("runbook")
local keysync = require("stdlib.keysync")
local secrets = require("stdlib.secrets")
local wrangler = require("stdlib.wrangler")
local health = require("stdlib.health")

local function origin(url) return url and url:match("^(https?://[^/]+)") end

local function expected_worker(ctx)
  if ctx.env.worker_name then return ctx.env.worker_name end
  local t = (ctx.env.workers or {})[1]
  return t and t.name
end

-- Each diagnosis returns nil when it found nothing, else the cause and fix.
local function wrong_url(ctx)
  ctx:log("resolved target: %s (environment '%s')", ctx.env.url .. "/api/queue", ctx.env.name)
  local want = expected_worker(ctx)
  local r = health.check(ctx, { url = ctx.env.url .. "/api/health", json = {},
    fixture = { status = 200, json = { status = "ok", worker = want or "orchestrator-hub" } } })
  local got = r.body and r.body.worker
  ctx:log("health: %s; worker %s, expected %s", r.ok and "ok" or (r.why or "failed"), tostring(got), tostring(want))
  if not r.ok then
    return ("wrong URL/environment: %s/api/health answered %s — check url for environment '%s' in runbook.lua")
      :format(ctx.env.url, r.why or "nothing", ctx.env.name)
  end
  if want and got ~= want then
    return ("wrong URL/environment: %s serves Worker '%s', expected '%s' — point url for environment '%s' "
      .. "at %s (or pass the right --env)"):format(ctx.env.url, tostring(got), want, ctx.env.name, want)
  end
  for _, t in ipairs(secrets.targets(ctx)) do
    if t.health_url and origin(t.health_url) ~= origin(ctx.env.url) then
      return ("wrong URL/environment: the secrets went to %s at %s, but the queue probed is %s — make url and "
        .. "workers[].health_url name the same Worker"):format(secrets.label(t), origin(t.health_url), origin(ctx.env.url))
    end
  end
end

local function wrong_account(ctx)
  local remote = false
  for _, t in ipairs(secrets.targets(ctx)) do if t.backend == "wrangler" then remote = true end end
  if not remote then
    ctx:log("account: not applicable (no wrangler targets; local secrets)")
    return nil
  end
  local who, err = wrangler.whoami(ctx)
  if not who then
    return ("wrong account: %s — run `wrangler login` (or set CLOUDFLARE_API_TOKEN) and retry"):format(err)
  end
  local want = ctx.params.account or ctx.env.account
  ctx:log("wrangler account: %s%s", tostring(who.email or who.account or "?"),
    want and (", expected " .. want) or " (no expected account: set account = \"...\" in runbook.lua or -p account=...)")
  if want and who.email ~= want and who.account ~= want then
    return ("wrong account: wrangler is logged in as %s, expected %s — `wrangler logout && wrangler login` as %s, "
      .. "then run this again"):format(tostring(who.email or who.account), want, want)
  end
end

local function missing_secrets(ctx)
  local gaps = {}
  for _, t in ipairs(secrets.targets(ctx)) do
    local listed, err = keysync.listed(ctx, t)
    if not listed then
      gaps[#gaps + 1] = secrets.label(t) .. " (cannot list: " .. tostring(err) .. ")"
    else
      local names = {}
      for _, n in ipairs(keysync.NAMES) do names[#names + 1] = n .. (listed[n] and " yes" or " NO") end
      ctx:log("%s: %s", secrets.label(t), table.concat(names, ", "))
      local miss = keysync.missing(listed)
      if #miss > 0 then gaps[#gaps + 1] = secrets.label(t) .. " lacks " .. table.concat(miss, " and ") end
    end
  end
  if #gaps > 0 then
    return ("missing secrets: %s — run `runbook run sync-queue-keys --env %s` and check its put step's output")
      :format(table.concat(gaps, "; "), ctx.env.name)
  end
end

return rb.runbook {
  name = "recover-queue-401",
  summary = "The queue answers 401 to the canonical key: sync every holder, and if still 401 find out why",
  params = {
    { name = "propagation_timeout", type = "duration", default = "30s",
      help = "how long to wait for the synced key to be served" },
    { name = "account", type = "string",
      help = "the Cloudflare account (email) wrangler must be logged into; default: account in runbook.lua" },
  },
  reload = { key = function(ctx) return keysync.canonical_key(ctx) end },
  steps = {
    rb.step "Confirm the symptom: the queue refuses the canonical key" {
      run = function(ctx)
        local key = ctx:set("key", keysync.canonical_key(ctx))
        ctx:log("probing %s/api/queue with the canonical key %s", ctx.env.url, keysync.fp(key))
        -- offline, the fixture answers 401 so the whole recovery is exercised
        local status, why = keysync.probe_once(ctx, key, false)
        ctx:set("symptom_status", status)
        ctx:set("symptom", status == 401)
        if status == 200 then
          ctx:log("no symptom: the queue accepts the canonical key (HTTP 200); nothing to recover")
        elseif status == 401 then
          ctx:log("symptom confirmed: HTTP 401 with the canonical key")
        else
          ctx:fail("the queue answered %s, not 401: this runbook recovers key drift only", why or ("HTTP " .. status))
        end
      end,
      verify = {
        rb.check("the queue answered 401 (symptom) or 200 (no symptom)", function(ctx)
          local s = ctx:get("symptom_status")
          return s == 401 or s == 200, "got " .. tostring(s)
        end),
      },
      hint = "Not a 401: see whether the hub is up (`runbook run verify-deployment`) and that url in runbook.lua is right.",
    },
    rb.step "Sync the canonical key to every holder" {
      when = function(ctx) return ctx:get("symptom") end,
      run = function(ctx)
        local key = ctx:get("key")
        local plan = keysync.plan(ctx, key)
        keysync.log_plan(ctx, plan)
        keysync.put_workers(ctx, key, plan)
        if ctx.env.daemon then keysync.sync_daemon(ctx, key, plan) end
      end,
      verify = {
        rb.check("every readable holder holds the canonical key", function(ctx)
          return keysync.all_equal(ctx, ctx:get("key"))
        end),
      },
      hint = "See the step's output for the holder that could not be written.",
    },
    rb.step "Probe again with the canonical key" {
      when = function(ctx) return ctx:get("symptom") end,
      run = function(ctx)
        local key = ctx:get("key")
        local term = require("runbook.term.core")
        local deadline = term.monotonic() + ctx.params.propagation_timeout
        local status
        -- a 401 that outlives the wait is the next step's to diagnose, so the
        -- wait ends by itself at the deadline instead of failing the step
        local _, skipped = ctx:poll({ what = "/api/queue to accept the canonical key", every = 0.25, backoff = 1.5,
          max_every = 3, timeout = ctx.params.propagation_timeout + 10,
          check = function()
            status = keysync.probe_once(ctx, key, true)
            local settled = status == 200 or (status ~= 401 and status ~= 0)
            return settled or ctx.mode ~= "run" or term.monotonic() >= deadline, "HTTP " .. tostring(status)
          end })
        if skipped then status = nil end
        ctx:set("after_status", status)
        ctx:log("after the sync: %s", status and ("HTTP " .. status) or "not probed (writes were simulated)")
      end,
      verify = {
        rb.check("the queue answered", function(ctx)
          local s = ctx:get("after_status")
          return s == nil or s == 200 or s == 401, "got " .. tostring(s)
        end),
      },
    },
    rb.step "Diagnose a 401 that survived the sync: URL, account, secrets" {
      when = function(ctx) return ctx:get("after_status") == 401 end,
      run = function(ctx)
        local causes = {}
        for _, d in ipairs({ wrong_url, wrong_account, missing_secrets }) do
          local c = d(ctx)
          if c then causes[#causes + 1] = c end
        end
        if #causes > 0 then
          for i = 2, #causes do ctx:log("also: %s", causes[i]) end
          ctx:fail("%s", causes[1])
        end
        ctx:log("URL, account and secrets look right")
      end,
      verify = {
        rb.check("the queue accepts the canonical key", function(ctx)
          local s = keysync.probe_once(ctx, ctx:get("key"), true)
          return s == 200, ("still HTTP %s, and URL, account and secrets look right: a Worker may serve an old "
            .. "deployment — `wrangler deployments list`, then deploy again"):format(tostring(s))
        end),
      },
      hint = "Seed 000: still 401 after a sync means the wrong Worker, the wrong account, or secrets that are not set.",
    },
    keysync.probe_step("Verify: 401 without a key, 200 with the canonical key", {
      when = function(ctx) return ctx:get("symptom") end }),
  },
}
