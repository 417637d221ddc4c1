-- daemonctl.lua — start, restart, stop the example daemon under a
-- supervisor (stdlib/service.lua). The project file names these commands
-- for the local environment, so rotate-queue-key's "restart the daemon"
-- step restarts a real process that then re-reads its .env.
--
--   runbook exec examples/daemon/daemonctl.lua supervise DIR ENV_FILE   (foreground)
--   runbook exec examples/daemon/daemonctl.lua restart DIR
--   runbook exec examples/daemon/daemonctl.lua status DIR
--   runbook exec examples/daemon/daemonctl.lua stop DIR
local service = require("stdlib.service")
local cjson = require("cjson")

local cmd, dir, env_file = arg[1], arg[2], arg[3]
local function usage()
  io.stderr:write("usage: daemonctl.lua supervise DIR ENV_FILE | restart DIR | status DIR | stop DIR\n")
  return 2
end
if not cmd or not dir then return usage() end

local here = arg[0]:match("^(.*)/[^/]*$") or "."
if cmd == "supervise" then
  if not env_file then return usage() end
  local ok, err = service.supervise(dir, function()
    return { argv = { package.runbook_exe, "exec", here .. "/daemon.lua", env_file } }
  end, { owner = service.owner_from_env() })
  if not ok then io.stderr:write("daemonctl: ", err, "\n") return 1 end
  return 0
elseif cmd == "restart" then
  local child, err = service.restart(dir)
  if not child then io.stderr:write("daemonctl: ", err, "\n") return 1 end
  io.stdout:write(("daemon restarted: pid %d (generation %d)\n"):format(child.pid, child.generation))
  return 0
elseif cmd == "status" then
  io.stdout:write(cjson.encode(service.status(dir)), "\n")
  return service.supervisor(dir) and 0 or 3
elseif cmd == "stop" then
  local ok, err = service.stop(dir)
  if not ok then io.stderr:write("daemonctl: ", err, "\n") return 1 end
  return 0
end
return usage()
