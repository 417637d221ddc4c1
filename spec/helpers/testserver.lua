-- testserver.lua — starts spec/helpers/server.js (the local HTTP + HTTPS
-- fixture) for a spec file and stops it again:
--
--   local ts = require("testserver")
--   local srv = ts.start()   -- { url = "http://127.0.0.1:P", https_url = "https://127.0.0.1:Q",
--                            --   http_port = P, https_port = Q, stop = fn }
--   ...
--   srv.stop()
--
-- The server picks free ports itself and reports them in a port file; start
-- waits for that file for at most ~5 s. Node is started through
-- runbook.proc's spawn when that module is available, otherwise through the
-- shell (`node ... &`); either way the server also exits on its own when this
-- process goes away.
local cjson = require("cjson.safe")

local M = {}

local HERE = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "spec/helpers"
local SERVER = HERE .. "/server.js"

local function has(modname, fn)
  local ok, mod = pcall(require, modname)
  if ok and type(mod) == "table" and type(mod[fn]) == "function" then return mod end
  return nil
end

local function sleep(s)
  local term = has("runbook.term.core", "sleep")
  if term then term.sleep(s) else os.execute(("sleep %.2f"):format(s)) end
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Start node; returns a function that stops it.
local function launch(portfile, logfile)
  local proc = has("runbook.proc.core", "spawn")
  if proc and type(proc.getpid) == "function" then
    local p, err = proc.spawn({ argv = { "node", SERVER, portfile, tostring(proc.getpid()) },
      stdout = "null", stderr = logfile })
    if not p then error("testserver: cannot start node: " .. tostring(err), 3) end
    return function() p:stop(2) end
  end
  local pidfile = portfile .. ".pid"
  -- $PPID inside the shell os.execute runs is this process
  assert(os.execute(("node %s %s \"$PPID\" >/dev/null 2>%s & echo $! > %s"):format(
    shell_quote(SERVER), shell_quote(portfile), shell_quote(logfile), shell_quote(pidfile))))
  local pid = tonumber(read(pidfile) or "")
  os.remove(pidfile)
  return function()
    if pid then os.execute(("kill %d 2>/dev/null"):format(pid)) end
  end
end

---Start the fixture server; raises if it is not up within ~5 s.
---@return table srv { url, https_url, http_port, https_port, stop }
function M.start()
  local portfile = os.tmpname()
  os.remove(portfile) -- the server creates it (atomically) once it listens
  local logfile = portfile .. ".log"
  local stop = launch(portfile, logfile)
  local ports
  for _ = 1, 100 do
    ports = cjson.decode(read(portfile) or "")
    if type(ports) == "table" and ports.http and ports.https then break end
    ports = nil
    sleep(0.05)
  end
  if not ports then
    stop()
    local log = read(logfile) or ""
    os.remove(logfile)
    error("testserver: server.js did not start within 5 s: " .. log)
  end
  local srv = {
    http_port = math.tointeger(ports.http),
    https_port = math.tointeger(ports.https),
  }
  srv.url = ("http://127.0.0.1:%d"):format(srv.http_port)
  srv.https_url = ("https://127.0.0.1:%d"):format(srv.https_port)
  local stopped = false
  function srv.stop()
    if stopped then return end
    stopped = true
    stop()
    os.remove(portfile)
    os.remove(logfile)
  end
  return srv
end

return M
