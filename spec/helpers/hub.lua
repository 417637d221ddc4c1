-- hub.lua — starts the local hub (examples/hub, a Cloudflare Worker) under
-- `wrangler dev` for a spec, talks to it, restarts it with new secrets and
-- stops it again:
--
--   local hub = require("hub")
--   local h = hub.start{ vars = { QUEUE_API_KEY = k1, ASSISTANT_API_KEY = k2 } }
--   local r = h.get("/api/queue", { ["X-API-Key"] = k1 })  -- r.status, r.headers, r.body, r.json
--   h.restart{ QUEUE_API_KEY = k3 }   -- rewrite .dev.vars, same port, healthy again
--   h.stop()
--
-- Each instance gets a fresh temp dir holding a copy of the hub's sources
-- (node_modules is a symlink to examples/hub/node_modules), a .dev.vars
-- written with mode 0600, and its own persist dir for local KV and D1 into
-- which the D1 migrations are applied before `wrangler dev` starts on a free
-- 127.0.0.1 port. Secrets go only into .dev.vars, never into argv.
--
-- wrangler runs in its own process group (runbook.proc spawns it so) and
-- starts workerd and esbuild in that group; stop() ends the whole group and
-- waits until no member is left running. A guard (M.guard) ends the group
-- too if the spec runner dies without stopping it.
local cjson = require("cjson.safe")
local proc = require("runbook.proc")
local fs = require("runbook.fs")
local term = require("runbook.term.core")
local http = require("runbook.http")

local M = {}

local HERE = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "spec/helpers"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function popen_read(cmd)
  local p = io.popen(cmd, "r")
  if not p then return nil end
  local out = p:read("a")
  p:close()
  return out
end

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  return assert(fs.getcwd()) .. "/" .. p
end

--- The hub's sources (examples/hub), absolute.
M.SRC = abspath(HERE .. "/../../examples/hub"):gsub("/spec/helpers/%.%./%.%./", "/")

local now, sleep = term.monotonic, term.sleep
local function read(path) return (fs.read(path)) end
local exists = fs.exists

-- Run an argv to completion; returns ok, combined output.
local function run(argv, opts)
  opts = opts or {}
  local r, err = proc.run({ argv = argv, cwd = opts.cwd, env_add = opts.env_add,
    timeout = opts.timeout or 120, stdout = "capture", stderr = "capture" })
  if not r then return false, err end
  return r.code == 0, (r.stdout or "") .. (r.stderr or "")
end

local NODE
local function node()
  if not NODE then
    NODE = (popen_read("command -v node 2>/dev/null") or ""):gsub("%s+$", "")
    if NODE == "" then NODE = "node" end
  end
  return NODE
end

local function wrangler_js()
  return M.SRC .. "/node_modules/wrangler/bin/wrangler.js"
end

-- argv prefix running wrangler's CLI directly, as bin/wrangler.js would:
-- that wrapper forwards no signals, so a TERM to it would orphan workerd.
local function wrangler_argv(args)
  local argv = { node(), "--no-warnings", "--experimental-vm-modules",
    M.SRC .. "/node_modules/wrangler/wrangler-dist/cli.js" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

---Whether the hub can run here: node on PATH and `make hub-deps` done.
---@return boolean ok
---@return string|nil why
function M.available()
  if not exists(wrangler_js()) then
    return false, "examples/hub/node_modules missing: run `make hub-deps`"
  end
  if (popen_read("command -v node 2>/dev/null") or "") == "" then return false, "node is not on PATH" end
  return true
end

-- Environment for every wrangler child: no telemetry; the update check's
-- registry is a closed local port so it fails at once instead of reaching
-- out; a private dev registry, because every `wrangler dev` of a worker
-- named orchestrator-hub otherwise shares ~/.config/.wrangler/registry and
-- reloads when another instance (another spec run) starts or stops.
local function wrangler_env(dir)
  return {
    WRANGLER_SEND_METRICS = "false",
    WRANGLER_REGISTRY_PATH = dir .. "/registry",
    WRANGLER_LOG_PATH = dir .. "/wrangler-logs",
    npm_config_registry = "http://127.0.0.1:9/",
    NO_UPDATE_NOTIFIER = "1",
    CI = "true",
    NO_COLOR = "1",
  }
end

-- TCP ports someone listens on (from /proc/net/tcp{,6}).
local function listening_ports()
  local used = {}
  for _, f in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    for line in (read(f) or ""):gmatch("[^\n]+") do
      local port, st = line:match("^%s*%d+:%s+%x+:(%x+)%s+%x+:%x+%s+(%x+)")
      if port and st == "0A" then used[tonumber(port, 16)] = true end
    end
  end
  return used
end

local function free_port(avoid)
  local used = listening_ports()
  math.randomseed(os.time() + math.floor(now() * 1000) % 100000)
  for _ = 1, 200 do
    local p = math.random(20000, 59999)
    if not used[p] and not (avoid and avoid[p]) then return p end
  end
  error("hub: no free port found")
end

-- .dev.vars text (dotenv syntax wrangler reads); a value with a newline is refused.
local function dev_vars_text(vars)
  local names = {}
  for k in pairs(vars) do names[#names + 1] = k end
  table.sort(names)
  local out = { "# written by spec/helpers/hub.lua" }
  for _, k in ipairs(names) do
    local v = tostring(vars[k])
    assert(k:match("^[%a_][%w_]*$"), "hub: bad var name " .. k)
    assert(not v:find("[\r\n]"), "hub: var " .. k .. " contains a newline")
    if v:find("'") then
      assert(not v:find('[\\"]'), "hub: var " .. k .. " mixes quotes")
      out[#out + 1] = k .. '="' .. v .. '"'
    else
      out[#out + 1] = k .. "='" .. v .. "'"
    end
  end
  return table.concat(out, "\n") .. "\n"
end

local function write_secret_file(path, text)
  assert(fs.write_atomic(path, text, { mode = 384 })) -- 0600
end

-- Pids in process group `pgid` (from /proc); zombies only when asked.
local function group_members(pgid, zombies)
  local out = {}
  for _, pid in ipairs(fs.list("/proc") or {}) do
    local stat = read("/proc/" .. pid .. "/stat")
    if stat then
      local state, pgrp = stat:match("%) (%a) %d+ (%d+)")
      if pgrp and tonumber(pgrp) == pgid and (zombies or (state ~= "Z" and state ~= "X")) then
        out[#out + 1] = tonumber(pid)
      end
    end
  end
  return out
end

M.group_members = group_members

-- A guard for process group `pgid`: a sh loop in a group of its own that
-- checks each second that `owner` (default: this process) still lives, and
-- once it is gone (the spec runner killed, or stopped with Ctrl-C, which
-- does not reach the hub's own group) sends the group TERM, then KILL. As
-- stdlib/service does for supervisors with RUNBOOK_SUPERVISOR_OWNER.
-- Returns the guard's Process: stop it when the group was stopped normally.
function M.guard(pgid, owner)
  owner = owner or proc.getpid()
  -- (dash's kill takes -PGID, not "-- -PGID")
  local script = "while kill -0 $1 2>/dev/null; do sleep 1; done; kill -TERM -$2 2>/dev/null; " ..
    "sleep 2; kill -KILL -$2 2>/dev/null"
  return assert(proc.spawn({ argv = { "sh", "-c", script, "hub-guard", tostring(owner), tostring(pgid) } }))
end

-- Start wrangler dev in the background (a process group of its own, as
-- runbook.proc spawns every child); returns a handle {pid, running(), stop()}.
local function spawn(argv, cwd, env_add, log_path)
  local h = assert(proc.spawn({ argv = argv, cwd = cwd, env_add = env_add,
    stdout = log_path, stderr = log_path, append = true }))
  local guard = M.guard(h:pid())
  return {
    pid = h:pid(),
    running = function() return h:running() end,
    stop = function()
      h:stop(5)
      guard:stop(0)
    end,
  }
end

local function http_request(req)
  local r, err, code = http.request({ method = req.method, url = req.url, headers = req.headers,
    body = req.body, timeout = req.timeout or 30, connect_timeout = req.timeout or 5 })
  if not r then return nil, err, code end
  return { status = r.status, headers = r.headers, body = r.body }
end

local Hub = {}
Hub.__index = Hub

local function log_tail(path, n)
  local s = read(path) or ""
  return s:sub(-(n or 3000))
end

-- Start wrangler dev for this instance and wait for /api/health. Ports are
-- picked free by looking, so another process can take one first (workerd
-- then dies with "Address already in use"): that start is tried again, with
-- a new inspector port, at most three times in all.
local function launch(self, attempt)
  attempt = attempt or 1
  -- a port someone else listens on would answer the health check below for
  -- a wrangler that could not bind it (a stopped hub's is released at once)
  for _ = 1, 50 do
    if not listening_ports()[self.port] then break end
    sleep(0.1)
  end
  if listening_ports()[self.port] then error(("hub: port %d is taken by another process"):format(self.port), 0) end
  local argv = wrangler_argv({ "dev", "--ip", "127.0.0.1", "--port", tostring(self.port),
    "--inspector-port", tostring(free_port({ [self.port] = true })),
    "--persist-to", self.persist_dir, "--show-interactive-dev-session=false", "--log-level", "info" })
  local t0 = now()
  local logged = #(read(self.log_path) or "")
  self._proc = spawn(argv, self.dir, wrangler_env(self.dir), self.log_path)
  local deadline = t0 + self.timeout
  while now() < deadline do
    local r = http_request({ method = "GET", url = self.url .. "/api/health", timeout = 2 })
    if r and r.status == 200 then
      self.start_seconds = now() - t0
      return
    end
    if not self._proc.running() then
      self._proc.stop() -- (its guard)
      self._proc = nil
      local this = (read(self.log_path) or ""):sub(logged + 1)
      if this:find("Address already in use", 1, true) and attempt < 3 then return launch(self, attempt + 1) end
      error("hub: wrangler dev exited during start-up:\n" .. log_tail(self.log_path), 0)
    end
    sleep(0.1)
  end
  self._proc.stop()
  self._proc = nil
  error(("hub: /api/health not ready within %d s:\n%s"):format(self.timeout, log_tail(self.log_path)), 0)
end

-- Stop the process group and wait (bounded) until nothing of it runs.
local function halt(self, final)
  local p = self._proc
  if not p then return end
  self._proc = nil
  -- TERM to wrangler alone first: it shuts workerd down and reaps it, so no
  -- orphan is left for init to collect. Then the group, for stragglers.
  os.execute(("kill -TERM %d 2>/dev/null"):format(p.pid))
  for _ = 1, 50 do
    if #group_members(p.pid) == 0 then break end
    sleep(0.1)
  end
  p.stop()
  for _ = 1, 50 do
    if #group_members(p.pid) == 0 then break end
    os.execute(("kill -KILL -%d 2>/dev/null"):format(p.pid))
    sleep(0.1)
  end
  -- workerd exits after wrangler and is reaped by init: give that a moment
  -- so `ps` after the specs shows nothing of ours, not even <defunct>.
  for _ = 1, final and 30 or 0 do
    if #group_members(p.pid, true) == 0 then return end
    sleep(0.1)
  end
end

---Start a hub. opts: vars (the .dev.vars entries), port (default: a free
---one), timeout (s to wait for health, default 60), persist_dir.
---@param opts table|nil
---@return table hub { url, port, dir, dev_vars_path, log_path, persist_dir, vars,
---  start_seconds, migrate_seconds, restart, stop, request, get, post, admin, wrangler }
function M.start(opts)
  opts = opts or {}
  local ok, why = M.available()
  if not ok then error("hub: " .. why, 2) end
  local base = os.getenv("TMPDIR") or "/tmp"
  local dir = (popen_read("mktemp -d " .. shell_quote(base .. "/runbook-hub.XXXXXX")) or ""):gsub("%s+$", "")
  assert(dir ~= "", "hub: mktemp -d failed")
  local self = setmetatable({
    dir = dir,
    dev_vars_path = dir .. "/.dev.vars",
    log_path = dir .. "/wrangler.log",
    persist_dir = opts.persist_dir or (dir .. "/state"),
    vars = opts.vars or {},
    timeout = opts.timeout or 60,
  }, Hub)
  self.port = opts.port or free_port()
  self.url = ("http://127.0.0.1:%d"):format(self.port)

  local copied, out = run({ "cp", "-R", M.SRC .. "/src", M.SRC .. "/migrations", M.SRC .. "/wrangler.toml",
    M.SRC .. "/package.json", dir })
  assert(copied, "hub: copying sources failed: " .. tostring(out))
  assert(run({ "ln", "-s", M.SRC .. "/node_modules", dir .. "/node_modules" }))
  write_secret_file(self.dev_vars_path, dev_vars_text(self.vars))

  local t0 = now()
  local migrated, mout = run(wrangler_argv({ "d1", "migrations", "apply", "DB", "--local",
    "--persist-to", self.persist_dir }), { cwd = dir, env_add = wrangler_env(dir), timeout = 120 })
  if not migrated then
    run({ "rm", "-rf", dir })
    error("hub: d1 migrations apply failed:\n" .. tostring(mout), 2)
  end
  self.migrate_seconds = now() - t0
  local launched, err = pcall(launch, self)
  if not launched then
    run({ "rm", "-rf", dir })
    error(err, 2)
  end
  -- A hub a spec forgot to stop is stopped when the Lua state closes.
  self._guard = setmetatable({}, { __gc = function() halt(self, true) end })
  return self
end

---Rewrite .dev.vars (when vars is given: it replaces all entries), stop
---wrangler, start it again on the same port and wait until healthy.
---@param vars table|nil
function Hub:restart(vars)
  if vars then
    self.vars = vars
    write_secret_file(self.dev_vars_path, dev_vars_text(vars))
  end
  halt(self)
  launch(self)
end

---Stop the hub (whole process group) and remove its temp dir unless
---HUB_KEEP=1 is set. Idempotent.
function Hub:stop()
  halt(self, true)
  if not self._removed and os.getenv("HUB_KEEP") ~= "1" then
    self._removed = true
    run({ "rm", "-rf", self.dir })
  end
end

---One request: req = { method, path (or url), headers, body (string), json (table) }.
---@param req table
---@return table|nil resp { status, headers (lower-case names), body, json (decoded or nil) }
---@return string|nil err
---@return string|nil code
function Hub:request(req)
  local headers = {}
  for k, v in pairs(req.headers or {}) do headers[k] = v end
  local body = req.body
  if req.json ~= nil then
    body = assert(cjson.encode(req.json))
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  local r, err, code = http_request({ method = req.method or (body and "POST" or "GET"),
    url = req.url or (self.url .. req.path), headers = headers, body = body, timeout = req.timeout or 60 })
  if not r then return nil, err, code end
  r.json = cjson.decode(r.body or "")
  return r
end

---@param path string
---@param headers table|nil
function Hub:get(path, headers)
  return self:request({ method = "GET", path = path, headers = headers })
end

---POST a table as JSON (or a string as is).
---@param path string
---@param body table|string|nil
---@param headers table|nil
function Hub:post(path, body, headers)
  if type(body) == "table" then
    return self:request({ method = "POST", path = path, json = body, headers = headers })
  end
  return self:request({ method = "POST", path = path, body = body or "", headers = headers })
end

---POST to a local admin route; raises unless 2xx; returns the decoded body.
---@param path string e.g. "/api/admin/seed"
---@param body table|nil
function Hub:admin(path, body)
  -- seeding 10,000 keys takes seconds, more on a busy machine
  local r, err = self:request({ method = "POST", path = path, json = body or {}, timeout = 180 })
  if not r then error("hub: " .. path .. ": " .. tostring(err), 2) end
  if r.status < 200 or r.status > 299 then
    error(("hub: %s answered %d: %s"):format(path, r.status, r.body), 2)
  end
  return r.json
end

--- Wipe KV and D1.
function Hub:reset() return self:admin("/api/admin/reset") end

---@param fixtures table see examples/hub/README.md (admin seed)
function Hub:seed(fixtures) return self:admin("/api/admin/seed", fixtures) end

---@param fault table {path_prefix, count, status, retry_after, delay_ms, binding}
function Hub:fault(fault) return self:admin("/api/admin/faults", fault) end

---Run a wrangler command against this hub's dir (e.g. `{"kv", "key", "list",
---"--binding", "KV", "--local", "--persist-to", h.persist_dir}`).
---@param args string[]
---@return boolean ok
---@return string output stdout and stderr
function Hub:wrangler(args)
  return run(wrangler_argv(args), { cwd = self.dir, env_add = wrangler_env(self.dir), timeout = 120 })
end

-- Also callable as h.stop() / h.get(...) (the brief's shape): bind methods.
local function bind(self)
  for name, fn in pairs(Hub) do
    if type(fn) == "function" and name ~= "__index" then
      rawset(self, name, function(first, ...)
        if first == self then return fn(self, ...) end
        return fn(self, first, ...)
      end)
    end
  end
  return self
end

local start = M.start
function M.start(opts)
  local ok, h = pcall(start, opts)
  if not ok then error(h, 2) end
  return bind(h)
end

M._dev_vars_text = dev_vars_text
M._group_members = group_members

return M
