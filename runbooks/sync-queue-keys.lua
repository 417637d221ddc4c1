-- sync-queue-keys — seed 000's `npm run sync:queue-keys`, executable: the
-- canonical key goes to both ASSISTANT_API_KEY and QUEUE_API_KEY on every
-- Worker environment and to the daemon, then the queue is probed.
--
-- Holders that already hold the key are left alone (compared by
-- fingerprint), so it is cheap to run every 30 minutes as the seed's
-- LaunchAgent did: `runbook schedule sync-queue-keys --every 30m`. A
-- deployed Worker never shows its secrets' values, so those are always put.
local rb = require("runbook")
local keysync = require("stdlib.keysync")

return rb.runbook {
  name = "sync-queue-keys",
  summary = "Push the canonical queue key to both Worker secrets everywhere and to the daemon; verify by probe",
  params = {
    { name = "propagation_timeout", type = "duration", default = "60s",
      help = "how long to wait for Workers to serve the key" },
  },
  -- secrets are never journaled: a resumed run reads the key again
  reload = { key = function(ctx) return keysync.canonical_key(ctx) end },
  steps = {
    rb.step "Read the canonical key and compare every holder with it" {
      run = function(ctx)
        local key = ctx:set("key", keysync.canonical_key(ctx))
        ctx:log("queue URL:      %s/api/queue", ctx.env.url or "(none)")
        ctx:log("canonical file: %s (%s)", keysync.canonical_path(ctx), keysync.fp(key))
        local plan = keysync.plan(ctx, key)
        keysync.log_plan(ctx, plan)
        local n = 0
        for _, w in ipairs(plan.workers) do if w.action == "put" then n = n + 1 end end
        ctx:log("%d of %d Worker targets to put%s", n, #plan.workers,
          plan.daemon and (plan.daemon.restart and "; daemon to update" or "; daemon current") or "")
      end,
      verify = {
        rb.check("the environment has a queue URL", function(ctx)
          return ctx.env.url ~= nil, "set url = ... for environment '" .. ctx.env.name .. "' in runbook.lua"
        end),
        rb.check("the canonical key is 64 hex characters", function(ctx)
          local k = ctx:get("key")
          return #k == 64 and k:match("^%x+$") ~= nil,
            "it is " .. #k .. " characters; generate a proper one with rotate-queue-key"
        end),
      },
      hint = "The canonical file is the one place the key is changed (seed 000); rotate-queue-key creates it.",
    },
    rb.step "Put the key as both secrets on every Worker target that differs" {
      run = function(ctx)
        local key = ctx:get("key")
        local done = keysync.put_workers(ctx, key, keysync.plan(ctx, key))
        ctx:set("workers_put", #done)
      end,
      verify = {
        rb.check("every readable Worker target holds the key in both secrets", function(ctx)
          return keysync.workers_equal(ctx, ctx:get("key"))
        end),
        rb.check("every Worker target lists ASSISTANT_API_KEY and QUEUE_API_KEY", function(ctx)
          return keysync.all_listed(ctx)
        end),
      },
      hint = "For a deployed Worker `wrangler whoami` must show the right account; recover-queue-401 checks it.",
    },
    rb.step "Update the daemon's env and restart it if its key changed" {
      when = function(ctx) return ctx.env.daemon ~= nil end,
      run = function(ctx)
        local key = ctx:get("key")
        ctx:set("daemon_restarted", keysync.sync_daemon(ctx, key, keysync.plan(ctx, key)))
      end,
      verify = {
        rb.check("the daemon's env file holds the key", function(ctx)
          local v = keysync.read_key(ctx, ctx.env.daemon.env_file)
          return v == ctx:get("key"), "daemon env has " .. keysync.fp(v)
        end),
        rb.check("the running daemon polls with the key", function(ctx)
          local s = keysync.daemon_status(ctx)
          if not s then return false, "no status.json: is the daemon running? (its supervisor: daemon.restart)" end
          return s.key_fingerprint == keysync.fp(ctx:get("key")), "it polls with " .. tostring(s.key_fingerprint)
        end),
      },
      hint = "The daemon's supervisor must be running (examples/daemon/daemonctl.lua status DIR).",
    },
    keysync.probe_step("Probe the queue: 401 without a key, 200 with the canonical key", {
      hint = "Still 401 with the key? `runbook run recover-queue-401` checks URL, account and secrets in turn." }),
  },
}
