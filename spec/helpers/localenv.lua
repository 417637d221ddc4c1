-- localenv.lua (spec helper) — a complete local environment of the kind
-- runbook.lua describes, in a temp dir: a copy of the hub under its
-- supervisor (real `wrangler dev`), the example daemon under its
-- supervisor, the canonical key file, and a project file pointing at all of
-- them. Plus a `production` environment whose wrangler is the recording
-- stand-in (spec/fixtures/bin/wrangler).
--
--   local L = require("localenv").start()
--   local r = L.run({ "run", "rotate-queue-key", "--yes" })
--   L.stop()
local cli = require("cli")
local cjson = require("cjson.safe")

local M = {}

local ROOT = cli.root

local function proc() return require("runbook.proc") end
local function fs() return require("runbook.fs") end
local function term() return require("runbook.term.core") end

local function listening()
  local used = {}
  for _, f in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    for line in (cli.slurp(f) or ""):gmatch("[^\n]+") do
      local port, st = line:match("^%s*%d+:%s+%x+:(%x+)%s+%x+:%x+%s+(%x+)")
      if port and st == "0A" then used[tonumber(port, 16)] = true end
    end
  end
  return used
end

local function free_port()
  local used = listening()
  for _ = 1, 500 do
    local p = math.random(20000, 59999)
    if not used[p] then return p end
  end
  error("no free port")
end

function M.available()
  return fs().exists(ROOT .. "/examples/hub/node_modules/wrangler"), "run `make hub-deps` first"
end

local function write(path, text, mode)
  fs().mkdir_p(fs().dirname(path), tonumber("700", 8))
  assert(fs().write_atomic(path, text, { mode = mode or tonumber("600", 8) }))
end

local function env_text(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. t[k] end
  return table.concat(out, "\n") .. "\n"
end

local PROJECT = [[
local d = %q
local url = %q
local exe = package.runbook_exe
local root = %q
return {
  default_env = "local",
  environments = {
    ["local"] = {
      url = url, worker_url = url, web_url = url, notify_url = url .. "/hooks/slack",
      canonical = d .. "/scripts/.env.assistant",
      workers = { { name = "orchestrator-hub", backend = "dev_vars", path = d .. "/hub-src/.dev.vars",
        restart = { exe, "exec", root .. "/examples/hub/hubctl.lua", "restart", d .. "/hubstate" },
        health_url = url .. "/api/health" } },
      daemon = { env_file = d .. "/daemon/.env", status = d .. "/daemon/state/status.json",
        restart = { exe, "exec", root .. "/examples/daemon/daemonctl.lua", "restart", d .. "/daemon/sup" } },
      hub_dir = d .. "/hub-src", hub_state = d .. "/hubstate",
    },
    production = {
      url = url, worker_url = url, protected = true,
      canonical = d .. "/prod/.env.assistant",
      wrangler = { root .. "/spec/fixtures/bin/wrangler" },
      workers = { { name = "orchestrator-hub", backend = "wrangler" },
                  { name = "orchestrator-hub", env = "production", backend = "wrangler" } },
      provider_workers = {
        { backend = "wrangler", config = "wrangler.processing.toml" },
        { backend = "wrangler", config = "wrangler.toml" },
        { backend = "wrangler", config = "wrangler.processing.toml", env = "production" },
        { backend = "wrangler", config = "wrangler.toml", env = "production" } },
    },
  },
}
]]

---Start everything. o.key: the key every holder starts with (random if nil).
function M.start(o)
  o = o or {}
  local crypto = require("runbook.crypto")
  local self = { dir = cli.tmpdir(), port = o.port or free_port(), handles = {} }
  local d = self.dir
  self.url = "http://127.0.0.1:" .. self.port
  self.key = o.key or crypto.random_hex(32)
  self.project = d .. "/runbook.lua"
  self.journal = d .. "/journal.db"
  self.wrangler_log = d .. "/wrangler.log"

  local P = proc()
  assert(P.run({ argv = { "mkdir", "-p", d .. "/hub-src" }, timeout = 10 }))
  local src = ROOT .. "/examples/hub"
  assert(P.run({ argv = { "cp", "-R", src .. "/src", src .. "/migrations", src .. "/wrangler.toml",
    src .. "/package.json", d .. "/hub-src" }, timeout = 30 }).code == 0)
  assert(P.run({ argv = { "ln", "-s", src .. "/node_modules", d .. "/hub-src/node_modules" }, timeout = 10 }).code == 0)
  write(d .. "/hub-src/.dev.vars", env_text({ ASSISTANT_API_KEY = self.key, QUEUE_API_KEY = self.key,
    WORKER_CALLBACK_SECRET = "cb-" .. crypto.random_hex(8), TASKS_AUTH_TOKEN = "tt-" .. crypto.random_hex(8) }))
  write(d .. "/scripts/.env.assistant", "# canonical queue key (seed 000)\nASSISTANT_API_KEY=" .. self.key .. "\n")
  write(d .. "/prod/.env.assistant", "ASSISTANT_API_KEY=" .. self.key .. "\n")
  write(d .. "/daemon/.env", env_text({ ASSISTANT_API_KEY = self.key, QUEUE_URL = self.url,
    NOTIFY_URL = self.url .. "/hooks/slack", POLL_INTERVAL_SEC = tostring(o.poll_interval or 0.5),
    MIN_NOTIFY_INTERVAL_SEC = tostring(o.min_notify or 3600), STATE_DIR = d .. "/daemon/state" }))
  write(self.project, PROJECT:format(d, self.url, ROOT), tonumber("644", 8))

  local exe = cli.bin
  local hub = assert(P.spawn({ argv = { exe, "exec", ROOT .. "/examples/hub/hubctl.lua", "supervise",
    d .. "/hubstate", tostring(self.port), d .. "/hub-src" }, stdout = d .. "/hub.log", stderr = d .. "/hub.log",
    env_add = { RUNBOOK_SUPERVISOR_OWNER = tostring(P.getpid()) } }))
  self.handles[#self.handles + 1] = hub
  local http = require("runbook.http")
  local t_end = term().monotonic() + 120
  while true do
    local r = http.request({ url = self.url .. "/api/health", timeout = 2 })
    if r and r.status == 200 then break end
    if not hub:running() or term().monotonic() > t_end then
      local log = (cli.slurp(d .. "/hub.log") or "") .. (cli.slurp(d .. "/hubstate/child.log") or "")
      M.stop(self)
      error("localenv: hub did not start:\n" .. log:sub(-2000), 0)
    end
    term().sleep(0.2)
  end
  if o.daemon ~= false then
    self.handles[#self.handles + 1] = assert(P.spawn({ argv = { exe, "exec", ROOT .. "/examples/daemon/daemonctl.lua",
      "supervise", d .. "/daemon/sup", d .. "/daemon/.env" }, stdout = d .. "/daemon.log", stderr = d .. "/daemon.log",
      env_add = { RUNBOOK_SUPERVISOR_OWNER = tostring(P.getpid()) } }))
    t_end = term().monotonic() + 20
    while not fs().exists(d .. "/daemon/state/status.json") and term().monotonic() < t_end do term().sleep(0.05) end
  end
  return setmetatable(self, { __index = M })
end

function M.stop(self)
  for i = #self.handles, 1, -1 do self.handles[i]:stop(10) end
  self.handles = {}
  if not os.getenv("KEEP_LOCALENV") then cli.rmrf(self.dir) end
end

---Run the runbook binary against this environment.
function M.run(self, args, o)
  o = o or {}
  local env_add = { RUNBOOK_PROJECT = self.project, RUNBOOK_JOURNAL = self.journal,
    WRANGLER_LOG = self.wrangler_log, WRANGLER_STATE = self.dir .. "/wrangler-state" }
  for k, v in pairs(o.env_add or {}) do env_add[k] = v end
  return cli.run(args, { env_add = env_add, timeout = o.timeout or 300 })
end

---GET/POST the hub directly (not through runbook).
function M.request(self, method, path, o)
  o = o or {}
  local http = require("runbook.http")
  local r = assert(http.request({ method = method, url = self.url .. path, headers = o.headers, body = o.body,
    timeout = o.timeout or 10 }))
  r.json = cjson.decode(r.body or "")
  return r
end

function M.queue_status(self, key)
  return M.request(self, "GET", "/api/queue", { headers = key and { ["X-API-Key"] = key } or nil }).status
end

function M.env_value(_, path, key)
  local doc = require("stdlib.dotenv").parse(cli.slurp(path) or "")
  return doc and doc:get(key)
end

function M.canonical_key(self) return M.env_value(self, self.dir .. "/scripts/.env.assistant", "ASSISTANT_API_KEY") end
function M.hub_key(self, name) return M.env_value(self, self.dir .. "/hub-src/.dev.vars", name or "QUEUE_API_KEY") end
function M.daemon_key(self) return M.env_value(self, self.dir .. "/daemon/.env", "ASSISTANT_API_KEY") end

function M.daemon_status(self)
  return cjson.decode(cli.slurp(self.dir .. "/daemon/state/status.json") or "")
end

function M.notifications(self)
  return M.request(self, "GET", "/api/admin/notifications").json
end

---Change the hub's key behind the tool's back (drift) and restart it.
function M.drift_hub(self, new_key)
  local P = proc()
  local crypto = require("runbook.crypto")
  new_key = new_key or crypto.random_hex(32)
  local dotenv = require("stdlib.dotenv")
  assert(dotenv.update(self.dir .. "/hub-src/.dev.vars", { QUEUE_API_KEY = new_key, ASSISTANT_API_KEY = new_key }))
  local r = P.run({ argv = { cli.bin, "exec", ROOT .. "/examples/hub/hubctl.lua", "restart", self.dir .. "/hubstate" },
    timeout = 120 })
  assert(r.code == 0, "hub restart failed: " .. tostring(r.stderr))
  return new_key
end

---Change the daemon's key behind the tool's back (its .env) and restart it;
---returns once the new process polls with that key.
function M.drift_daemon(self, new_key)
  local crypto = require("runbook.crypto")
  new_key = new_key or crypto.random_hex(32)
  assert(require("stdlib.dotenv").update(self.dir .. "/daemon/.env", { ASSISTANT_API_KEY = new_key }))
  local r = proc().run({ argv = { cli.bin, "exec", ROOT .. "/examples/daemon/daemonctl.lua", "restart",
    self.dir .. "/daemon/sup" }, timeout = 60 })
  assert(r.code == 0, "daemon restart failed: " .. tostring(r.stderr))
  local want, t_end = crypto.fingerprint(new_key), term().monotonic() + 60
  while term().monotonic() < t_end do
    local s = M.daemon_status(self)
    if s and s.key_fingerprint == want then return new_key end
    term().sleep(0.1)
  end
  error("localenv: the restarted daemon never polled with the new key", 0)
end

return M
