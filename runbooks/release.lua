-- release — seed 004's `npm run release:hub` / `release:canary` wrappers
-- and seed 002's "Deployment verification" (deploy, health, smoke), as one
-- runbook.
--
-- Seed 004's trap: one wrangler.toml, several deploy targets. `wrangler
-- deploy` reaches script orchestrator-hub, `wrangler deploy --env canary`
-- orchestrator-hub-canary, each at its own URL, and D1 migrations are local
-- unless --remote. So the operator states -p where=local|remote (no
-- default); the first step prints the Worker script, the wrangler --env and
-- the URL it resolved, and a remote release goes on only once the SCRIPT
-- NAME is typed back (--yes in CI), so deploying the canary when you meant
-- default (or the reverse) is caught before anything changes. Then the D1
-- migrations (as apply-d1-migrations does), the deploy, and proof: health
-- at the URL names the deployed script (and version, when the Worker
-- reports one), then a smoke request.
--
-- Locally "deploy" is a restart of the hub under wrangler dev through the
-- environment's restart command (its workers entry), which is how it picks
-- up new code and .dev.vars.
local rb = require("runbook")
local ops = require("stdlib.ops")
local cjson = require("cjson.safe")
local health = require("stdlib.health")
local migration = require("stdlib.migration")
local wrangler = require("stdlib.wrangler")

local HEALTH = { status = 200, json = { status = "ok", worker = "orchestrator-hub", time = "2026-01-01T00:00:00Z" } }

-- The workers entry a local release restarts (the first with a restart command).
local function restartable(ctx)
  for _, w in ipairs(ctx.env.workers or {}) do
    if w.restart then return w end
  end
  return nil
end

-- The wrangler --env of a remote release: -p wrangler_env, else the
-- environment's wrangler_env, else the one wrangler worker it lists. Two
-- candidates (production lists both default and --env production for its
-- secrets) is exactly the confusion this runbook exists for: it asks.
local function wrangler_env(ctx)
  if ctx.params.wrangler_env ~= nil then return ctx.params.wrangler_env end
  if ctx.env.wrangler_env ~= nil then return ctx.env.wrangler_env end
  local seen, list = {}, {}
  for _, w in ipairs(ctx.env.workers or {}) do
    if w.backend == "wrangler" and not seen[w.env or ""] then
      seen[w.env or ""] = true
      list[#list + 1] = w.env or ""
    end
  end
  if #list == 1 then return list[1] end
  local shown = {}
  for i, e in ipairs(list) do shown[i] = e == "" and "top-level (no --env)" or ("--env " .. e) end
  ctx:fail("environment '%s' does not say which wrangler env to deploy (%s): pass -p wrangler_env=NAME, or " ..
    "-p wrangler_env= for the top-level script, or set wrangler_env in runbook.lua", ctx.env.name,
    #shown > 0 and ("its workers name " .. table.concat(shown, " and ")) or "it names no wrangler worker")
end

local function base_name(ctx)
  if ctx.env.worker_name then return ctx.env.worker_name end
  for _, w in ipairs(ctx.env.workers or {}) do
    if w.name then return w.name end
  end
  return ctx.project and ctx.project.name or nil
end

-- Everything the release will touch, resolved once and journaled.
local function resolve(ctx)
  local where = ctx.params.where
  local t = { where = where, url = ctx.params.url or ctx.env.url }
  if not t.url then ctx:fail("environment '%s' has no url in runbook.lua; pass -p url=...", ctx.env.name) end
  local base = base_name(ctx)
  if not base then ctx:fail("environment '%s' names no Worker (workers = { { name = ... } } in runbook.lua)", ctx.env.name) end
  if where == "local" then
    t.script = base
    local w = restartable(ctx)
    if not w then
      ctx:fail("environment '%s' has no restart command for its hub (workers[].restart in runbook.lua)", ctx.env.name)
    end
    t.restart = w.restart
  else
    t.wrangler_env = wrangler_env(ctx)
    t.script = wrangler.script_name(base, t.wrangler_env)
  end
  local d1, err = migration.d1_target_where(ctx, where, { env = t.wrangler_env })
  if not d1 then ctx:fail("%s", err) end
  t.d1 = d1
  return t
end

local function hub_child(ctx)
  local dir = ctx.env.hub_state and require("runbook.project").path(ctx.project, ctx.env.hub_state)
  local raw = dir and ctx:read_file(dir .. "/child.json", { missing_ok = true })
  return raw and cjson.decode(raw) or nil
end

local function first_line(s) return (s or ""):match("[^\n]*%S[^\n]*") or "" end

return rb.runbook {
  name = "release",
  summary = "Release the hub: state LOCAL or REMOTE, confirm the script name, migrate D1, deploy, verify health",
  params = {
    { name = "where", type = "enum", values = { "local", "remote" }, required = true, example = "local",
      help = "local (restart the hub under wrangler dev) or remote (wrangler deploy); there is no default" },
    { name = "wrangler_env", type = "string", pattern = "^[%w_%-]*$",
      help = "wrangler --env to deploy (default: the environment's wrangler_env; empty = top-level script)" },
    { name = "url", type = "url", help = "where the released Worker answers (default: the environment's url)" },
    { name = "timeout", type = "duration", default = "60s", help = "how long to wait for the Worker's health" },
  },
  fixtures = {
    ["GET /api/health"] = HEALTH,
    ["GET /api/ready"] = { status = 200, json = { status = "ok", d1 = true, kv = true } },
    ["GET /api/queue/peek"] = { status = 200, json = { store = "d1", pending = 0 } },
  },
  steps = {
    rb.step "Show the target (LOCAL or REMOTE, script, wrangler env, URL) and confirm the script" {
      run = function(ctx)
        local t = resolve(ctx)
        local o = {}
        if t.where == "remote" then o.account = wrangler.account(ctx) or false end
        ctx:log("where:    %s", migration.describe_where(t.d1, o))
        ctx:log("script:   %s", t.script)
        if t.where == "remote" then
          ctx:log("deploy:   wrangler deploy%s", t.wrangler_env ~= "" and (" --env " .. t.wrangler_env) or
            " (no --env: the top-level script)")
        else
          ctx:log("deploy:   restart the hub: %s", table.concat(t.restart, " "))
        end
        ctx:log("URL:      %s", t.url)
        -- a workers.dev host names its script: a URL of another script is
        -- the seed's canary/default mix-up, refused before anything changes
        local served = wrangler.workers_dev_script(t.url)
        if served and served ~= t.script then
          ctx:fail("%s is script %s's URL, not %s's: pick the wrangler env and the URL of the same script",
            t.url, served, t.script)
        end
        if t.where == "remote" then
          local ok, why = ctx:confirm(("Deploy Worker script %s to %s (%s)."):format(t.script, t.url,
            migration.describe_where(t.d1, o)), t.script)
          if not ok then ctx:refuse("script %s not confirmed, nothing changed: %s", t.script, why) end
        end
        ctx:set("target", t)
      end,
      no_verify = "resolves and confirms only (a remote script not confirmed by its name stops here); nothing changes yet",
      hint = "Compare the script and URL with what you mean to release: -p wrangler_env=canary for " ..
        "orchestrator-hub-canary, -p wrangler_env= for orchestrator-hub; -p url= when runbook.lua's is not its URL.",
    },
    rb.step "Apply pending D1 migrations where stated" {
      run = function(ctx)
        local pending, err = migration.apply_pending(ctx, ctx:get("target").d1)
        if not pending then ctx:fail("%s", err) end
      end,
      verify = {
        migration.none_pending(function(ctx) return ctx:get("target").d1 end),
      },
      hint = "Nothing is deployed yet. Apply them alone with `runbook run apply-d1-migrations -p where=...` " ..
        "to see wrangler's full answer.",
    },
    rb.step "Deploy (REMOTE: wrangler deploy; LOCAL: restart the hub)" {
      run = function(ctx)
        local t = ctx:get("target")
        if t.where == "local" then
          local before = hub_child(ctx)
          ctx:set("hub_pid_before", before and before.pid or nil)
          local r = ctx:run(t.restart, { timeout = 180, cwd = ctx.project and ctx.project.root })
          if r.code ~= 0 then
            ctx:fail("hub restart failed: %s", first_line(r.stderr_masked or r.stderr) ~= "" and
              first_line(r.stderr_masked or r.stderr) or ("exit " .. tostring(r.code)))
          end
          if not r.simulated then ctx:log("%s", first_line(r.stdout_masked or r.stdout)) end
          return
        end
        local r, err = wrangler.deploy(ctx, { env = t.wrangler_env })
        if not r then ctx:fail("%s", err) end
        local d = wrangler.deployed(r.stdout)
        ctx:set("deployed", d)
        ctx:log("wrangler: script %s, URL %s, version %s", d.script or "(not named)", d.url or "(not printed)",
          d.version or "(not printed)")
      end,
      verify = {
        rb.check("the confirmed script was deployed", function(ctx)
          local t = ctx:get("target")
          if t.where == "local" then
            -- the supervisor's child.json names the process serving the hub
            if not ctx.env.hub_state then return true end
            local now = hub_child(ctx)
            return now ~= nil and now.pid ~= ctx:get("hub_pid_before"),
              "the hub is still served by pid " .. tostring(ctx:get("hub_pid_before"))
          end
          local d = ctx:get("deployed")
          if d.script and d.script ~= t.script then
            return false, ("wrangler deployed %s, not the confirmed %s"):format(d.script, t.script)
          end
          if d.url and d.url ~= t.url then
            return false, ("wrangler serves it at %s, not at %s"):format(d.url, t.url)
          end
          return true
        end),
      },
      hint = "REMOTE: `wrangler whoami` must show the right account, and wrangler_cwd must hold the wrangler.toml. " ..
        "LOCAL: the hub's supervisor must be running (examples/hub/hubctl.lua status).",
    },
    rb.step "Verify health at the URL names the released script" {
      run = function(ctx)
        local t = ctx:get("target")
        local r
        local _, skipped = ctx:poll({ what = t.url .. "/api/health answering status ok", every = 1, backoff = 1.5, timeout = ctx.params.timeout,
          check = function()
            r = health.check(ctx, { url = t.url .. "/api/health", json = { status = "ok" }, timeout = 10 })
            return r.ok, r.why
          end })
        -- dry-run/offline: the deploy was simulated, nothing new to wait for
        if skipped then return ctx:log("health: not awaited, the deploy was simulated (%s)", ctx.mode) end
        ctx:log("%s", health.format(r))
        local body = r.body or {}
        ctx:set("health", { ok = r.ok, why = r.why, worker = body.worker, version = body.version })
        ctx:log("the Worker reports: %s%s", body.worker and ("worker " .. tostring(body.worker)) or "no worker name",
          body.version and (", version " .. tostring(body.version)) or "")
      end,
      verify = {
        rb.check("health answers status ok", function(ctx)
          local h = ctx:get("health")
          return h and h.ok, h and h.why or "no answer"
        end),
        rb.check("the health names the released script (when it reports one)", function(ctx)
          local h, t = ctx:get("health"), ctx:get("target")
          return h.worker == nil or h.worker == t.script,
            ("%s serves %s, not %s: the URL and the deployed script differ"):format(t.url, tostring(h.worker), t.script)
        end),
        rb.check("the version is the deployed one (when both are reported)", function(ctx)
          local h, d = ctx:get("health"), ctx:get("deployed") or {}
          return h.version == nil or d.version == nil or h.version == d.version,
            ("the Worker runs version %s, wrangler deployed %s"):format(tostring(h.version), tostring(d.version))
        end),
      },
      hint = "Another script's name: the URL is not the deployed script's (the seed's canary/default mix-up) — " ..
        "release again with the URL and wrangler env of one script. No answer: look at the Worker's logs.",
    },
    rb.step "Smoke request: ready (D1 and KV) and an authenticated queue read" {
      run = function(ctx)
        local t = ctx:get("target")
        local key = ops.queue_key(ctx)
        local res = health.many(ctx, {
          { name = "ready", url = t.url .. "/api/ready", json = { status = "ok", d1 = true, kv = true } },
          { name = "queue peek with key", url = t.url .. "/api/queue/peek", headers = { ["X-API-Key"] = key },
            fields = { "store", "pending" } },
        })
        local out = {}
        for _, r in ipairs(res) do
          ctx:log("%s", health.format(r))
          out[#out + 1] = { name = r.name, ok = r.ok, why = r.why }
        end
        ctx:set("smoke", out)
      end,
      verify = {
        rb.check("ready and the queue answer", function(ctx)
          for _, r in ipairs(ctx:get("smoke")) do
            if not r.ok then return false, r.name .. ": " .. tostring(r.why) end
          end
          return true
        end),
      },
      hint = "ready failing names the binding (d1/kv); the queue's 401: the canonical key and the Worker's " ..
        "secrets differ (runbook run sync-queue-keys).",
    },
  },
}
