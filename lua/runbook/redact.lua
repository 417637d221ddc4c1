-- redact.lua — the one place secrets are masked.
--
-- A value becomes secret when it comes from a secret param, a key in an env
-- file or ctx:secret(). Everything the tool writes (terminal, journal, JSON,
-- JUnit, error messages, child output) goes through mask(), which replaces
-- the value and its encoded forms — hex, URL-encoded (reserved bytes or
-- encodeURIComponent's set, either case of hex), JSON-escaped, base64
-- (standard and URL alphabets, at every byte alignment, so base64 of
-- "prefix..secret..suffix" is caught too) — with a fingerprint
-- "[sha256:1a2b3c4d]" that lets two places be compared without showing
-- either.

local M = {}

local MIN_LEN = 6          -- shorter values would mask ordinary words
local forms = {}           -- array of { pat = string, rep = string }, longest first
local known = {}           -- value -> fingerprint

local core
local function crypto()
  core = core or require("runbook.crypto.core")
  return core
end

---Short fingerprint of a value: "sha256:" .. first 8 hex digits.
---@param value string
---@return string
function M.fingerprint(value)
  local c = crypto()
  return "sha256:" .. c.hex(c.sha256(value)):sub(1, 8)
end

-- keep: the bytes left as they are (RFC 3986 unreserved; JavaScript's
-- encodeURIComponent also keeps !'()*); lower: %2f instead of %2F
local function urlencode(s, plus, keep, lower)
  local fmt = lower and "%%%02x" or "%%%02X"
  return (s:gsub(keep, function(ch)
    if plus and ch == " " then return "+" end
    return fmt:format(ch:byte())
  end))
end

local function add_form(seen, pat, rep)
  if #pat >= MIN_LEN and not seen[pat] then
    seen[pat] = true
    forms[#forms + 1] = { pat = pat, rep = rep }
  end
end

---Register a secret value; returns it unchanged so calls can be inlined.
---@param value any
---@return any
function M.add(value)
  if type(value) ~= "string" or #value < MIN_LEN or known[value] then return value end
  local c = crypto()
  local fp = M.fingerprint(value)
  known[value] = fp
  local rep = "[" .. fp .. "]"
  local seen = {}
  for _, f in ipairs(forms) do seen[f.pat] = true end
  add_form(seen, value, rep)
  add_form(seen, c.hex(value), rep)
  add_form(seen, c.hex(value):upper(), rep)
  -- URL-encoded as servers and clients do it: every reserved byte, or
  -- encodeURIComponent's way; upper- or lower-case hex; space as + in forms
  for _, keep in ipairs({ "[^%w%-%._~]", "[^%w%-%._~!'()*]" }) do
    for _, lower in ipairs({ false, true }) do
      add_form(seen, urlencode(value, false, keep, lower), rep)
      add_form(seen, urlencode(value, true, keep, lower), rep)
    end
  end
  -- inside a JSON string (a value journaled or printed as JSON): cjson
  -- escapes / " \ and control bytes
  local json = require("cjson").encode(value)
  add_form(seen, json:sub(2, -2), rep)
  -- base64: inside a larger encoded blob the value starts at byte 0, 1 or
  -- 2 of a 3-byte group. At each alignment, the characters whose 6 bits all
  -- come from the value encode the same whatever surrounds it: that run is
  -- the form (7 or more characters even for a 6-byte value, where whole
  -- groups alone would leave too little at two of the alignments).
  for align = 0, 2 do
    local b = c.b64(("\0"):rep(align) .. value)
    local first = (8 * align + 5) // 6             -- first character inside the value
    local last = (8 * (align + #value) - 6) // 6    -- last one
    local run = b:sub(first + 1, last + 1)
    add_form(seen, run, rep)
    add_form(seen, (run:gsub("[+/]", { ["+"] = "-", ["/"] = "_" })), rep)
  end
  table.sort(forms, function(a, b) return #a.pat > #b.pat end)
  return value
end

---@return boolean
function M.any() return next(known) ~= nil end

local function replace_plain(s, pat, rep)
  local i = s:find(pat, 1, true)
  if not i then return s end
  local out, pos = {}, 1
  while i do
    out[#out + 1] = s:sub(pos, i - 1)
    out[#out + 1] = rep
    pos = i + #pat
    i = s:find(pat, pos, true)
  end
  out[#out + 1] = s:sub(pos)
  return table.concat(out)
end

---Mask every registered secret (in every form) in a string.
---@param s any
---@return any
function M.mask(s)
  if type(s) ~= "string" or forms[1] == nil then return s end
  for i = 1, #forms do
    local f = forms[i]
    s = replace_plain(s, f.pat, f.rep)
  end
  return s
end

---A deep copy of a value with every string (keys too) masked.
---@param v any
---@return any
function M.mask_deep(v, depth)
  if type(v) == "string" then return M.mask(v) end
  if type(v) ~= "table" or forms[1] == nil then return v end
  depth = (depth or 0) + 1
  if depth > 32 then return "<nested too deep>" end
  local out = {}
  for k, x in pairs(v) do out[M.mask(k)] = M.mask_deep(x, depth) end
  return setmetatable(out, getmetatable(v))
end

---Is this exact value a registered secret?
function M.is_secret(v) return known[v] ~= nil end

---Forget every secret (tests; a new run in the same process keeps them).
function M.clear()
  forms, known = {}, {}
end

return M
