-- runbook (init.lua) — the DSL a runbook is written in:
--
--   local rb = require("runbook")
--   return rb.runbook { name = ..., summary = ..., params = {...}, steps = {
--     rb.step "Title" { run = fn, verify = { rb.check("what", fn) }, hint = "..." },
--   } }
--
-- It only builds and checks tables; engine.lua runs them. A malformed
-- runbook raises here, naming the runbook and the step, so `runbook check`
-- and `runbook show` catch it before anything runs.

local params = require("runbook.params")

local M = {}

local STEP_FIELDS = { run = "function", verify = "table", no_verify = "string", hint = "string",
  rollback = "function", retry = "table", timeout = "number", confirm = "string",
  when = "function", title = "string", reads = "boolean" }

---A verification: a name and a function(ctx) returning true, or false/nil
---and a reason. `opts.after_write = false` marks a check that still runs in
---dry-run after a simulated write (it does not depend on the write).
---@param name string
---@param fn function
---@param opts table|nil
function M.check(name, fn, opts)
  assert(type(name) == "string", "rb.check: name must be a string")
  assert(type(fn) == "function", "rb.check: " .. name .. ": needs a function(ctx)")
  return { kind = "check", name = name, fn = fn, independent = opts and opts.independent or false }
end

---A step: `rb.step "Title" { run = ..., verify = {...} }`.
---@param title string
function M.step(title)
  assert(type(title) == "string" and title ~= "", "rb.step: needs a title string")
  return function(def)
    assert(type(def) == "table", "rb.step " .. title .. ": needs a table")
    def.title = title
    def.kind = "step"
    return def
  end
end

local function bad(rbname, fmt, ...)
  error(rbname .. ": " .. fmt:format(...), 0)
end

---A runbook definition, checked.
---@param def table
function M.runbook(def)
  assert(type(def) == "table", "rb.runbook: needs a table")
  local name = def.name
  if type(name) ~= "string" or not name:match("^[%w][%w%-_]*$") then
    bad(tostring(name), "runbook needs name = \"lower-case-words\"")
  end
  if type(def.summary) ~= "string" or def.summary == "" then
    bad(name, "runbook needs a one-line summary")
  end
  def.params = params.declare(def.params, name)
  if type(def.steps) ~= "table" or #def.steps == 0 then bad(name, "runbook has no steps") end
  for i, s in ipairs(def.steps) do
    if type(s) ~= "table" or s.kind ~= "step" then
      bad(name, "step %d is not made with rb.step \"Title\" {...}", i)
    end
    for k, v in pairs(s) do
      if k ~= "kind" and STEP_FIELDS[k] == nil then
        bad(name, "step %d (%s): unknown field '%s'", i, s.title, tostring(k))
      end
      if STEP_FIELDS[k] and type(v) ~= STEP_FIELDS[k] then
        bad(name, "step %d (%s): %s must be a %s", i, s.title, k, STEP_FIELDS[k])
      end
    end
    if not s.run then bad(name, "step %d (%s) has no run function", i, s.title) end
    -- what the engine and `show` compute with must be usable numbers
    if s.timeout ~= nil and not (s.timeout > 0 and s.timeout < math.huge) then
      bad(name, "step %d (%s): timeout must be a positive number of seconds", i, s.title)
    end
    local r = s.retry
    if r ~= nil then
      local a, d, b = r.attempts, r.delay, r.backoff
      if a ~= nil and not (type(a) == "number" and a >= 1 and a < math.huge and a == math.floor(a)) then
        bad(name, "step %d (%s): retry.attempts must be a whole number >= 1", i, s.title)
      end
      if d ~= nil and not (type(d) == "number" and d >= 0 and d < math.huge) then
        bad(name, "step %d (%s): retry.delay must be a number of seconds >= 0", i, s.title)
      end
      if b ~= nil and not (type(b) == "number" and b >= 1 and b < math.huge) then
        bad(name, "step %d (%s): retry.backoff must be a number >= 1", i, s.title)
      end
    end
    if s.verify == nil and s.no_verify == nil then
      bad(name, "step %d (%s) has no verify; add verify = {...} or no_verify = \"why\"", i, s.title)
    end
    for j, c in ipairs(s.verify or {}) do
      if type(c) ~= "table" or c.kind ~= "check" then
        bad(name, "step %d (%s): verify[%d] is not made with rb.check", i, s.title, j)
      end
    end
  end
  if def.envs ~= nil then
    local ok = type(def.envs) == "table"
    for _, e in ipairs(ok and def.envs or {}) do ok = ok and type(e) == "string" and e ~= "" end
    if not ok then bad(name, "envs must be a list of names") end
  end
  if def.read_only ~= nil and type(def.read_only) ~= "boolean" then bad(name, "read_only must be true or false") end
  def.kind = "runbook"
  return def
end

return M
