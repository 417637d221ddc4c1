-- demo.lua — what `make demo` runs: set up the local environment of
-- runbook.lua (a canonical key, the hub's .dev.vars, the daemon's .env),
-- start the hub and the daemon under their supervisors, run
-- `runbook run rotate-queue-key --env local --yes` as an operator would,
-- print `runbook history`, and stop everything it started.
--
--   runbook exec examples/demo.lua
local proc = require("runbook.proc")
local fs = require("runbook.fs")
local term = require("runbook.term.core")
local crypto = require("runbook.crypto")
local dotenv = require("stdlib.dotenv")

local root = fs.getcwd()
local state = os.getenv("RUNBOOK_STATE") or ".runbook/local"
local port = os.getenv("RUNBOOK_HUB_PORT") or "8787"
local url = "http://127.0.0.1:" .. port
local exe = package.runbook_exe
local say = function(fmt, ...) io.stdout:write("demo: ", fmt:format(...), "\n") io.stdout:flush() end

local function ensure_env(path, values)
  fs.mkdir_p(fs.dirname(path), tonumber("700", 8))
  local doc, report = dotenv.update(path, values, { create = true })
  if not doc then error("demo: " .. tostring(report), 0) end
end

-- 1. the holders start out agreeing on one key (as after a past rotation)
local canonical = state .. "/scripts/.env.assistant"
local doc = dotenv.read(canonical)
local key = doc and doc:get("ASSISTANT_API_KEY") or crypto.random_hex(32)
ensure_env(canonical, { ASSISTANT_API_KEY = key })
ensure_env("examples/hub/.dev.vars", { ASSISTANT_API_KEY = key, QUEUE_API_KEY = key,
  WORKER_CALLBACK_SECRET = crypto.random_hex(16), TASKS_AUTH_TOKEN = crypto.random_hex(16) })
ensure_env(state .. "/daemon/.env", { ASSISTANT_API_KEY = key, QUEUE_URL = url,
  NOTIFY_URL = url .. "/hooks/slack", POLL_INTERVAL_SEC = "1", STATE_DIR = root .. "/" .. state .. "/daemon/state" })
say("holders set up with key %s", crypto.fingerprint(key))

-- 2. hub and daemon under their supervisors (stopped when this script ends)
local started = {}
local function stop_all()
  for i = #started, 1, -1 do started[i]:stop(10) end
  started = {}
end
local function start(argv, log)
  -- the supervisors end with this script even if it is killed before its
  -- cleanup (RUNBOOK_SUPERVISOR_OWNER, see stdlib/service.lua)
  local p = assert(proc.spawn({ argv = argv, stdout = log, stderr = log,
    env_add = { RUNBOOK_SUPERVISOR_OWNER = tostring(proc.getpid()) } }))
  started[#started + 1] = p
  return p
end

local ok, err = pcall(function()
  fs.mkdir_p(state, tonumber("700", 8))
  say("starting the hub (wrangler dev on %s)", url)
  local hub = start({ exe, "exec", "examples/hub/hubctl.lua", "supervise", state .. "/hub", port },
    state .. "/hub.log")
  local http = require("runbook.http")
  local t_end = term.monotonic() + 120
  while true do
    local r = http.request({ url = url .. "/api/health", timeout = 2 })
    if r and r.status == 200 then break end
    if not hub:running() or term.monotonic() > t_end then
      error("the hub did not start; see " .. state .. "/hub.log and " .. state .. "/hub/child.log", 0)
    end
    term.sleep(0.25)
  end
  say("starting the daemon")
  start({ exe, "exec", "examples/daemon/daemonctl.lua", "supervise", state .. "/daemon/supervisor",
    state .. "/daemon/.env" }, state .. "/daemon.log")
  local status = state .. "/daemon/state/status.json"
  t_end = term.monotonic() + 30
  while not fs.exists(status) and term.monotonic() < t_end do term.sleep(0.1) end

  -- 3. the main job, exactly as an operator types it
  say("running: runbook run rotate-queue-key --env local --yes")
  local r = proc.run({ argv = { exe, "run", "rotate-queue-key", "--env", "local", "--yes" },
    stdout = "inherit", stderr = "inherit", timeout = 600 })
  io.stdout:write("\n")
  say("runbook history rotate-queue-key")
  proc.run({ argv = { exe, "history", "rotate-queue-key", "-n", "5" }, stdout = "inherit", stderr = "inherit", timeout = 30 })
  if r.code ~= 0 then error("rotate-queue-key exited " .. tostring(r.code), 0) end
end)
say("stopping the daemon and the hub")
stop_all()
if not ok then
  io.stderr:write("demo: ", tostring(err), "\n")
  return 1
end
say("done")
return 0
