-- keysync.lua — the queue key's holders and how to bring them back to the
-- canonical copy (seed 000). Shared by sync-queue-keys, recover-queue-401
-- and check-secret-drift, so "compare, put where it differs, restart what
-- must re-read it, probe" is written once.
--
-- The holders of one environment (runbook.lua):
--   canonical  `canonical = "scripts/.env.assistant"`, ASSISTANT_API_KEY
--   workers    each `workers` target, as ASSISTANT_API_KEY and QUEUE_API_KEY
--              (dev_vars: values readable; wrangler: names only)
--   daemon     `daemon.env_file` (what it will read at start) and
--              `daemon.status` (status.json: the fingerprint it polls with)
--
-- Offline, a holder file that does not exist stands in with one fixture
-- key (and a daemon status that uses it), so `runbook check` exercises the
-- whole flow on a fresh clone; files that exist are read as they are.

local crypto = require("runbook.crypto")
local project = require("runbook.project")
local secrets = require("stdlib.secrets")
local wrangler = require("stdlib.wrangler")
local queue = require("stdlib.queue")

local M = {}

M.KEY = "ASSISTANT_API_KEY"
-- the Worker accepts X-API-Key equal to either; both must hold the same value
M.NAMES = { "ASSISTANT_API_KEY", "QUEUE_API_KEY" }

local offline_key

local function fixture_key(ctx)
  offline_key = offline_key or crypto.random_hex(32)
  return ctx:secret(offline_key)
end

local function exists(ctx, path)
  return require("runbook.fs").exists(project.path(ctx.project, path))
end

---A fingerprint to print ("sha256:1a2b3c4d"), or "(none)".
function M.fp(v) return v and crypto.fingerprint(v) or "(none)" end

---The canonical env file's path (fails the step when the environment names none).
function M.canonical_path(ctx)
  local p = ctx.env.canonical
  if not p then ctx:fail("environment '%s' names no canonical env file (canonical = ... in runbook.lua)", ctx.env.name) end
  return p
end

---ASSISTANT_API_KEY from an env file, or nil when the file or key is missing.
function M.read_key(ctx, path)
  if ctx.offline and not exists(ctx, path) then return fixture_key(ctx) end
  local doc, err = secrets.read_env_file(ctx, path, { missing_ok = true })
  if not doc then ctx:fail("%s", err) end
  local v = doc:get(M.KEY)
  if v == "" then return nil end
  return v
end

---The canonical key; fails the step with the fix when there is none.
function M.canonical_key(ctx)
  local path = M.canonical_path(ctx)
  local key = M.read_key(ctx, path)
  if not key then
    ctx:fail("the canonical file %s holds no %s; create one with `runbook run rotate-queue-key --env %s`",
      path, M.KEY, ctx.env.name)
  end
  return key
end

---The daemon's status.json ({pid, at, status, key_fingerprint, ...}) or nil.
function M.daemon_status(ctx)
  local d = ctx.env.daemon
  if not (d and d.status) then return nil end
  if ctx.offline and not exists(ctx, d.status) then
    return { pid = 0, at = 0, status = 200, key_fingerprint = M.fp(fixture_key(ctx)) }
  end
  local raw = ctx:read_file(project.path(ctx.project, d.status), { missing_ok = true })
  return raw and require("cjson.safe").decode(raw) or nil
end

---Both secrets' values on a target that lets us read them (dev_vars); nil
---for a deployed Worker (Cloudflare never shows values).
function M.worker_values(ctx, t)
  if t.backend ~= "dev_vars" then return nil end
  if ctx.offline and not exists(ctx, t.path) then
    local k = fixture_key(ctx)
    return { ASSISTANT_API_KEY = k, QUEUE_API_KEY = k }
  end
  return secrets.values(ctx, t) or {}
end

---Which of the two secret names a target lists: { NAME = true|false }.
---@return table|nil listed, string|nil err
function M.listed(ctx, t)
  local names, err
  if t.backend == "wrangler" then
    local fx = t.fixture or { code = 0, stdout = '[{"name":"ASSISTANT_API_KEY","type":"secret_text"},'
      .. '{"name":"QUEUE_API_KEY","type":"secret_text"}]' }
    names, err = wrangler.secret_list(ctx, { name = t.name, env = t.env, fixture = fx })
  elseif ctx.offline and t.backend == "dev_vars" and not exists(ctx, t.path) then
    names = M.NAMES
  else
    names, err = secrets.list(ctx, t)
  end
  if not names then return nil, err end
  local have = {}
  for _, n in ipairs(names) do have[n] = true end
  local out = {}
  for _, n in ipairs(M.NAMES) do out[n] = have[n] == true end
  return out
end

---Names among ASSISTANT_API_KEY/QUEUE_API_KEY a `listed` table lacks.
function M.missing(listed)
  local out = {}
  for _, n in ipairs(M.NAMES) do if not listed[n] then out[#out + 1] = n end end
  return out
end

-- plan ----------------------------------------------------------------------

---Compare every holder with `key`; nothing is changed. Returns
---{ workers = { {target, label, action = "put"|"equal", why} },
---  daemon = nil | { env_fp, running_fp, write_env, restart, why } }.
function M.plan(ctx, key)
  local want = M.fp(key)
  local out = { workers = {} }
  for _, t in ipairs(secrets.targets(ctx)) do
    local row = { target = t, label = secrets.label(t) }
    local vals = M.worker_values(ctx, t)
    if not vals then
      -- values cannot be read back from Cloudflare: always put
      row.action, row.why = "put", "values cannot be read; put both"
    else
      local differ = {}
      for _, n in ipairs(M.NAMES) do
        if vals[n] ~= key then differ[#differ + 1] = ("%s is %s"):format(n, M.fp(vals[n])) end
      end
      if #differ == 0 then
        row.action, row.why = "equal", "both secrets are " .. want
      else
        row.action, row.why = "put", table.concat(differ, ", ")
      end
    end
    out.workers[#out.workers + 1] = row
  end
  local d = ctx.env.daemon
  if d then
    local env_key = M.read_key(ctx, d.env_file)
    local st = M.daemon_status(ctx)
    local row = { env_fp = M.fp(env_key), running_fp = st and st.key_fingerprint or "(not running)" }
    row.write_env = env_key ~= key
    -- the daemon reads its .env only at start: restart it when the file
    -- changes, or when the process still polls with an older key
    row.restart = row.write_env or (st ~= nil and st.key_fingerprint ~= want)
    if row.write_env then
      row.why = "daemon env has " .. row.env_fp
    elseif row.restart then
      row.why = "daemon env is current but the running daemon polls with " .. row.running_fp
    else
      row.why = "daemon env and the running daemon use " .. want
    end
    out.daemon = row
  end
  return out
end

---Print a plan, one holder per line.
function M.log_plan(ctx, plan)
  for _, w in ipairs(plan.workers) do
    ctx:log("%-44s %-13s %s", w.label, w.action == "put" and "put" or "equal", w.why)
  end
  local d = plan.daemon
  if d then
    local action = d.write_env and "write+restart" or (d.restart and "restart" or "equal")
    ctx:log("%-44s %-13s %s", "daemon (" .. ctx.env.daemon.env_file .. ")", action, d.why)
  end
end

-- sync ----------------------------------------------------------------------

---Put the key as both secrets on every Worker target the plan says differs.
---@return string[] labels of the targets written
function M.put_workers(ctx, key, plan)
  local done = {}
  for _, w in ipairs(plan.workers) do
    if w.action == "put" then
      secrets.put(ctx, w.target, { ASSISTANT_API_KEY = key, QUEUE_API_KEY = key })
      ctx:log("%s: ASSISTANT_API_KEY and QUEUE_API_KEY %s %s", w.label,
        ctx.mode == "run" and "set to" or "would be set to", M.fp(key))
      done[#done + 1] = w.label
    else
      ctx:log("%s: already holds %s; left alone", w.label, M.fp(key))
    end
  end
  return done
end

---Write the daemon's env and restart it, each only when the plan says so;
---waits for the new process's first poll. Returns true when it restarted.
function M.sync_daemon(ctx, key, plan)
  local d, row = ctx.env.daemon, plan.daemon
  if not (d and row) then return false end
  if row.write_env then
    secrets.update_env_file(ctx, d.env_file, { [M.KEY] = key })
    ctx:log("daemon env %s: %s -> %s", d.env_file, row.env_fp, M.fp(key))
  end
  if not row.restart then
    ctx:log("daemon: already uses %s; not restarted", M.fp(key))
    return false
  end
  if not d.restart then
    ctx:fail("the daemon must be restarted to read its new key, but environment '%s' names no daemon.restart command",
      ctx.env.name)
  end
  local before = M.daemon_status(ctx)
  local term = require("runbook.term")
  local started = term.now()
  local r = ctx:run(d.restart, { timeout = 60, cwd = ctx.project and ctx.project.root })
  if r.code ~= 0 then
    ctx:fail("daemon restart failed (exit %s): %s", tostring(r.code),
      (r.stderr_masked or ""):match("[^\n]*%S[^\n]*") or "no message")
  end
  ctx:poll({ what = "the restarted daemon's first poll", every = 0.2, backoff = 1.5, max_every = 2,
    timeout = d.restart_timeout or 60, check = function()
      local s = M.daemon_status(ctx)
      return s and s.pid ~= (before and before.pid) and (s.at or 0) >= started, "no poll from a new daemon yet"
    end })
  return true
end

---Whether every Worker target whose values can be read holds `key` in both
---secrets (the plan recomputed).
---@return boolean ok, string|nil why
function M.workers_equal(ctx, key)
  for _, w in ipairs(M.plan(ctx, key).workers) do
    if w.target.backend ~= "wrangler" and w.action ~= "equal" then return false, w.label .. ": " .. w.why end
  end
  return true
end

---Whether every readable holder, the daemon included, now uses `key`.
---@return boolean ok, string|nil why
function M.all_equal(ctx, key)
  local ok, why = M.workers_equal(ctx, key)
  if not ok then return false, why end
  local d = M.plan(ctx, key).daemon
  if d and d.restart then return false, d.why end
  return true
end

---Every wrangler target lists both names; false and which lacks what.
function M.all_listed(ctx)
  for _, t in ipairs(secrets.targets(ctx)) do
    local listed, err = M.listed(ctx, t)
    if not listed then return false, secrets.label(t) .. ": " .. tostring(err) end
    local miss = M.missing(listed)
    if #miss > 0 then return false, secrets.label(t) .. " lacks " .. table.concat(miss, " and ") end
  end
  return true
end

-- probes --------------------------------------------------------------------

---One probe of /api/queue (no waiting): status, or 0 and why. `expect_ok`
---only chooses the offline fixture (200 for a key believed current).
function M.probe_once(ctx, key, expect_ok)
  return queue.probe(ctx, ctx.env.url, key, { expect_ok = expect_ok })
end

---401 without a key and 200 with `key`, waiting for propagation. Returns
---the two statuses (nil when the wait was skipped after a simulated write).
function M.probe_pair(ctx, key, timeout)
  local without = queue.expect(ctx, ctx.env.url, nil, 401, { timeout = timeout })
  local with = queue.expect(ctx, ctx.env.url, key, 200, { timeout = timeout })
  return without, with
end

-- drift ---------------------------------------------------------------------

---Every holder and its fingerprint(s), compared with the canonical key.
---Each row: { name, kind, fps = {label = fp}, drift = bool, why, value = key|nil }
---(`value` only for probing; never print it).
function M.inventory(ctx, key)
  local want = M.fp(key)
  local rows = {}
  local function add(r) rows[#rows + 1] = r return r end
  add({ name = "canonical (" .. M.canonical_path(ctx) .. ")", kind = "canonical", fps = { [M.KEY] = want },
    drift = false, value = key, why = "the reference" })
  local d = ctx.env.daemon
  if d then
    local v = M.read_key(ctx, d.env_file)
    add({ name = "daemon env (" .. d.env_file .. ")", kind = "daemon_env", fps = { [M.KEY] = M.fp(v) },
      drift = v ~= key, value = v, why = v == nil and "no key" or (v ~= key and "differs" or nil) })
    local st = M.daemon_status(ctx)
    if st then
      local f = st.key_fingerprint or "(none)"
      add({ name = "daemon process (pid " .. tostring(math.tointeger(st.pid) or st.pid) .. ")", kind = "daemon_running", fps = { [M.KEY] = f },
        drift = f ~= want, last_status = st.status,
        why = f ~= want and "polls with a different key (restart it after fixing its env)" or nil })
    else
      add({ name = "daemon process", kind = "daemon_running", fps = { [M.KEY] = "(no status.json)" }, drift = false,
        why = "no status yet: not running, or never polled" })
    end
  end
  for _, t in ipairs(secrets.targets(ctx)) do
    local label = secrets.label(t)
    local vals = M.worker_values(ctx, t)
    if vals then
      local fps, differ = {}, {}
      for _, n in ipairs(M.NAMES) do
        fps[n] = M.fp(vals[n])
        if vals[n] ~= key then differ[#differ + 1] = n end
      end
      add({ name = label, kind = "worker", fps = fps, drift = #differ > 0, values = vals,
        why = #differ > 0 and (table.concat(differ, " and ") .. " differ") or nil })
    else
      local listed, err = M.listed(ctx, t)
      local fps = {}
      if not listed then
        for _, n in ipairs(M.NAMES) do fps[n] = "(unknown)" end
        add({ name = label, kind = "remote", fps = fps, drift = false, unknown = true, why = err })
      else
        for _, n in ipairs(M.NAMES) do fps[n] = listed[n] and "listed" or "MISSING" end
        local miss = M.missing(listed)
        add({ name = label, kind = "remote", fps = fps, drift = #miss > 0,
          why = #miss > 0 and (table.concat(miss, " and ") .. " not set") or "values cannot be read; listed" })
      end
    end
  end
  return rows
end

---The distinct key values the inventory could read, each with who holds it.
---@return table[] { value, fp, holders = {names} } (canonical first)
function M.distinct_keys(rows)
  local out, by = {}, {}
  local function note(v, who)
    if not v then return end
    local e = by[v]
    if not e then
      e = { value = v, fp = M.fp(v), holders = {} }
      by[v] = e
      out[#out + 1] = e
    end
    e.holders[#e.holders + 1] = who
  end
  for _, r in ipairs(rows) do
    if r.value then note(r.value, r.name) end
    for _, n in ipairs(M.NAMES) do
      if r.values then note(r.values[n], r.name .. " " .. n) end
    end
  end
  return out
end

---A stable dedup key for one drift state: the environment, who drifted and
---to which fingerprints (no values).
function M.drift_key(env_name, rows)
  local parts = {}
  for _, r in ipairs(rows) do
    if r.drift then
      local fps = {}
      for _, n in ipairs(M.NAMES) do fps[#fps + 1] = r.fps[n] or "" end
      parts[#parts + 1] = r.name .. "=" .. table.concat(fps, ",")
    end
  end
  table.sort(parts)
  return "secret-drift:" .. env_name .. ":" .. crypto.fingerprint(table.concat(parts, ";"))
end

---The closing proof both sync and recover end with: 401 without a key, 200
---with the canonical key (ctx "key"). o: { when = fn, hint = string }.
function M.probe_step(title, o)
  local rb = require("runbook")
  return rb.step(title) {
    when = o and o.when,
    run = function(ctx)
      local without, with = M.probe_pair(ctx, ctx:get("key"), ctx.params.propagation_timeout)
      ctx:set("probe_without", without)
      ctx:set("probe_with", with)
    end,
    verify = {
      rb.check("without a key: 401", function(ctx)
        return ctx:get("probe_without") == 401, "got " .. tostring(ctx:get("probe_without"))
      end),
      rb.check("with the canonical key: 200", function(ctx)
        return ctx:get("probe_with") == 200, "got " .. tostring(ctx:get("probe_with"))
      end),
    },
    hint = o and o.hint,
  }
end

return M
