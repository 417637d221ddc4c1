-- hubctl.lua — run the local hub (this directory's Worker under `wrangler
-- dev`) under a supervisor, so "restart the hub so it reads .dev.vars" is a
-- real restart that a runbook can ask for and wait on.
--
--   runbook exec examples/hub/hubctl.lua supervise STATE_DIR [PORT] [HUB_DIR]   (foreground)
--   runbook exec examples/hub/hubctl.lua restart STATE_DIR    (returns when healthy again)
--   runbook exec examples/hub/hubctl.lua status STATE_DIR
--   runbook exec examples/hub/hubctl.lua stop STATE_DIR
--
-- Local KV and D1 live in STATE_DIR/wrangler; D1 migrations are applied
-- (--local, always explicit) before the first start. wrangler reads
-- HUB_DIR/.dev.vars only when it starts.
local service = require("stdlib.service")
local proc = require("runbook.proc")
local term = require("runbook.term.core")
local fs = require("runbook.fs")
local cjson = require("cjson")

local cmd, dir = arg[1], arg[2]
local function usage()
  io.stderr:write("usage: hubctl.lua supervise STATE_DIR [PORT] [HUB_DIR] | restart STATE_DIR | status STATE_DIR | stop STATE_DIR\n")
  return 2
end
if not cmd or not dir then return usage() end

local here = arg[0]:match("^(.*)/[^/]*$") or "."

local function abs(p)
  if p:sub(1, 1) == "/" then return p end
  return fs.getcwd() .. "/" .. p
end

-- wrangler's CLI run by node directly: bin/wrangler.js forwards no signals,
-- so stopping it would orphan workerd.
local function wrangler_argv(hub_dir, args)
  local argv = { "node", "--no-warnings", "--experimental-vm-modules",
    hub_dir .. "/node_modules/wrangler/wrangler-dist/cli.js" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

local function wrangler_env(state)
  return { WRANGLER_SEND_METRICS = "false", WRANGLER_LOG_PATH = state .. "/wrangler-logs",
    npm_config_registry = "http://127.0.0.1:9/", NO_UPDATE_NOTIFIER = "1", CI = "true", NO_COLOR = "1" }
end

local function wait_healthy(url, timeout)
  local http = require("runbook.http")
  local t_end = term.monotonic() + timeout
  while term.monotonic() < t_end do
    local r = http.request({ url = url .. "/api/health", timeout = 2 })
    if r and r.status == 200 then return true end
    term.sleep(0.2)
  end
  return false
end

local function info(state)
  local s = fs.read(state .. "/hub.json")
  return s and cjson.decode(s) or nil
end

if cmd == "supervise" then
  local state = abs(dir)
  local port = arg[3] or "8787"
  local hub_dir = abs(arg[4] or here)
  assert(fs.mkdir_p(state, tonumber("700", 8)))
  if not fs.exists(hub_dir .. "/node_modules/wrangler") then
    io.stderr:write("hubctl: ", hub_dir, "/node_modules is missing: run `make hub-deps`\n")
    return 1
  end
  local r = proc.run({ argv = wrangler_argv(hub_dir, { "d1", "migrations", "apply", "DB", "--local",
    "--persist-to", state .. "/wrangler" }), cwd = hub_dir, env_add = wrangler_env(state), timeout = 180 })
  if not r or r.code ~= 0 then
    io.stderr:write("hubctl: d1 migrations apply --local failed:\n", r and (r.stdout .. r.stderr) or "", "\n")
    return 1
  end
  fs.write_atomic(state .. "/hub.json", cjson.encode({ url = "http://127.0.0.1:" .. port, port = tonumber(port),
    hub_dir = hub_dir }), { mode = tonumber("600", 8) })
  local ok, err = service.supervise(state, function()
    return { argv = wrangler_argv(hub_dir, { "dev", "--ip", "127.0.0.1", "--port", port,
      "--persist-to", state .. "/wrangler", "--show-interactive-dev-session=false", "--log-level", "info" }),
      cwd = hub_dir, env_add = wrangler_env(state) }
  end, { grace = 5, owner = service.owner_from_env() })
  if not ok then io.stderr:write("hubctl: ", err, "\n") return 1 end
  return 0
elseif cmd == "restart" then
  local state = abs(dir)
  local child, err = service.restart(state, { timeout = 30 })
  if not child then io.stderr:write("hubctl: ", err, "\n") return 1 end
  local hub = info(state)
  if hub and not wait_healthy(hub.url, 60) then
    io.stderr:write("hubctl: the hub restarted but ", hub.url, "/api/health did not answer 200 within 60 s\n")
    return 1
  end
  io.stdout:write(("hub restarted: pid %d (generation %d)\n"):format(child.pid, child.generation))
  return 0
elseif cmd == "status" then
  local st = service.status(abs(dir))
  st.hub = info(abs(dir))
  io.stdout:write(cjson.encode(st), "\n")
  return st.supervisor and 0 or 3
elseif cmd == "stop" then
  local ok, err = service.stop(abs(dir))
  if not ok then io.stderr:write("hubctl: ", err, "\n") return 1 end
  return 0
end
return usage()
