-- proc.lua — the public face of runbook.proc.core (child processes).
-- Re-exports the core and adds the policy it leaves out: `run` always has a
-- finite timeout (60 s unless the caller says otherwise, `math.huge` being
-- the explicit "no limit"), argv may be given as the array part of the spec,
-- and `which` finds a program on PATH the way `run` will.
-- Expected failures return nil, msg, code (ENOENT for a missing program).

local core = require("runbook.proc.core")

local M = {}

--- Seconds a `run` may take when the spec has no `timeout`.
M.DEFAULT_TIMEOUT = 60

-- { "ls", "-l", cwd = "/" } and { argv = { "ls", "-l" }, cwd = "/" } are the
-- same spec; the core only knows the second.
local function normalise(spec, fname)
  if type(spec) ~= "table" then
    error(fname .. ": expected a spec table", 3)
  end
  local out = {}
  for k, v in pairs(spec) do
    if type(k) ~= "number" then out[k] = v end
  end
  if out.argv == nil and spec[1] ~= nil then
    out.argv = table.move(spec, 1, #spec, 1, {})
  elseif spec[1] ~= nil then
    error(fname .. ": give argv either as argv = {...} or as the array part, not both", 3)
  end
  return out
end

--- Run a program to completion (never through a shell).
--- spec: argv (or the array part), env (replaces the environment), env_add,
--- cwd, stdin (bytes), timeout (seconds; default 60, math.huge for none),
--- grace (seconds between TERM and KILL on timeout, default 2), stdout and
--- stderr ("capture" (default) | "null" | "inherit" | function(line)),
--- max_capture (bytes per stream, default 64 MiB).
---@param spec table
---@return table|nil result { code, signal, timed_out, interrupted, stdout, stderr, stdout_truncated, stderr_truncated, pid }
---@return string? msg
---@return string? code
function M.run(spec)
  spec = normalise(spec, "proc.run")
  if spec.timeout == nil then spec.timeout = M.DEFAULT_TIMEOUT end
  return core.run(spec)
end

--- Start a background process → Process (pid, running, wait, kill, stop, close).
--- spec: argv (or the array part), env, env_add, cwd, stdout/stderr
--- ("inherit" (default) | "null" | a file path), append.
---@param spec table
---@return userdata|nil process, string? msg, string? code
function M.spawn(spec)
  return core.spawn(normalise(spec, "proc.spawn"))
end

--- Full path of `name` found on PATH (or `path` if given), or nil.
--- A name containing "/" is returned as is when it is an executable file.
---@param name string
---@param path string|nil colon-separated directories (default $PATH)
---@return string|nil
function M.which(name, path)
  assert(type(name) == "string" and name ~= "", "proc.which: name must be a non-empty string")
  local fs = require("runbook.fs.core")
  local function executable(p)
    local st = fs.stat(p)
    return st and st.type == "file" and st.mode & tonumber("111", 8) ~= 0
  end
  if name:find("/", 1, true) then
    return executable(name) and name or nil
  end
  path = path or os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin"
  for dir in (path .. ":"):gmatch("([^:]*):") do
    if dir == "" then dir = "." end
    local candidate = dir .. "/" .. name
    if executable(candidate) then return candidate end
  end
  return nil
end

--- Is a process with this pid alive (kill(pid, 0))? A zombie counts.
---@param pid integer
---@return boolean
M.alive = core.alive

--- This process's pid.
---@return integer
M.getpid = core.getpid

--- The host name.
---@return string|nil name, string? msg, string? code
M.hostname = core.hostname

--- Name of the effective user (its uid as a string without a passwd entry).
---@return string
M.user = core.user

--- A copy of this process's environment as a table.
---@return table<string, string>
M.env = core.env

--- From now on SIGINT/SIGTERM only set a flag (a second identical signal
--- before the flag is taken terminates as usual).
---@return boolean
M.trap_signals = core.trap_signals

--- "INT", "TERM" or nil; clears the flag.
---@return string|nil
M.pending_signal = core.pending_signal

return M
