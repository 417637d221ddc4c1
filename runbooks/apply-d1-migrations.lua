-- apply-d1-migrations — seed 004's "適用手順（D1 migrations）", executable.
--
-- The seed's warning: `wrangler d1 migrations apply` is LOCAL unless it is
-- given --remote, even with --env canary — so an operator who meant the
-- deployed database changes a local copy and believes it done (or the
-- reverse). Here the operator states which with -p where=local|remote (no
-- default), the first step prints it in capitals with what it resolves to
-- (the wrangler dev state directory, or the account and database), the
-- environment must agree (local needs the hub on this machine, remote a
-- deployed environment), and the last check lists the migrations again:
-- none may be pending.
local rb = require("runbook")
local migration = require("stdlib.migration")
local wrangler = require("stdlib.wrangler")

local function target(ctx)
  local t, err = migration.d1_target_where(ctx, ctx.params.where, { env = ctx.params.wrangler_env })
  if not t then ctx:fail("%s", err) end
  return t
end

return rb.runbook {
  name = "apply-d1-migrations",
  summary = "Apply pending D1 migrations to the local hub or the deployed database, stated, listed and verified",
  params = {
    { name = "where", type = "enum", values = { "local", "remote" }, required = true, example = "local",
      help = "local (the hub's wrangler dev state) or remote (the deployed D1); there is no default" },
    { name = "wrangler_env", type = "string", pattern = "^[%w_%-]*$",
      help = "wrangler --env for a remote apply (default: the environment's wrangler_env; empty = top-level)" },
  },
  steps = {
    rb.step "Say where the migrations go: LOCAL or REMOTE" {
      run = function(ctx)
        local t = target(ctx)
        local o = {}
        if t.where == "remote" then
          local account = wrangler.account(ctx)
          ctx:set("account", account)
          o.account = account or false
        end
        ctx:log("%s", migration.describe_where(t, o))
        ctx:log("environment: %s", ctx.env.name)
        ctx:set("d1", t)
      end,
      verify = {
        rb.check("wrangler will act for a known target", function(ctx)
          local t = ctx:get("d1")
          if t.where == "remote" then
            return ctx:get("account") ~= nil, "wrangler whoami names no account: run `wrangler login` first"
          end
          local cfg = (t.cwd or ".") .. "/wrangler.toml"
          return ctx:read_file(cfg, { missing_ok = true }) ~= nil, cfg .. " is missing: hub_dir points elsewhere"
        end),
      },
      hint = "Migrations of the hub on this machine: --env local -p where=local. The deployed database: " ..
        "--env stage|production -p where=remote (wrangler must be logged in to the right account).",
    },
    rb.step "List the pending migrations" {
      run = function(ctx)
        local pending, err = migration.pending(ctx, ctx:get("d1"))
        if not pending then ctx:fail("%s", err) end
        ctx:set("pending", pending)
        if #pending == 0 then ctx:log("none pending") end
        for _, name in ipairs(pending) do ctx:log("pending: %s", name) end
      end,
      no_verify = "lists only (a failed listing fails the step); the apply step checks none is left",
      hint = "wrangler must run in the directory of the wrangler.toml that binds DB (hub_dir or wrangler_cwd).",
    },
    rb.step "Apply them" {
      when = function(ctx) return #ctx:get("pending") > 0 end,
      run = function(ctx)
        local t = ctx:get("d1")
        ctx:log("applying %d migration(s) %s", #ctx:get("pending"), t.where == "local" and "LOCALLY" or "REMOTELY")
        local r, err = migration.apply(ctx, t)
        if not r then ctx:fail("%s", err) end
      end,
      verify = {
        migration.none_pending(function(ctx) return ctx:get("d1") end),
      },
      hint = "A migration that failed half-way is rolled back by D1; fix its SQL and run this again. " ..
        "Locally the hub may hold the database: stop it (hubctl stop) if wrangler reports it busy.",
    },
  },
}
