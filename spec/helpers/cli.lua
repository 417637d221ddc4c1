-- cli.lua (spec helper) — runs the runbook binary as a child process, the
-- way an operator would, and returns what they would see.
local M = {}

M.bin = os.getenv("RUNBOOK_BIN") or "./runbook"
M.root = os.getenv("PWD") or "."

---@param args string[]
---@param o table|nil { env_add, stdin, timeout, cwd }
---@return table { code, stdout, stderr, signal }
function M.run(args, o)
  o = o or {}
  local proc = require("runbook.proc.core")
  local argv = { M.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  -- the list/show caches go to one scratch directory per test run, never
  -- into the user's ~/.cache
  M.cache_home = M.cache_home or M.tmpdir()
  local env_add = { NO_COLOR = "1", RUNBOOK_PATH = M.root .. "/spec/fixtures/runbooks", XDG_CACHE_HOME = M.cache_home }
  for k, v in pairs(o.env_add or {}) do env_add[k] = v end
  local res = assert(proc.run({ argv = argv, env_add = env_add, stdin = o.stdin or "",
    timeout = o.timeout or 60, cwd = o.cwd, stdout = "capture", stderr = "capture" }))
  return res
end

---A fresh scratch directory (removed by the caller with M.rmrf).
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(require("runbook.fs.core").mkdir_p(p, tonumber("700", 8)))
  return p
end

function M.rmrf(dir)
  if dir and dir:match("^/tmp/") then
    require("runbook.proc.core").run({ argv = { "rm", "-rf", dir }, timeout = 30 })
  end
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function M.slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

---Poll fn every 50 ms until it returns true or `secs` have passed
---(stdlib.poll.wait, without its backoff).
function M.wait_until(fn, secs)
  return (require("stdlib.poll").wait(fn, { every = 0.05, backoff = 1, timeout = secs }))
end

return M
