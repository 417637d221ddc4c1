-- params.lua — a runbook's typed parameters: declaration checks, parsing of
-- `-p name=value` words, defaults, validation. Everything is refused before
-- any step runs, with a message naming the parameter and what to pass.

local M = {}

M.types = { string = true, int = true, number = true, bool = true, url = true,
  path = true, enum = true, duration = true, secret = true }

local UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400 }

-- A value as a message shows it: quoted, on one line, without terminal
-- control bytes (escaped as \ddd), and cut after 60 bytes: whatever was
-- typed, the refusal stays one readable line.
local function shown(v)
  local s = tostring(v)
  local cut = #s > 60
  if cut then s = s:sub(1, 60):gsub("[\192-\255][\128-\191]*$", "") end
  s = s:gsub("[%c\127]", function(ch) return ("\\%03d"):format(ch:byte()) end)
  return "'" .. s .. (cut and "...'" or "'")
end

---Parse a duration like "90", "30s", "5m", "1h30m", "250ms" into seconds.
---@param s string
---@return number|nil seconds, string|nil why
function M.duration(s)
  if type(s) == "number" then return s end
  if type(s) ~= "string" or s == "" then return nil, "expected a duration like 30s, 5m or 1h30m" end
  local bad = ("%s is not a duration (use e.g. 30s, 5m, 1h30m)"):format(shown(s))
  local total, pos = 0, 1
  if s:match("^%d+%.?%d*$") then
    total = tonumber(s)
  else
    while pos <= #s do
      local num, unit, nxt = s:match("^(%d+%.?%d*)(%a+)()", pos)
      if not num or not UNITS[unit] then return nil, bad end
      total = total + tonumber(num) * UNITS[unit]
      pos = nxt
    end
  end
  -- 400 digits read as a float are infinite: no wait may last forever
  if total == math.huge then return nil, bad end
  return total
end

local TRUE = { ["true"] = true, yes = true, ["1"] = true, on = true }
local FALSE = { ["false"] = true, no = true, ["0"] = true, off = true }

local function convert(p, raw)
  local t = p.type
  if t == "string" or t == "secret" or t == "path" then
    if type(raw) ~= "string" then return nil, "expected text" end
    return raw
  elseif t == "int" then
    local n = math.tointeger(tonumber(raw))
    if not n then return nil, "expected a whole number" end
    return n
  elseif t == "number" then
    local n = tonumber(raw)
    if not n then return nil, "expected a number" end
    return n
  elseif t == "bool" then
    if type(raw) == "boolean" then return raw end
    local s = tostring(raw):lower()
    if TRUE[s] then return true elseif FALSE[s] then return false end
    return nil, "expected true or false"
  elseif t == "url" then
    if type(raw) ~= "string" or not raw:match("^https?://[%w%.%-%[%]:]+") then
      return nil, "expected an http:// or https:// URL"
    end
    return (raw:gsub("/+$", ""))
  elseif t == "enum" then
    for _, v in ipairs(p.values) do if v == raw then return raw end end
    return nil, "expected one of " .. table.concat(p.values, ", ")
  elseif t == "duration" then
    return M.duration(raw)
  end
  return nil, "unknown type " .. tostring(t)
end

local KNOWN_FIELDS = { name = true, type = true, default = true, required = true, help = true, values = true,
  min = true, max = true, pattern = true, validate = true, env = true, example = true }
local FIELD_TYPES = { min = "number", max = "number", pattern = "string", validate = "function", env = "string",
  help = "string" }

---Check a runbook's parameter declarations (raises on a malformed runbook).
---@param list table
---@param where string  the runbook name, for the message
---@return table list, table by_name
function M.declare(list, where)
  local by_name = {}
  for i, p in ipairs(list or {}) do
    if type(p) ~= "table" or type(p.name) ~= "string" or not p.name:match("^[%a_][%w_]*$") then
      error(("%s: parameter #%d needs a name made of letters, digits and _"):format(where, i), 0)
    end
    if not M.types[p.type or "string"] then
      error(("%s: parameter %s has unknown type %s"):format(where, p.name, tostring(p.type)), 0)
    end
    p.type = p.type or "string"
    if p.type == "enum" then
      local ok = type(p.values) == "table" and #p.values > 0
      for _, v in ipairs(ok and p.values or {}) do ok = ok and type(v) == "string" end
      if not ok then
        error(("%s: enum parameter %s needs values = { \"a\", \"b\", ... } (strings)"):format(where, p.name), 0)
      end
    end
    -- a misspelt field (requried, defualt) would be ignored silently
    for field in pairs(p) do
      if not KNOWN_FIELDS[field] then
        error(("%s: parameter %s: unknown field '%s' (known: %s)"):format(where, p.name, tostring(field),
          "name, type, default, required, help, values, min, max, pattern, validate, env, example"), 0)
      end
    end
    -- a field of the wrong type would only fail (or be ignored) mid-run
    for field, want in pairs(FIELD_TYPES) do
      if p[field] ~= nil and type(p[field]) ~= want then
        error(("%s: parameter %s: %s must be a %s"):format(where, p.name, field, want), 0)
      end
    end
    if p.env ~= nil and not p.env:match("^[%a_][%w_]*$") then
      error(("%s: parameter %s: env must be an environment variable name"):format(where, p.name), 0)
    end
    if by_name[p.name] then error(("%s: parameter %s declared twice"):format(where, p.name), 0) end
    by_name[p.name] = p
  end
  return list or {}, by_name
end

---Resolve the parameter values for a run.
---@param list table  declared params (after declare)
---@param given table  name -> raw value (strings from -p, or typed from a journal)
---@param opts table|nil { getenv = fn, runbook = name }
---@return table|nil values, string|nil error
function M.resolve(list, given, opts)
  opts = opts or {}
  local getenv = opts.getenv or os.getenv
  local rbname = opts.runbook or "runbook"
  local known, values = {}, {}
  for _, p in ipairs(list) do known[p.name] = p end
  for k in pairs(given) do
    if not known[k] then
      local names = {}
      for _, p in ipairs(list) do names[#names + 1] = p.name end
      return nil, ("unknown parameter %s for %s (it takes: %s)"):format(
        shown(k), rbname, #names > 0 and table.concat(names, ", ") or "no parameters")
    end
  end
  for _, p in ipairs(list) do
    local raw = given[p.name]
    local from = "-p " .. p.name
    if raw == nil and p.env then
      raw = getenv(p.env)
      from = "$" .. p.env
      if raw == "" then raw = nil end
    end
    if raw == nil then
      if p.default ~= nil then
        raw = p.default
        from = "default"
      elseif p.required then
        local how = p.env and (" or set $" .. p.env) or ""
        return nil, ("missing parameter '%s' (%s): pass -p %s=...%s"):format(
          p.name, p.help or p.type, p.name, how)
      end
    end
    if raw ~= nil then
      local v, why = convert(p, raw)
      if v == nil then
        local value = p.type == "secret" and "" or (" " .. shown(raw))
        return nil, ("invalid parameter '%s'%s from %s: %s"):format(p.name, value, from, why)
      end
      if (p.min and type(v) == "number" and v < p.min) or (p.max and type(v) == "number" and v > p.max) then
        return nil, ("invalid parameter '%s' = %s: must be between %s and %s"):format(
          p.name, tostring(v), tostring(p.min or "-inf"), tostring(p.max or "inf"))
      end
      if p.pattern and type(v) == "string" and not v:match(p.pattern) then
        return nil, ("invalid parameter '%s': does not match %s"):format(p.name, p.pattern)
      end
      if p.validate then
        local ok, why2 = p.validate(v)
        if not ok then
          return nil, ("invalid parameter '%s': %s"):format(p.name, why2 or "rejected")
        end
      end
      values[p.name] = v
    end
  end
  return values
end

---Split "-p name=value" words into a table; refuses malformed words.
---@param words string[]
---@return table|nil, string|nil
function M.parse_words(words)
  local out = {}
  for i, w in ipairs(words or {}) do
    local k, v = w:match("^([%a_][%w_]*)=(.*)$")
    if not k then
      -- no part of the word is shown: a secret pasted without "name=" (a
      -- ghp_/sk_live_ token is all word characters) would land in the
      -- terminal and in CI logs; its place and length say which one it is
      return nil, ("bad parameter: -p number %d (%d bytes, not shown) is not name=value; write it as -p name=value")
        :format(i, #w)
    end
    out[k] = v
  end
  return out
end

---The params as the journal and reports may see them: secrets replaced.
function M.redacted(list, values)
  local out = {}
  for _, p in ipairs(list) do
    local v = values[p.name]
    if v ~= nil then
      out[p.name] = p.type == "secret" and "(secret)" or v
    end
  end
  return out
end

return M
