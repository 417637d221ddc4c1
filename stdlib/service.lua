-- service.lua — keep one background process running under a supervisor,
-- and restart it on request. This is how the local stand-ins for the
-- seeds' long-running things (the hub under `wrangler dev`, the daemon) are
-- run, so a runbook's "restart the daemon" step is a real restart:
--
--   supervisor:  runbook exec examples/daemon/daemonctl.lua supervise DIR
--   restart:     service.restart(DIR)   -- asks, then waits for the new child
--   stop:        service.stop(DIR)      -- TERM to the supervisor
--
-- DIR holds supervisor.pid, child.json ({pid, generation, started_at}),
-- restart.request and child.log. The supervisor runs the child in its own
-- process group and stops the whole group, so nothing is left behind.
-- Whoever starts a supervisor for a session of its own (the specs, `make
-- demo`) passes its pid in RUNBOOK_SUPERVISOR_OWNER: the supervisor ends
-- with it (M.owner_from_env).

local cjson = require("cjson.safe")

local M = {}

local function fs() return require("runbook.fs") end
local function proc() return require("runbook.proc") end
local function term() return require("runbook.term.core") end

local function read_json(path)
  local s = fs().read(path)
  return s and cjson.decode(s) or nil
end

local function write_json(path, t)
  return fs().write_atomic(path, cjson.encode(t), { mode = tonumber("600", 8) })
end

---The supervisor's pid when it is alive, else nil.
function M.supervisor(dir)
  local s = fs().read(dir .. "/supervisor.pid")
  local pid = s and tonumber(s:match("%d+"))
  if pid and proc().alive(pid) then return pid end
  return nil
end

---{ supervisor = pid|nil, child = {pid, generation, started_at, alive} | nil }
function M.status(dir)
  local child = read_json(dir .. "/child.json")
  if child and child.pid then child.alive = proc().alive(child.pid) end
  return { supervisor = M.supervisor(dir), child = child }
end

---The owner pid a supervisor command should pass to M.supervise: the
---positive integer in $RUNBOOK_SUPERVISOR_OWNER, else nil.
function M.owner_from_env()
  local pid = math.tointeger(tonumber(os.getenv("RUNBOOK_SUPERVISOR_OWNER") or ""))
  if pid and pid > 0 then return pid end
  return nil
end

---Run the supervisor in the foreground until SIGINT/SIGTERM.
---@param dir string
---@param start fun(generation: integer): table  returns spawn spec { argv, env_add, cwd }
---With `owner` (a pid), it also stops — the child first, as on a signal —
---once that process is gone, so a test run or `make demo` that dies
---without cleaning up does not leave the hub or the daemon running.
---@param o table|nil { on_start = fn(child), poll = 0.1, min_uptime = 2, owner = pid }
function M.supervise(dir, start, o)
  o = o or {}
  local P, T = proc(), term()
  assert(fs().mkdir_p(dir, tonumber("700", 8)))
  local other = M.supervisor(dir)
  if other and other ~= P.getpid() then
    return nil, ("a supervisor (pid %d) already runs for %s"):format(other, dir)
  end
  P.trap_signals()
  assert(fs().write_atomic(dir .. "/supervisor.pid", tostring(P.getpid()) .. "\n", { mode = tonumber("600", 8) }))
  os.remove(dir .. "/restart.request")
  local generation = 0
  local child, started

  local function launch()
    generation = generation + 1
    local spec = start(generation)
    spec.stdout = spec.stdout or (dir .. "/child.log")
    spec.stderr = spec.stderr or (dir .. "/child.log")
    spec.append = true
    local p, err = P.spawn(spec)
    if not p then return nil, err end
    child, started = p, T.now()
    write_json(dir .. "/child.json", { pid = p:pid(), generation = generation, started_at = started })
    if o.on_start then o.on_start(p, generation) end
    return p
  end

  local ok, err = launch()
  if not ok then return nil, err end
  while true do
    local sig = P.pending_signal()
    if sig then break end
    if o.owner and not P.alive(o.owner) then break end
    if fs().exists(dir .. "/restart.request") then
      child:stop(o.grace or 5)
      os.remove(dir .. "/restart.request")
      ok, err = launch()
      if not ok then return nil, err end
    elseif not child:running() then
      -- crashed: restart, but not in a tight loop
      local up = T.now() - started
      if up < (o.min_uptime or 2) then T.sleep((o.min_uptime or 2) - up) end
      ok, err = launch()
      if not ok then return nil, err end
    end
    T.sleep(o.poll or 0.1)
  end
  child:stop(o.grace or 5)
  os.remove(dir .. "/supervisor.pid")
  return true
end

---Ask the supervisor for a restart and wait until the new child runs.
---@return table|nil child, string|nil err
function M.restart(dir, o)
  o = o or {}
  local sup = M.supervisor(dir)
  if not sup then
    return nil, ("no supervisor is running for %s (start it first)"):format(dir)
  end
  local before = read_json(dir .. "/child.json") or { generation = 0 }
  assert(fs().write_atomic(dir .. "/restart.request", tostring(before.generation), { mode = tonumber("600", 8) }))
  local T = term()
  local t_end = T.monotonic() + (o.timeout or 30)
  while T.monotonic() < t_end do
    local now = read_json(dir .. "/child.json")
    if now and now.generation and now.generation > before.generation then return now end
    T.sleep(0.05)
  end
  return nil, ("the supervisor of %s did not restart its process within %g s"):format(dir, o.timeout or 30)
end

---Stop the supervisor (and with it the child); waits until it is gone.
function M.stop(dir, o)
  local sup = M.supervisor(dir)
  if not sup then return true, "not running" end
  local r = proc().run({ argv = { "kill", "-TERM", tostring(sup) }, timeout = 5 })
  if not r or r.code ~= 0 then return nil, "could not signal supervisor " .. sup end
  local T = term()
  local t_end = T.monotonic() + ((o and o.timeout) or 15)
  while T.monotonic() < t_end do
    if not proc().alive(sup) then return true end
    T.sleep(0.05)
  end
  return nil, ("supervisor %d did not stop within the timeout"):format(sup)
end

return M
