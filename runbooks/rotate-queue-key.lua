-- rotate-queue-key — seed 000's rotation procedure, executable.
--
-- The Queue API accepts X-API-Key equal to ASSISTANT_API_KEY or
-- QUEUE_API_KEY; both must hold the same value everywhere, with the
-- canonical copy in one env file that every client reads. Updating one
-- holder and not the others is "key drift": the daemon polls into 401s
-- and spams the alert channel. This runbook moves every holder at once and
-- proves each one.
local rb = require("runbook")
local crypto = require("runbook.crypto")
local secrets = require("stdlib.secrets")
local queue = require("stdlib.queue")
local project = require("runbook.project")

local KEY = "ASSISTANT_API_KEY"

local function canonical(ctx)
  local p = ctx.env.canonical
  if not p then ctx:fail("environment '%s' names no canonical env file (canonical = ... in runbook.lua)", ctx.env.name) end
  return p
end

local function read_key(ctx, path)
  local doc, err = secrets.read_env_file(ctx, path, { missing_ok = true })
  if not doc then ctx:fail("%s", err) end
  return doc:get(KEY)
end

local function fp(v) return v and crypto.fingerprint(v) or "(none)" end

local function daemon_status(ctx)
  local d = ctx.env.daemon
  local raw = ctx:read_file(project.path(ctx.project, d.status), { missing_ok = true })
  return raw and require("cjson.safe").decode(raw) or nil
end

return rb.runbook {
  name = "rotate-queue-key",
  summary = "Generate a new queue API key and move every holder to it, verifying each",
  params = {
    { name = "propagation_timeout", type = "duration", default = "60s",
      help = "how long to wait for Workers to serve the new secret" },
  },
  -- a secret is never journaled: a resumed run reads the new key back from
  -- the canonical file, where step 2 put it before anything else changed
  reload = {
    new_key = function(ctx) return read_key(ctx, canonical(ctx)) end,
  },
  steps = {
    rb.step "Show what will change" {
      run = function(ctx)
        ctx:log("queue URL:       %s/api/queue", ctx.env.url)
        ctx:log("canonical file:  %s", canonical(ctx))
        for _, t in ipairs(secrets.targets(ctx)) do ctx:log("worker secrets:  %s", secrets.label(t)) end
        if ctx.env.daemon then ctx:log("daemon env:      %s", ctx.env.daemon.env_file) end
        local old = read_key(ctx, canonical(ctx))
        if old then ctx:set("old_key", ctx:secret(old)) end
        ctx:log("current key:     %s", fp(old))
      end,
      verify = {
        rb.check("the environment has a URL", function(ctx)
          return ctx.env.url ~= nil, "set url = ... for this environment in runbook.lua"
        end),
      },
    },
    rb.step "Generate a new 64-hex key and write it to the canonical file" {
      run = function(ctx)
        local key = ctx:secret(crypto.random_hex(32))
        ctx:set("new_key", key)
        secrets.update_env_file(ctx, canonical(ctx), { [KEY] = key }, { create = true })
        ctx:log("new key %s -> %s", fp(key), canonical(ctx))
      end,
      verify = {
        rb.check("the key is 64 hex characters", function(ctx)
          return ctx:get("new_key"):match("^%x+$") and #ctx:get("new_key") == 64
        end, { independent = true }),
        rb.check("the canonical file holds the new key", function(ctx)
          return read_key(ctx, canonical(ctx)) == ctx:get("new_key")
        end),
      },
      hint = "Check the canonical file's directory exists and is writable; it is never written through a symlink.",
    },
    rb.step "Put the key on every Worker environment as both secrets" {
      run = function(ctx)
        local key = ctx:get("new_key")
        for _, t in ipairs(secrets.targets(ctx)) do
          secrets.put(ctx, t, { ASSISTANT_API_KEY = key, QUEUE_API_KEY = key })
          ctx:log("%s: ASSISTANT_API_KEY and QUEUE_API_KEY set", secrets.label(t))
        end
      end,
      verify = {
        rb.check("every Worker environment lists both secrets", function(ctx)
          for _, t in ipairs(secrets.targets(ctx)) do
            local names, err = secrets.list(ctx, t)
            if not names then return false, err end
            local have = {}
            for _, n in ipairs(names) do have[n] = true end
            if not (have.ASSISTANT_API_KEY and have.QUEUE_API_KEY) then
              return false, secrets.label(t) .. " lacks " .. (have.ASSISTANT_API_KEY and "QUEUE_API_KEY" or "ASSISTANT_API_KEY")
            end
          end
          return true
        end),
      },
      hint = "For a deployed Worker: `wrangler whoami` must show the right account (see recover-queue-401).",
    },
    rb.step "Probe the queue: 401 without a key, 200 with the new one" {
      run = function(ctx)
        local key = ctx:get("new_key")
        ctx:set("probe_without", queue.expect(ctx, ctx.env.url, nil, 401, { timeout = ctx.params.propagation_timeout }))
        ctx:set("probe_with", queue.expect(ctx, ctx.env.url, key, 200, { timeout = ctx.params.propagation_timeout }))
      end,
      verify = {
        rb.check("without a key: 401", function(ctx) return ctx:get("probe_without") == 401 end),
        rb.check("with the new key: 200", function(ctx) return ctx:get("probe_with") == 200 end),
      },
      hint = "Still 401 with the key? Run `runbook run recover-queue-401` — it checks URL, account and secrets in turn.",
    },
    rb.step "Write the key to the daemon's env file" {
      when = function(ctx) return ctx.env.daemon ~= nil end,
      run = function(ctx)
        secrets.update_env_file(ctx, ctx.env.daemon.env_file, { [KEY] = ctx:get("new_key") })
      end,
      verify = {
        rb.check("the daemon's env file holds the new key", function(ctx)
          return read_key(ctx, ctx.env.daemon.env_file) == ctx:get("new_key"),
            "daemon env has " .. fp(read_key(ctx, ctx.env.daemon.env_file))
        end),
      },
    },
    rb.step "Restart the daemon so it reads the new key" {
      when = function(ctx) return ctx.env.daemon ~= nil end,
      run = function(ctx)
        local before = daemon_status(ctx)
        ctx:set("daemon_pid_before", before and before.pid or nil)
        local r = ctx:run(ctx.env.daemon.restart, { timeout = 60, cwd = ctx.project and ctx.project.root })
        if r.code ~= 0 then ctx:fail("daemon restart failed: %s", (r.stderr_masked or ""):match("[^\n]*%S[^\n]*") or r.code) end
        ctx:set("restarted_at", require("runbook.term").now())
      end,
      verify = {
        rb.check("a new daemon process polls", function(ctx)
          local ok, why = ctx:poll({ what = "the new daemon's first poll", every = 0.2, timeout = 30,
            check = function()
              local s = daemon_status(ctx)
              return s and s.pid ~= ctx:get("daemon_pid_before") and s.at >= ctx:get("restarted_at"),
                "no poll from a new daemon yet"
            end })
          return ok, why
        end),
      },
      hint = "The supervisor must be running: see examples/daemon/daemonctl.lua status.",
    },
    rb.step "Verify the daemon's next poll is accepted" {
      when = function(ctx) return ctx.env.daemon ~= nil end,
      run = function(ctx)
        ctx:poll({ what = "a daemon poll answered 200", every = 0.2, timeout = 30, check = function()
          local s = daemon_status(ctx)
          return s and s.status == 200 and s.at >= ctx:get("restarted_at"), s and ("last poll: " .. tostring(s.status))
        end })
        local s = daemon_status(ctx) or {}
        ctx:set("daemon_status", s.status)
        ctx:set("daemon_key_fp", s.key_fingerprint)
      end,
      verify = {
        rb.check("the daemon polls with the new key", function(ctx)
          return ctx:get("daemon_key_fp") == fp(ctx:get("new_key")), "daemon uses " .. tostring(ctx:get("daemon_key_fp"))
        end),
        rb.check("its last poll answered 200", function(ctx) return ctx:get("daemon_status") == 200 end),
      },
    },
    rb.step "Verify the old key is refused" {
      when = function(ctx) return ctx:get("old_key") ~= nil end,
      run = function(ctx)
        ctx:set("probe_old", queue.expect(ctx, ctx.env.url, ctx:get("old_key"), 401, { timeout = 10 }))
      end,
      verify = {
        rb.check("the old key gets 401", function(ctx)
          return ctx:get("probe_old") == 401, "old key answered " .. tostring(ctx:get("probe_old"))
        end),
      },
      hint = "A holder still accepts the old key: run check-secret-drift to see which.",
    },
  },
}
