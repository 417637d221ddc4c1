-- secrets.lua — where an environment's secrets live, behind one interface:
--   dev_vars  the local hub: a .dev.vars file read by `wrangler dev` at
--             start, so a change means a restart (the target's `restart`
--             command, then a wait until its health URL answers again)
--   wrangler  a deployed Worker: `wrangler secret put` (value on stdin) and
--             `wrangler secret list` (names only; Cloudflare never shows values)
-- Targets come from the environment in runbook.lua:
--   workers = { { name = "orchestrator-hub", env = "production", backend = "wrangler" },
--               { config = "wrangler.processing.toml", env = "production", backend = "wrangler" },
--               { name = "orchestrator-hub", backend = "dev_vars", path = ".dev.vars",
--                 restart = { ... }, health_url = "http://127.0.0.1:8787/api/health" } }
-- Every value read or written is registered as a secret (masked everywhere).

local dotenv = require("stdlib.dotenv")
local wrangler = require("stdlib.wrangler")
local project = require("runbook.project")

local M = {}

local MODE_0600 = tonumber("600", 8)

---A target's display name: "orchestrator-hub --env production", or its
---wrangler config when it has one ("wrangler.processing.toml (top-level env)").
function M.label(t)
  if t.backend == "dev_vars" then return (t.name or "hub") .. " (local .dev.vars)" end
  return (t.config or t.name or "?") .. (t.env and t.env ~= "" and (" --env " .. t.env) or " (top-level env)")
end

---The environment's secret holders (Worker environments).
function M.targets(ctx)
  local list = ctx.env.workers or {}
  if #list == 0 then
    ctx:fail("environment '%s' names no Worker targets (workers = {...} in runbook.lua)", ctx.env.name)
  end
  return list
end

---Read an env file through the step context: secrets registered; in dry-run
---or offline a too-open mode is reported, not fixed.
---@return table|nil doc, string|nil err, string|nil code
function M.read_env_file(ctx, path, o)
  path = project.path(ctx.project, path)
  local doc, err, code = dotenv.read(path, {
    fix_mode = ctx.mode == "run" and true or "report",
    secret = function(v) ctx:secret(v) end,
  })
  if not doc then
    if code == "ENOENT" and o and o.missing_ok then return dotenv.parse(""), nil end
    return nil, err, code
  end
  for _, w in ipairs(doc.warnings or {}) do ctx:log("%s", w) end
  return doc
end

---Set keys in an env file (atomic, 0600, never through a symlink). A write:
---in dry-run it is printed, not done.
function M.update_env_file(ctx, path, changes, o)
  path = project.path(ctx.project, path)
  -- a missing file is created only when asked; a dry-run reports the write
  -- it would attempt either way
  local doc, err = M.read_env_file(ctx, path, { missing_ok = (o and o.create) or ctx.mode ~= "run" })
  if not doc then ctx:fail("%s", err) end
  local names = {}
  for k, v in pairs(changes) do
    ctx:secret(v)
    doc:set(k, v)
    names[#names + 1] = k
  end
  table.sort(names)
  ctx:write_file(path, dotenv.render(doc), { mode = MODE_0600, nofollow = true })
  return names
end

---Put secrets (name → value) on one target.
function M.put(ctx, t, kv)
  local names = {}
  for k in pairs(kv) do names[#names + 1] = k end
  table.sort(names)
  if t.backend == "dev_vars" then
    M.update_env_file(ctx, t.path, kv, { create = true })
    if t.restart then
      local r = ctx:run(t.restart, { timeout = t.restart_timeout or 120, cwd = ctx.project and ctx.project.root })
      if r.code ~= 0 then
        ctx:fail("restart of %s failed (exit %s): %s", M.label(t), tostring(r.code),
          (r.stderr_masked or ""):match("[^\n]*%S[^\n]*") or "")
      end
      if not r.simulated then ctx:log("restarted %s so it reads the new values", M.label(t)) end
    end
    if t.health_url then
      ctx:poll({ what = M.label(t) .. " healthy again", every = 0.25, backoff = 1.5, max_every = 2,
        timeout = t.health_timeout or 60,
        check = function()
          local r = ctx:try_http({ url = t.health_url, timeout = 2 })
          return r and r.status == 200, r and ("HTTP " .. r.status) or "not answering"
        end })
    end
  elseif t.backend == "wrangler" then
    for _, k in ipairs(names) do
      local ok, err = wrangler.secret_put(ctx, { name = t.name, config = t.config, env = t.env, key = k,
        value = kv[k] })
      if not ok then ctx:fail("%s on %s: %s", k, M.label(t), err) end
    end
  else
    ctx:fail("unknown secrets backend '%s' for %s", tostring(t.backend), M.label(t))
  end
  return names
end

---Secret names a target holds (sorted). o.fixture: what an offline run's
---`wrangler secret list` answers (default the target's own fixture).
function M.list(ctx, t, o)
  if t.backend == "dev_vars" then
    local doc, err = M.read_env_file(ctx, t.path, { missing_ok = true })
    if not doc then return nil, err end
    local keys = doc:keys()
    table.sort(keys)
    return keys
  end
  return wrangler.secret_list(ctx, { name = t.name, config = t.config, env = t.env,
    fixture = o and o.fixture or t.fixture })
end

---Values a target lets us read (dev_vars only); nil for wrangler.
function M.values(ctx, t)
  if t.backend ~= "dev_vars" then return nil end
  local doc = M.read_env_file(ctx, t.path, { missing_ok = true })
  if not doc then return nil end
  local out = {}
  for _, k in ipairs(doc:keys()) do out[k] = doc:get(k) end
  return out
end

return M
