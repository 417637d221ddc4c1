-- kvaudit.lua — static audit of Workers KV usage in a JS/TS tree (seed 004,
-- issue 6): every put/get/delete/list call on a KV namespace, with file,
-- line, operation, binding, whether a put sets a TTL and the key's literal
-- prefix; every lookalike left out (Cache API, Map/Set, Headers,
-- URLSearchParams, FormData, R2, Durable Objects...) with the reason; a
-- category per site (A control plane, B high frequency, C cache) with the
-- evidence; the top migration candidates with their suggested home (Durable
-- Object or D1, as the seed recommends); and a JSON baseline to fail CI on
-- regressions.
--
-- It has to keep up with `grep -rEn` on large trees, so the cheap test runs
-- first and the costly ones only where they can matter: one C pass
-- (runbook.text.find_all) finds the ".put(" / ".get(" / ".delete(" /
-- ".list(" calls with their line numbers and decides which files need
-- analysis. What is mechanical about a call is done in C too
-- (runbook.text's js_* functions: is it code, its arguments, the blocks
-- around it); what it means is decided here: what the receiver is, what a
-- key prefix says, which block makes a site hot. Identifier definitions are
-- looked up only for the receivers that need them, once per file.
--
-- Lua on runbook.fs and runbook.text; it reads files and never writes one
-- (the runbook writes the baseline, so modes apply).

local fs = require("runbook.fs")
local T = require("runbook.text")
local find_all, last_of, js_in_code, js_args = T.find_all, T.last_of, T.js_in_code, T.js_args
local js_open_before, js_block_head = T.js_open_before, T.js_block_head
local worker = require("runbook.worker")
local heap = require("runbook.heap")

local M = {}

M.OPS = { "put", "get", "delete", "list" }
M.CONFIG_FILE = "kvaudit.json"
-- directories never entered: dependencies, VCS, build output, tool caches
M.SKIP_DIRS = { "node_modules", ".git", ".hg", ".svn", "dist", "build", ".wrangler", ".next", ".nuxt",
  ".output", ".svelte-kit", ".turbo", ".cache", ".vercel", "coverage", "out", "vendor", "bower_components" }
M.EXTENSIONS = { js = true, mjs = true, cjs = true, jsx = true, ts = true, mts = true, cts = true, tsx = true }
M.WRANGLER_FILES = { ["wrangler.toml"] = true, ["wrangler.json"] = true, ["wrangler.jsonc"] = true }

local find, sub, byte, match, gmatch = string.find, string.sub, string.byte, string.match, string.gmatch

local B_DQ, B_SQ, B_BT, B_SL, B_ST = 34, 39, 96, 47, 42
local B_LB, B_DOT, B_LP, B_RP, B_COLON = 123, 46, 40, 41, 58

-- the bytes of a JS name: as a set for text.last_of and as a lookup table;
-- a call's receiver chain adds "." (and "?" "!" for optional chaining and
-- non-null assertions)
local IDSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$"
local CHAIN, CHAIN_QB = IDSET .. ".", IDSET .. ".?!"
local IDCHAR = {}
for i = 1, #IDSET do IDCHAR[byte(IDSET, i)] = true end

local function is_space(c) return c == 32 or c == 9 or c == 10 or c == 13 end

local function trim(h)
  local i, j = 1, #h
  while is_space(byte(h, i)) do i = i + 1 end
  while j >= i and is_space(byte(h, j)) do j = j - 1 end
  return sub(h, i, j)
end

-- ------------------------------------------------------------------ lexing

-- Lua patterns cost a hundred or more instructions per byte they look at;
-- a plain find is memchr. So every scan here is C or a plain find, and a
-- character class is only ever matched anchored, over a few bytes.

-- What a KV call's analysis needs of its arguments: the first (the key)
-- and the third (a put's options) without their blanks, and how many there
-- are. When the call does not close where it can be seen (broken code),
-- the arguments a comma ended still count, and there is at least one.
---@return string|nil a1, string|nil a3, integer nargs, integer|nil close  the ")" when the call closes
local function key_args(text, open)
  local r, close = js_args(text, open)
  local a1 = r[1] and r[1] <= r[2] and sub(text, r[1], r[2]) or nil
  local a3 = r[5] and r[5] <= r[6] and sub(text, r[5], r[6]) or nil
  local n = #r // 2
  return a1, a3, (close or n > 0) and n or 1, close
end

-- ------------------------------------------------------------------ words

-- "lastRun" / "last-run:" / "queue:lease:" → "_last_run_", "_queue_lease_"
local function words(s)
  s = s:gsub("(%l)(%u)", "%1_%2"):gsub("(%u)(%u%l)", "%1_%2"):gsub("(%a)(%d)", "%1_%2"):lower():gsub("[^%w]+", "_")
  return "_" .. s .. "_"
end

-- a receiver named like a KV namespace: kv, KV, sessionKv, KV_CACHE, kvStore
local function kv_named(name)
  return find(name, "[kK][vV]") ~= nil and find(words(name), "_kv_", 1, true) ~= nil
end

-- ------------------------------------------------------------------ globs

---A list option as given: "a, b,c" (a -p value) → { "a", "b", "c" }; a
---list is copied as it is; nil → {}.
---@param v string|string[]|nil
---@return string[]
function M.list_option(v)
  local out = {}
  if type(v) == "string" then
    for w in v:gmatch("[^,]+") do
      w = w:match("^%s*(.-)%s*$")
      if w ~= "" then out[#out + 1] = w end
    end
  else
    for _, w in ipairs(v or {}) do out[#out + 1] = w end
  end
  return out
end

local function glob_to_pattern(g)
  local p = g:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0")
  p = p:gsub("%*%*", "\1"):gsub("%*", "[^/]*"):gsub("%?", "[^/]"):gsub("\1", ".*")
  return "^" .. p .. "$"
end

-- every way of reading each "**/" as "any directories" or "none"
local function glob_variants(g, out)
  out = out or {}
  local a, b = g:find("**/", 1, true)
  if not a then
    out[#out + 1] = glob_to_pattern(g)
    return out
  end
  local head, tail = g:sub(1, a - 1), g:sub(b + 1)
  local rest = {}
  glob_variants(tail, rest)
  for _, r in ipairs(rest) do
    local t = r:sub(2) -- drop "^"
    out[#out + 1] = glob_to_pattern(head .. "**/"):sub(1, -2) .. t
    out[#out + 1] = glob_to_pattern(head):sub(1, -2) .. t
  end
  return out
end

---Compile comma-separated or listed globs into a matcher of relative paths.
---A glob without "/" matches any path component ("test", "*.spec.ts");
---with "/" it matches the whole path ("src/legacy/**", "**/gen/*.js").
---@param globs string|string[]|nil
---@return fun(path: string): string|nil  the glob that matched
function M.glob_matcher(globs)
  local list = M.list_option(globs)
  local compiled = {}
  for _, g in ipairs(list) do
    if g ~= "" then
      compiled[#compiled + 1] = { glob = g, component = not g:find("/", 1, true), pats = glob_variants(g) }
    end
  end
  return function(path)
    for _, c in ipairs(compiled) do
      if c.component then
        for part in path:gmatch("[^/]+") do
          if part:match(c.pats[1]) then return c.glob end
        end
      else
        for _, pat in ipairs(c.pats) do
          if path:match(pat) then return c.glob end
        end
      end
    end
    return nil
  end
end

-- ------------------------------------------------------------ bindings

-- wrangler config sections → what their bindings are
local SECTION_KIND = {
  kv_namespaces = "kv", r2_buckets = "r2", d1_databases = "d1", ["durable_objects.bindings"] = "do",
  ["queues.producers"] = "queue", services = "service", analytics_engine_datasets = "analytics",
  vectorize = "vectorize", hyperdrive = "hyperdrive", secrets_store_secrets = "secret",
}
local KIND_LABEL = {
  kv = "a KV namespace", r2 = "an R2 bucket", d1 = "a D1 database", ["do"] = "a Durable Object namespace",
  queue = "a Queue producer", service = "a service binding", analytics = "an Analytics Engine dataset",
  vectorize = "a Vectorize index", hyperdrive = "a Hyperdrive config", secret = "a Secrets Store secret",
  other = "not a KV namespace",
}
M.KIND_LABEL = KIND_LABEL

local function section_kind(header)
  -- [[env.production.kv_namespaces]] counts like [[kv_namespaces]]
  for suffix, kind in pairs(SECTION_KIND) do
    if header == suffix or header:sub(-#suffix - 1) == "." .. suffix then return kind end
  end
end

local function parse_wrangler_toml(text, add)
  local kind
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local header = line:match("^%s*%[%[?%s*([%w_%.%-]+)%s*%]")
    if header then
      kind = section_kind(header)
    else
      local key = line:match("^%s*([%w_]+)%s*=")
      if kind and (key == "binding" or (kind == "do" and key == "name")) then
        local v = line:match('=%s*"([^"]+)"') or line:match("=%s*'([^']+)'")
        if v then add(v, kind) end
      end
    end
  end
  -- inline arrays: kv_namespaces = [ { binding = "KV", id = "..." } ]
  for key, kind2 in pairs(SECTION_KIND) do
    local last = key:match("([%w_]+)$")
    for arr in text:gmatch("%f[%w_]" .. last .. "%s*=%s*(%b[])") do
      local field = kind2 == "do" and "name" or "binding"
      for v in arr:gmatch("%f[%w_]" .. field .. "%s*=%s*[\"']([^\"']+)[\"']") do add(v, kind2) end
    end
  end
end

-- JSON with comments and trailing commas (wrangler.jsonc) → plain JSON
local function strip_jsonc(text)
  local out, p = {}, 1
  while true do
    local q = find(text, '["/]', p)
    if not q then break end
    if byte(text, q) == B_DQ then
      local e = T.js_quote_end(text, q)
      out[#out + 1] = sub(text, p, e)
      p = e + 1
    elseif byte(text, q + 1) == B_SL then
      out[#out + 1] = sub(text, p, q - 1)
      p = find(text, "\n", q, true) or #text + 1
    elseif byte(text, q + 1) == B_ST then
      out[#out + 1] = sub(text, p, q - 1)
      local _, e = find(text, "*/", q + 2, true)
      p = (e or #text) + 1
    else
      out[#out + 1] = sub(text, p, q)
      p = q + 1
    end
  end
  out[#out + 1] = sub(text, p)
  return (table.concat(out):gsub(",(%s*[}%]])", "%1"))
end

local function parse_wrangler_json(text, add)
  local doc = require("cjson.safe").decode(strip_jsonc(text))
  if type(doc) ~= "table" then return false end
  local function walk(t, path)
    for k, v in pairs(t) do
      if type(k) == "string" and type(v) == "table" then
        local kind = section_kind(path == "" and k or (path .. "." .. k))
          or section_kind(k) or (k == "bindings" and path:match("durable_objects$") and "do")
        if kind and v[1] ~= nil then
          for _, b in ipairs(v) do
            local name = type(b) == "table" and (kind == "do" and b.name or b.binding)
            if type(name) == "string" then add(name, kind) end
          end
        else
          walk(v, path == "" and k or (path .. "." .. k))
        end
      end
    end
  end
  walk(doc, "")
  return true
end

---Binding names and kinds declared in a wrangler.toml / wrangler.json(c).
---@param text string
---@param name string  the file name (decides TOML or JSON)
---@return table|nil bindings { NAME = kind }, string? err
function M.wrangler_bindings(text, name)
  local out = {}
  local function add(v, kind) out[v] = kind end
  if name:match("%.toml$") then
    parse_wrangler_toml(text, add)
  elseif not parse_wrangler_json(text, add) then
    return nil, name .. ": not valid JSON"
  end
  return out
end

-- ------------------------------------------------------------ receivers

local LOOKALIKE_PROP = {
  headers = "Headers.get: an HTTP header, not KV",
  searchParams = "URLSearchParams.get: a query parameter, not KV",
  params = "route/query parameters, not KV",
  cookies = "a cookie store, not KV",
  storage = "Durable Object storage (state.storage), not KV",
  formData = "FormData.get: a form field, not KV",
  localStorage = "Web Storage, not KV",
  sessionStorage = "Web Storage, not KV",
}

local NEW_REASON = {
  Map = "a Map (new Map()), not KV", WeakMap = "a WeakMap, not KV", Set = "a Set (new Set()), not KV",
  WeakSet = "a WeakSet, not KV", Headers = "Headers (new Headers()), not KV",
  URLSearchParams = "URLSearchParams, not KV", FormData = "FormData, not KV", URL = "a URL object, not KV",
}

local TYPE_REASON = {
  Map = "typed Map, not KV", WeakMap = "typed WeakMap, not KV", Set = "typed Set, not KV",
  Headers = "typed Headers, not KV", URLSearchParams = "typed URLSearchParams, not KV",
  FormData = "typed FormData, not KV", Cache = "Cache API (typed Cache), not KV",
  R2Bucket = "an R2 bucket (typed R2Bucket), not KV",
  DurableObjectNamespace = "a Durable Object namespace (typed DurableObjectNamespace), not KV",
  DurableObjectStorage = "Durable Object storage (typed DurableObjectStorage), not KV",
  D1Database = "a D1 database (typed D1Database), not KV",
}

local function nonkv(reason) return { kv = false, reason = reason } end

local resolve

-- What the expression starting at r evaluates to, when it says: a Cache API
-- object, a new Map/Set/..., an alias of env.BINDING or of another receiver.
local function classify_rhs(F, r, depth)
  local text = F.text
  r = match(text, "^await%s+()", r) or r
  if find(text, "^caches%.default%f[^%w_$]", r) then return nonkv("Cache API (caches.default), not KV") end
  if find(text, "^caches%.open%s*%(", r) then return nonkv("Cache API (caches.open()), not KV") end
  local cls = match(text, "^new%s+([%w_$]+)", r)
  if cls then return nonkv(NEW_REASON[cls] or ("an instance of " .. cls .. ", not a KV namespace")) end
  local path, name, after = match(text, "^([%w_$%.]-)%f[%w_$]env%.([%w_$]+)()", r)
  if name and (path == "" or path:sub(-1) == ".") then
    local nxt = byte(text, after)
    if nxt ~= B_DOT and nxt ~= B_LP and nxt ~= 91 then
      return { kv = true, binding = name, via = "env", how = "alias of env." .. name }
    end
  end
  local other = match(text, "^([%w_$][%w_$%.]*)%s*[;,%)\n}]", r)
  if other and depth < 4 then
    local res = resolve(F, other, depth + 1)
    if res and (res.kv or res.decisive) then return res end
  end
  if find(text, "^[%w_$%.]*%.searchParams%f[^%w_$]", r) then return nonkv(LOOKALIKE_PROP.searchParams) end
  if find(text, "^[%w_$%.]*%.formData%s*%(", r) then return nonkv(LOOKALIKE_PROP.formData) end
  if find(text, "^[%w_$%.]*%.headers%f[^%w_$]", r) then return nonkv(LOOKALIKE_PROP.headers) end
  return nil
end

-- A definition of X at position p (X ends before `after`): a type
-- annotation, an assignment, an object property or a destructuring of env.
local function definition_at(F, p, after, X, depth)
  local text = F.text
  local t = match(text, "^%s*%??%s*:%s*([%w_$]+)", after)
  if t then
    if t == "KVNamespace" then
      return { kv = true, binding = X, via = "typed", how = X .. " is typed KVNamespace" }
    end
    if TYPE_REASON[t] then
      local res = nonkv(TYPE_REASON[t])
      res.decisive = true
      return res
    end
    -- `{ kv: env.KV }`: an object property holding a binding
    local v = match(text, "^%s*:%s*()", after)
    local res = classify_rhs(F, v, depth)
    if res then return res end
    local r = match(text, "^%s*%??%s*:[^=;\n{(]-=()[^=>]", after)
    if r then
      return classify_rhs(F, match(text, "^%s*()", r), depth)
    end
    return nil
  end
  local r = match(text, "^%s*=()[^=>]", after)
  if r then
    local res = classify_rhs(F, match(text, "^%s*()", r), depth)
    if res then res.decisive = true end
    return res
  end
  -- destructuring: const { KV } = env / const { KV: store } = c.env
  local nb = match(text, "^%s*([,}=])", after)
  if nb then
    local close = find(text, "}", after, true)
    if close and close - after < 400 and find(text, "^}%s*=%s*[%w_$%.]-%f[%w_$]env%f[^%w_$%.]", close) then
      -- `KEY: X` before X: the binding is KEY
      local j = p - 1
      while is_space(byte(text, j)) do j = j - 1 end
      local key
      if byte(text, j) == B_COLON then
        j = j - 1
        while is_space(byte(text, j)) do j = j - 1 end
        local k = (last_of(text, IDSET, j, 1, true) or 0) + 1
        if k <= j then key = sub(text, k, j) end
      end
      local binding = key or X
      return { kv = true, binding = binding, via = "env", how = "destructured from env (" .. binding .. ")" }
    end
  end
  return nil
end

-- The definition of identifier X in this file (memoised), or false.
local function ident_def(F, X, depth)
  local memo = F.defs[X]
  if memo ~= nil then return memo end
  F.defs[X] = false -- a definition that refers back to itself
  local text = F.text
  local res = false
  local p = find(text, X, 1, true)
  while p do
    local after = p + #X
    local before = byte(text, p - 1)
    if not IDCHAR[byte(text, after)] and not (before and IDCHAR[before]) then
      local d = definition_at(F, p, after, X, depth)
      -- `kv: KVNamespace` says what it is, `this.kv = env.LOCKS` says which
      -- binding: keep looking for the latter
      if d and d.via == "typed" then
        res = res or d
      elseif d then
        res = d
        break
      end
    end
    p = find(text, X, after, true)
  end
  F.defs[X] = res
  return res
end


-- What receiver R is: { kv = true, binding, via, how } or { kv = false, reason }.
resolve = function(F, R, depth)
  depth = depth or 0
  local A = F.A
  local memo = F.memo[R] or A.global[R]
  if memo then return memo end
  local res
  local expr = byte(R, 1) == B_DOT
  local bare = expr and R:sub(2) or R
  local L = match(bare, "([%w_$]+)$")
  -- answers that do not depend on the file are kept for every file
  local global = true
  if not L then
    res = nonkv("the receiver is an expression, not a binding")
  elseif A.not_kv[bare] or A.not_kv[L] then
    res = nonkv(A.not_kv[bare] or A.not_kv[L])
  elseif LOOKALIKE_PROP[L] and bare ~= L then
    res = nonkv(LOOKALIKE_PROP[L])
  elseif bare == "caches.default" then
    res = nonkv("Cache API (caches.default), not KV")
  else
    local envname = match(bare, "^env%.([%w_$]+)$") or match(bare, "%.env%.([%w_$]+)$")
    if envname then
      res = { kv = true, binding = envname, via = "env", how = "env." .. envname }
    else
      global = false
      local first = match(bare, "^[%w_$]+")
      local d
      if not expr then
        if first == bare then
          d = ident_def(F, bare, depth)
        else
          d = ident_def(F, L, depth)
        end
      end
      if d then
        res = d
      elseif LOOKALIKE_PROP[L] then
        res = nonkv(LOOKALIKE_PROP[L])
      elseif (first == bare and A.known_kv[bare]) or (bare == "globalThis." .. L and A.known_kv[L]) then
        res = { kv = true, binding = L, via = "global", how = "global binding " .. L .. " (service-worker syntax)" }
      elseif kv_named(L) then
        res = { kv = true, binding = L, via = "named", how = L .. " is named like a KV namespace" }
      elseif F.types and F.types[L] == "KVNamespace" then -- (interface Env { CACHE: KVNamespace })
        res = { kv = true, binding = L, via = "typed", how = L .. " is typed KVNamespace" }
      else
        res = nonkv(("receiver %s is not env.BINDING, an alias of one, a declared binding, or named/typed like a KV namespace")
          :format(R))
        res.unknown = true
      end
    end
  end
  if global then A.global[R] = res else F.memo[R] = res end
  return res
end

-- The receiver of the call whose "." is at dot: "env.KV", "this.kv", "kv"
-- (optional chaining and non-null assertions dropped), or nil.
local function receiver_at(F, dot)
  -- the run of name bytes and dots ending before the dot, within its 64
  -- bytes
  local text, lo = F.text, dot > 64 and dot - 64 or 1
  local b = (last_of(text, CHAIN, dot - 1, lo, true) or lo - 1) + 1
  local c = b > lo and byte(text, b - 1)
  if c == 63 or c == 33 then -- "?." or "!" in the chain
    b = (last_of(text, CHAIN_QB, dot - 1, lo, true) or lo - 1) + 1
    return (sub(text, b, dot - 1):gsub("[?!]", ""))
  end
  if b == dot then return nil end
  return sub(text, b, dot - 1)
end

-- ------------------------------------------------------------ keys

local literal_head

-- The literal value (or head) of the last definition of NAME before pos.
-- Every assignment to NAME in the file (not to a property NAME): sorted
-- { name position, value position } pairs, memoised per file.
local function assignments(F, name)
  local d = F.assigns[name]
  if d then return d end
  d = {}
  local text = F.text
  local p = find(text, name, 1, true)
  while p do
    local after = p + #name
    local before = byte(text, p - 1)
    if not IDCHAR[byte(text, after)] and not (before and (IDCHAR[before] or before == B_DOT)) then
      local r = match(text, "^%s*=%s*()[^=>]", after) or match(text, "^%s*:%s*[%w_$<>]+%s*=%s*()", after)
      if r then d[#d + 1] = { p, r } end
    end
    p = find(text, name, after, true)
  end
  F.assigns[name] = d
  return d
end

-- The value position of the last assignment to NAME before pos (else the
-- first one after it).
local function value_pos(F, name, pos)
  local d = assignments(F, name)
  local best
  for i = 1, #d do
    if d[i][1] < pos then best = d[i][2] else break end
  end
  return best or (d[1] and d[1][2])
end

-- The literal value (or head) of the value assigned to NAME before pos.
local function const_value(F, name, pos, depth)
  if depth > 2 then return nil end
  local r = value_pos(F, name, pos)
  if not r then return nil end
  local text = F.text
  local e = find(text, ";", r, true) or #text + 1
  local nl = find(text, "\n", r, true)
  if nl and nl < e then e = nl end
  return literal_head(F, trim(sub(text, r, e - 1)), r, depth + 1)
end

-- key (when the whole expression is literal) and prefix (its literal head)
literal_head = function(F, expr, pos, depth)
  if not expr or expr == "" then return nil, nil end
  local q = byte(expr, 1)
  if q == B_DQ or q == B_SQ then
    local body, e = match(expr, q == B_DQ and '^"([^"\\\n]*)"()' or "^'([^'\\\n]*)'()")
    if not body then return nil, nil end
    if e > #expr then return body, body end
    if find(expr, "^%s*%+", e) then return nil, body end
    return nil, nil
  elseif q == B_BT then
    local head, e = match(expr, "^`([^`$\\]*)()")
    if not head then return nil, nil end
    local c = byte(expr, e)
    if c == B_BT then
      if e == #expr then return head, head end
      if find(expr, "^%s*%+", e + 1) then return nil, head end
      return nil, nil
    end
    if c == 36 then return nil, head ~= "" and head or nil end
    return nil, nil
  end
  local name, e = match(expr, "^([%a_$][%w_$]*)()")
  if name and (e > #expr or find(expr, "^%s*%+", e)) then
    local key, prefix = const_value(F, name, pos, depth or 0)
    if e > #expr then return key, prefix end
    return nil, prefix
  end
  return nil, nil
end

-- "yes" when a put's options set expirationTtl/expiration, "no" when they
-- do not (or there are none), "unknown" when they are not written out here
local function ttl_of(F, opts, pos)
  if not opts then return "no" end
  local text = opts
  if byte(text, 1) ~= B_LB then
    local name = match(text, "^([%a_$][%w_$]*)$")
    if not name then return "unknown" end
    local src = F.text
    local found = value_pos(F, name, pos)
    if not found or byte(src, found) ~= B_LB then return "unknown" end
    text = sub(src, found, T.js_expr_end(src, found + 1) - 1)
  end
  -- expirationTtl or expiration as a property name (not part of a longer word)
  local p = find(text, "expiration", 1, true)
  while p do
    local after = byte(text, p + 10)
    if not IDCHAR[byte(text, p - 1) or 0] and (not IDCHAR[after or 0] or sub(text, p + 10, p + 12) == "Ttl"
      and not IDCHAR[byte(text, p + 13) or 0]) then
      return "yes"
    end
    p = find(text, "expiration", p + 10, true)
  end
  if find(text, "...", 1, true) then return "unknown" end
  return "no"
end

-- list({ prefix: "x" }) → "x"; list({ prefix }) → the value of prefix
local function list_prefix(F, opts, pos)
  if not opts or byte(opts, 1) ~= B_LB then return nil end
  local p = find(opts, "prefix", 1, true)
  while p do
    if not IDCHAR[byte(opts, p - 1) or 0] and not IDCHAR[byte(opts, p + 6) or 0] then
      local v = match(opts, "^%s*:%s*()", p + 6)
      if v then
        local e = #opts + 1
        for _, c in ipairs({ ",", "}", "\n" }) do
          local q = find(opts, c, v, true)
          if q and q < e then e = q end
        end
        local _, prefix = literal_head(F, trim(sub(opts, v, e - 1)), pos, 0)
        return prefix
      end
      if find(opts, "^%s*[,}]", p + 6) then
        local _, prefix = const_value(F, "prefix", pos, 0)
        return prefix
      end
    end
    p = find(opts, "prefix", p + 6, true)
  end
  return nil
end

-- ------------------------------------------------------------ context

local LOOP_CALLS = { forEach = true, map = true, flatMap = true, reduce = true, filter = true, some = true,
  every = true, find = true }
local HANDLERS = {
  fetch = "in the fetch handler (runs on every request)",
  scheduled = "in the scheduled handler (runs on every cron tick)",
  queue = "in the queue consumer (runs on every batch)",
  tail = "in the tail handler (runs on every event)",
}
local NOT_NAMES = { ["if"] = true, ["for"] = true, ["while"] = true, ["switch"] = true, ["catch"] = true,
  ["with"] = true, ["function"] = true, ["return"] = true, ["else"] = true, ["do"] = true, ["try"] = true }

-- The identifier that ends just before position i of h, or nil.
local function word_before(h, i)
  local j = i - 1
  while is_space(byte(h, j)) do j = j - 1 end
  local k = j
  while k >= 1 and IDCHAR[byte(h, k)] do k = k - 1 end
  if k == j then return nil end
  return sub(h, k + 1, j)
end

-- What the block whose "{" follows head h (trimmed) is: "loop", "function"
-- (and its name), "route", "arrow", "top", or nil — by plain finds and
-- anchored matches only.
local function head_kind(h)
  local n = #h
  if n == 0 then return nil end
  if (sub(h, 1, 3) == "for" and not IDCHAR[byte(h, 4) or 0]) or (sub(h, 1, 5) == "while" and not IDCHAR[byte(h, 6) or 0])
    or h == "do" or (sub(h, -2) == "do" and is_space(byte(h, n - 2))) then
    local shown = sub(h, 1, 60)
    if find(shown, "\n", 1, true) then shown = shown:gsub("%s+", " ") end
    return "loop", shown
  end
  local paren, arrow = find(h, "(", 1, true), find(h, "=>", 1, true)
  if not paren and not arrow then
    if sub(h, 1, 6) == "class " or sub(h, 1, 7) == "export " then return "top" end
    return nil
  end
  if paren then
    local d = find(h, ".", 1, true)
    while d do
      local call = match(h, "^%.(%a+)%s*%(", d)
      if call and LOOP_CALLS[call] then return "loop", "." .. call .. "(...)" end
      d = find(h, ".", d + 1, true)
    end
  end
  local ael = find(h, "addEventListener", 1, true)
  if ael then
    local ev = match(h, "^addEventListener%s*%(%s*[\"'](%w+)", ael)
    if ev then return "function", ev end
  end
  local route = match(h, "^[%w_$]+%.(%l+)%s*%(%s*[\"'`]/")
  if route then return "route", route end
  local fpos = find(h, "function", 1, true)
  if fpos then
    local name = match(h, "^function%s*%*?%s*([%w_$]*)%s*%(", fpos)
    if name then return "function", name end
  end
  if arrow and sub(h, -2) == "=>" then
    -- NAME = async (params): T =>   /   NAME: (params) =>
    local first = paren and paren < arrow and paren or arrow
    local eq, colon = find(h, "=", 1, true), find(h, ":", 1, true)
    local cut = (eq and eq < first and eq) or (colon and colon < first and colon)
    local name = cut and word_before(h, cut)
    if name then return "function", name end
    return "arrow"
  end
  if paren then
    -- a method: NAME(params) or NAME(params): ReturnType
    local name = word_before(h, paren)
    if name and not NOT_NAMES[name] and (byte(h, n) == B_RP or find(h, "):", paren, true) or find(h, ") :", paren, true)) then
      return "function", name
    end
  end
  return nil
end

local function hot_name(name)
  if HANDLERS[name] then return HANDLERS[name] end
  if sub(name, 1, 9) == "onRequest" then return "in a Pages Function (runs on every request)" end
  local low = name:lower()
  if find(low, "poll", 1, true) or low == "tick" or sub(low, -4) == "tick" then
    return "in a poller (" .. name .. ")"
  end
  return nil
end

-- Walk outwards from pos through the enclosing blocks (back through the
-- braces) up to the enclosing named function: is the site in a loop or a
-- handler that runs all the time? → hot (why) or nil, function name.
local function context_at(F, pos)
  local text = F.text
  local p, budget = pos - 1, 400
  local hot, fn
  while budget > 0 do
    local q, used = js_open_before(text, p, budget)
    if not q then break end
    budget, p = budget - used, q - 1
    local memo = F.heads[q]
    if not memo then
      local kind, what = head_kind(sub(text, js_block_head(text, q - 1)))
      local why
      if kind == "loop" then
        why = "in a loop (" .. what .. ")"
      elseif kind == "route" then
        why = "in a route handler (." .. what .. "(...), runs on every request)"
      elseif kind == "function" and what ~= "" then
        why = hot_name(what)
      end
      memo = { kind or false, what, why }
      F.heads[q] = memo
    end
    local kind, what, why = memo[1], memo[2], memo[3]
    hot = hot or why
    -- a named function bounds the walk
    if (kind == "function" and what ~= "") or kind == "top" then
      if kind == "function" then fn = what end
      break
    end
  end
  return hot, fn
end

-- ------------------------------------------------------------ analysis

-- binding types whose declarations (interface Env { X: R2Bucket }) decide
-- what env.X is, in every file
local BINDING_TYPES = { "KVNamespace", "R2Bucket", "DurableObjectNamespace", "D1Database" }

-- (getWithMetadata before get: the first needle that matches is the one found)
local NEEDLES = { ".put", ".getWithMetadata", ".get", ".delete", ".list" }
local NEEDLE_OPS = { "put", "get", "get", "delete", "list" }
-- (what runbook.text.find_all is given; bench/kvaudit_phases.lua times that pass alone)
M.NEEDLES = NEEDLES

local File = {}
File.__index = File

---Options shared by every file a thread of a scan analyses (see M.scan):
---known KV names and receivers that are not KV.
---@param o table|nil { bindings = {...}, not_kv = { RECEIVER = reason } | {...} }
function M.analyzer(o)
  o = o or {}
  local A = { known_kv = {}, not_kv = {}, global = {} }
  for _, b in ipairs(o.bindings or {}) do A.known_kv[b] = true end
  for k, v in pairs(o.not_kv or {}) do
    if type(k) == "number" then
      A.not_kv[v] = ("%s is not a KV namespace (excluded by configuration)"):format(v)
    else
      A.not_kv[k] = v
    end
  end
  return A
end

-- the reason without the receiver's name, to count exclusions by kind
local function reason_group(reason)
  return (reason:gsub("^receiver %S+ is not", "receiver is not"))
end
M.reason_group = reason_group

local COMMENT_REASON = "in a comment or a string, not code"
local EXPR_REASON = "the receiver is an expression, not a binding"

---Analyse one file's text: KV sites and excluded lookalikes. Env bindings
---are not yet checked against wrangler configs and types (scan's second
---pass does that). Every excluded record carries its line; the scan keeps
---only the first few of each reason (M.scan's examples) when it merges.
---@param text string
---@param path string  relative path, for the records
---@param A table|nil  from M.analyzer
---@return table[] sites, table[] excluded, table facts { do_bindings = {...}, types = {...} }
function M.analyze(text, path, A)
  A = A or M.analyzer()
  -- every ".put("/".get("/".delete("/".list(" call with its line and its
  -- paren, in one C pass
  local cands, which, lines, _, parens = find_all(text, NEEDLES, "(")
  local n = #cands
  local sites, excluded = {}, {}
  local facts = {}
  -- what the file says about bindings, for the second pass
  -- (searched by their rare capital letters: a plain find stops at every
  -- occurrence of the first byte)
  if find(text, "From", 1, true) or find(text, "UniqueId", 1, true) or find(text, "ByName", 1, true) then
    facts.do_bindings = {}
    for _, call in ipairs({ "idFromName", "idFromString", "newUniqueId", "getByName" }) do
      for name in gmatch(text, "([%w_$]+)%." .. call .. "%f[^%w_$]") do facts.do_bindings[name] = true end
    end
  end
  if find(text, "Namespace", 1, true) or find(text, "R2Bucket", 1, true) or find(text, "D1Database", 1, true) then
    for _, tname in ipairs(BINDING_TYPES) do
      if find(text, tname, 1, true) then
        facts.types = facts.types or {}
        for name in gmatch(text, "([%w_$]+)%s*%??%s*:%s*" .. tname .. "%f[^%w_$]") do facts.types[name] = tname end
      end
    end
  end
  if n == 0 then return sites, excluded, facts end

  -- pass 1: what each receiver is (memoised per receiver: cheap)
  local F = setmetatable({ text = text, memo = {}, defs = {}, assigns = {}, heads = {}, A = A, types = facts.types },
    File)
  local res, recv, kvpos = {}, {}, {}
  for i = 1, n do
    local dot = cands[i]
    local R = receiver_at(F, dot)
    recv[i] = R
    local r = R and resolve(F, R) or nonkv(EXPR_REASON)
    res[i] = r
    if r.kv then kvpos[#kvpos + 1] = dot end
  end

  -- pass 2: is each KV-looking call code? One C pass lexes the file up to
  -- the last one (runbook.text.js_in_code)
  local code = #kvpos > 0 and js_in_code(text, kvpos)
  local j = 0
  for i = 1, n do
    local dot = cands[i]
    local op = NEEDLE_OPS[which[i]]
    local r, R = res[i], recv[i]
    local reason
    if r.kv then
      j = j + 1
      if not code[j] then reason = COMMENT_REASON end
    else
      reason = r.reason
      if r.unknown and op == "put" and find(words(R), "_cache_", 1, true) then
        local a1, _, nargs, close = key_args(text, parens[i])
        a1 = a1 or ""
        if close and nargs == 2 and (find(a1, "^[%w_$%.]*[rR]eq") or find(a1, "^new%s+Request")) then
          reason = "Cache API: cache.put(request, response), not KV"
        end
      end
    end
    if reason then
      local group = r.unknown and reason_group(reason) or reason
      excluded[#excluded + 1] = { file = path, line = lines[i], op = op, receiver = R or "", reason = reason,
        group = group }
    else
      local line = lines[i]
      local a1, a3, nargs = key_args(text, parens[i])
      if op == "get" and nargs == 0 then
        reason = "get() with no key is not a KV read (a Secrets Store or other binding)"
        excluded[#excluded + 1] = { file = path, line = line, op = op, receiver = R, reason = reason, group = reason }
      else
        -- every field a site gets later (here, in scan and in classify) is
        -- named, nil, so the table is sized once instead of growing twice
        local site = { file = path, line = line, op = op, binding = r.binding, receiver = R, via = r.via, how = r.how,
          key_expr = a1 and a1:gsub("%s+", " ") or "", key = nil, prefix = nil, ttl = nil, hot = nil, fn = nil,
          id = nil, category = nil, category_reason = nil, what = nil, home = nil, home_reason = nil }
        if op == "list" then
          site.prefix = list_prefix(F, a1, dot)
        else
          site.key, site.prefix = literal_head(F, a1, dot, 0)
        end
        if op == "put" then site.ttl = ttl_of(F, a3, dot) end
        if op == "put" or op == "list" then site.hot, site.fn = context_at(F, dot) end
        sites[#sites + 1] = site
      end
    end
  end
  return sites, excluded, facts
end

-- ------------------------------------------------------------ config

---Read ROOT/kvaudit.json when present: { bindings = [...], not_kv = [...],
---exclude = [globs], skip_dirs = [...], exclusions = [{ receiver, reason }] }.
---@param root string
---@return table|nil config ({} when there is no file), string? err
function M.load_config(root)
  local path = fs.join(root, M.CONFIG_FILE)
  local text, err, code = fs.read(path)
  if not text then
    if code == "ENOENT" then return {} end
    return nil, err
  end
  local cfg, jerr = require("cjson.safe").decode(text)
  if type(cfg) ~= "table" then
    return nil, ("%s: not valid JSON (%s); see docs/KVAUDIT.md for its fields"):format(path, tostring(jerr))
  end
  for _, k in ipairs({ "bindings", "not_kv", "exclude", "skip_dirs", "exclusions" }) do
    if cfg[k] ~= nil and type(cfg[k]) ~= "table" then
      return nil, ("%s: %s must be a list"):format(path, k)
    end
  end
  for i, x in ipairs(cfg.exclusions or {}) do
    if type(x) ~= "table" or type(x.receiver) ~= "string" or type(x.reason) ~= "string" then
      return nil, ("%s: exclusions[%d] needs a receiver and a reason (strings)"):format(path, i)
    end
  end
  cfg.path = path
  return cfg
end

local function append(dst, src)
  for _, v in ipairs(src or {}) do dst[#dst + 1] = v end
  return dst
end

-- ------------------------------------------------------------ scan

-- Is binding NAME (reached through env, an alias or a global) a KV
-- namespace? true and what says so, or false and why not.
local function binding_verdict(name, kinds)
  local k = kinds[name]
  if k then
    if k.kind == "kv" then return true, "a KV namespace in " .. k.source end
    return false, ("%s is %s (%s), not KV"):format(name, KIND_LABEL[k.kind] or k.kind, k.source)
  end
  local up = name:upper()
  if find(up, "BUCKET", 1, true) or find(up, "%f[%w]R2%f[^%w]") then
    return false, name .. " is named like an R2 bucket (declare it in wrangler.toml or kvaudit.json to be sure)"
  end
  if find(up, "DURABLE", 1, true) or find(words(name), "_do_", 1, true) then
    return false, name .. " is named like a Durable Object namespace (declare it in wrangler.toml or kvaudit.json)"
  end
  return true, "not declared in a wrangler config; taken as KV"
end

local function decide_binding(site, kinds, memo)
  local name = site.binding
  if site.via == "named" or site.via == "typed" then
    local k = kinds[name]
    if k and k.kind ~= "kv" then return false, ("%s is %s (%s)"):format(name, KIND_LABEL[k.kind] or k.kind, k.source) end
    return true
  end
  local v = memo[name]
  if not v then
    local ok, why = binding_verdict(name, kinds)
    v = { ok, why, {} } -- [3]: each how with the verdict appended, made once
    memo[name] = v
  end
  if v[1] then
    local how = site.how
    local said = v[3][how]
    if not said then
      said = how .. " (" .. v[2] .. ")"
      v[3][how] = said
    end
    site.how = said
  end
  return v[1], v[2]
end

-- Identities for the baseline: file, op, binding, key expression and the
-- occurrence among identical ones — not the line, which moves with edits.
-- The file is part of it, so a file's sites are numbered on their own (in
-- the thread that analysed it).
local function file_ids(sites)
  local seen = {}
  for _, s in ipairs(sites) do
    local base = s.file .. "|" .. s.op .. "|" .. s.binding .. "|" .. s.key_expr
    local k = (seen[base] or 0) + 1
    seen[base] = k
    s.id = base .. "#" .. k
  end
end

---Analyse files of rels (relative to root): what each thread of a scan
---does (see M.scan). Threads share `claim`, a worker counter: each takes
---the next file from it, so a faster thread takes more. Returns, by index
---in rels, what each file gave — only files with something to say, so a
---worker's result is cheap to copy back (the scan applies the examples
---quota when it puts the files back in order). Runs in worker threads
---too: plain data in and out.
---@param root string
---@param rels string[]
---@param o table { bindings = {...}, not_kv = {...} } for M.analyzer
---@param claim userdata  runbook.worker counter
---@param progress function|nil  fn(files taken by every thread so far), now and then
---@return table { files = { [i] = { sites, excluded, facts|false } | { error = msg } },
---  analysed = files this thread took, bytes = their size }
function M.analyze_files(root, rels, o, claim, progress)
  local A = M.analyzer(o)
  local files = {}
  local total = #rels
  local mine, bytes, backed = 0, 0, 0
  local i = claim:next()
  while i <= total do
    -- keep the heap's next pages backed: on the VMs this is measured on,
    -- a first-touched page costs as much as analysing 300 lines
    local used = collectgarbage("count") * 1024
    if used + M.HEAP_AHEAD / 2 > backed then
      heap.reserve(M.HEAP_AHEAD)
      backed = used + M.HEAP_AHEAD
    end
    local rel = rels[i]
    local text, err = fs.read(root == "." and rel or (root .. "/" .. rel))
    if not text then
      files[i] = { error = err }
    else
      bytes = bytes + #text
      local s, x, facts = M.analyze(text, rel, A)
      if s[1] then file_ids(s) end
      if s[1] or x[1] or next(facts) then files[i] = { s, x, next(facts) and facts or false } end
    end
    mine = mine + 1
    if progress and mine % 100 == 0 then progress(math.min(claim:value(), total)) end
    i = claim:next()
  end
  return { files = files, analysed = mine, bytes = bytes }
end

-- How far ahead of its heap each thread of a scan has memory backed
-- (runbook.heap.reserve). 512 KiB: on the Intel VM of 2026-12-03 it was
-- ~1 ms faster a scan than 2 MiB in five alternating rounds of 30 (pages
-- backed and never used cost too); 256 KiB made no further difference.
M.HEAP_AHEAD = 1 << 19

-- Below this many files, a worker thread costs more than it saves.
M.PARALLEL_MIN_FILES = 64

-- Every source analysed (what analyze_files gives, by index in sources,
-- from every thread), how many threads took files, and the bytes read: by
-- this thread and opts.workers worker threads (default: one per other CPU,
-- at most 7), all taking files from one counter.
local function analyze_all(root, sources, o, opts)
  local total = #sources
  local claim = worker.counter()
  local n = opts.workers or math.min(worker.cpus() - 1, 7)
  if total < M.PARALLEL_MIN_FILES then n = 0 end
  local workers = {}
  for k = 1, n do workers[k] = worker.start("stdlib.kvaudit", "analyze_files", root, sources, o, claim) end
  local progress = opts.progress
  local mine = M.analyze_files(root, sources, o, claim, progress and function(done) progress(done, total) end)
  local out, bytes = mine.files, mine.bytes
  local threads = mine.analysed > 0 and 1 or 0
  for k = 1, n do
    -- room for the worker's part before it is copied in
    heap.reserve(2 * M.HEAP_AHEAD)
    local part = workers[k]:join()
    if part.analysed > 0 then threads = threads + 1 end
    for j, r in pairs(part.files) do out[j] = r end
    bytes = bytes + part.bytes
  end
  if progress then progress(total, total) end
  return out, threads, bytes
end

---Scan a tree for KV call sites. From M.PARALLEL_MIN_FILES sources on,
---files are analysed on every CPU (worker threads); the result is the same
---as one thread's, in the same order.
---@param root string
---@param opts table|nil { exclude = "globs,..." | {...}, bindings = {...}, not_kv = {...},
---  skip_dirs = {...}, config = false (ignore kvaudit.json), progress = fn(done, total),
---  all_lines = bool (a line for every excluded lookalike), examples = 3,
---  workers = threads besides this one (default: CPUs - 1, at most 7) }
---@return table|nil result { root, files, threads (how many analysed files), bytes, sites, excluded, errors,
---  bindings, config }, string? err
function M.scan(root, opts)
  opts = opts or {}
  local st, serr = fs.stat(root)
  if not st then return nil, ("root %s: %s; pass -p root=DIR (a directory to audit)"):format(root, serr) end
  if st.type ~= "dir" then return nil, ("root %s is not a directory; pass -p root=DIR"):format(root) end
  local cfg = {}
  if opts.config ~= false then
    local c, cerr = M.load_config(root)
    if not c then return nil, cerr end
    cfg = c
  end
  local skip = append(append(append({}, M.SKIP_DIRS), cfg.skip_dirs), opts.skip_dirs)
  local paths, werr, wcode = fs.walk(root, { skip = skip })
  if not paths then return nil, ("walk %s: %s (%s)"):format(root, werr, wcode) end
  local excluded_by = M.glob_matcher(append(append({}, cfg.exclude), M.list_option(opts.exclude)))

  -- what bindings are: configuration first, then wrangler configs
  local kinds = {}
  local function declare(name, kind, source)
    if not kinds[name] then kinds[name] = { kind = kind, source = source } end
  end
  local not_kv = {}
  for _, src in ipairs({ opts, cfg }) do
    local label = src == cfg and M.CONFIG_FILE or "parameters"
    for _, b in ipairs(src.bindings or {}) do declare(b, "kv", label) end
    for _, b in ipairs(src.not_kv or {}) do declare(b, "other", label) end
    for _, x in ipairs(src.exclusions or {}) do
      not_kv[x.receiver] = x.reason .. " (" .. label .. " exclusion)"
    end
  end
  local sources, errors, wranglers = {}, {}, {}
  for _, rel in ipairs(paths) do
    -- by the last bytes (a pattern anchored at the end costs per byte)
    local dot = byte(rel, -3) == B_DOT and -3 or byte(rel, -4) == B_DOT and -4 or nil
    if dot and M.EXTENSIONS[sub(rel, dot + 1)] then
      if not excluded_by(rel) then sources[#sources + 1] = rel end
    elseif byte(rel, -13) == 119 or byte(rel, -14) == 119 or byte(rel, -15) == 119 then
      local base = sub(rel, (last_of(rel, "/") or 0) + 1)
      if M.WRANGLER_FILES[base] and not excluded_by(rel) then wranglers[#wranglers + 1] = rel end
    end
  end
  for _, rel in ipairs(wranglers) do
    local text, err = fs.read(fs.join(root, rel))
    local b, berr
    if text then b, berr = M.wrangler_bindings(text, rel) end
    if not b then
      errors[#errors + 1] = { file = rel, message = err or berr }
    else
      for name, kind in pairs(b) do declare(name, kind, rel) end
    end
  end
  local known_kv = {}
  for name, k in pairs(kinds) do if k.kind == "kv" then known_kv[#known_kv + 1] = name end end
  local results, threads, bytes = analyze_all(root, sources, { bindings = known_kv, not_kv = not_kv }, opts)
  local total = #sources
  local sites, excluded, do_names, typed = {}, {}, {}, {}
  -- in file order, as one thread would have found them: the first file
  -- naming a binding wins, and only the first few lookalikes of each
  -- reason keep their line (unless all_lines)
  local shown, quota, all_lines = {}, opts.examples or 3, opts.all_lines
  for i = 1, total do
    local r, rel = results[i], sources[i]
    if r and r.error then
      errors[#errors + 1] = { file = rel, message = r.error }
    elseif r then -- (nil: the file had nothing to say)
      append(sites, r[1])
      for _, x in ipairs(r[2]) do
        local c = shown[x.group] or 0
        if all_lines or c < quota then
          shown[x.group] = c + 1
        else
          x.line = nil
        end
        excluded[#excluded + 1] = x
      end
      local facts = r[3] -- false when the file said nothing about bindings
      if facts and facts.do_bindings then
        for name in pairs(facts.do_bindings) do do_names[name] = do_names[name] or rel end
      end
      if facts and facts.types then
        for name, t in pairs(facts.types) do typed[name] = typed[name] or { t = t, file = rel } end
      end
    end
  end

  -- second pass: env bindings against what the configs and the code say
  for name, t in pairs(typed) do
    if t.t == "KVNamespace" then
      declare(name, "kv", "typed KVNamespace in " .. t.file)
    elseif t.t == "R2Bucket" then
      declare(name, "r2", "typed R2Bucket in " .. t.file)
    elseif t.t == "DurableObjectNamespace" then
      declare(name, "do", "typed DurableObjectNamespace in " .. t.file)
    elseif t.t == "D1Database" then
      declare(name, "d1", "typed D1Database in " .. t.file)
    end
  end
  for name, file in pairs(do_names) do declare(name, "do", "used with idFromName/newUniqueId in " .. file) end
  local kept, verdicts, dropped = {}, {}, nil
  for _, s in ipairs(sites) do
    local ok, why = decide_binding(s, kinds, verdicts)
    if ok then
      kept[#kept + 1] = s
    else
      excluded[#excluded + 1] = { file = s.file, line = s.line, op = s.op, receiver = s.receiver, reason = why, group = why }
      dropped = dropped or {}
      dropped[s.file] = true
    end
  end
  sites = kept
  -- a file that lost a site here is numbered again without it
  if dropped then
    local again = {}
    for _, s in ipairs(sites) do
      if dropped[s.file] then
        local list = again[s.file] or {}
        again[s.file] = list
        list[#list + 1] = s
      end
    end
    for _, list in pairs(again) do file_ids(list) end
  end
  local by_kind = {}
  for name, k in pairs(kinds) do by_kind[name] = { kind = k.kind, source = k.source } end
  return {
    root = root, files = total, threads = threads, bytes = bytes, sites = sites, excluded = excluded, errors = errors,
    bindings = by_kind, config = cfg.path, wrangler = wranglers,
  }
end

-- ------------------------------------------------------------ classification

-- Ordered: within one piece of evidence, the first word with an A or B
-- rule decides; C (cache) words only when no A/B word is there.
M.RULES = {
  { cat = "B", what = "queue / lease state",
    words = { "lease", "leases", "queue", "queues", "task", "tasks", "job", "jobs", "result", "results", "inflight", "claim" },
    home = "D1 (claim/list/result as rows; no KV list), or a Durable Object",
    why = "a queue on KV puts per task and lists leases: both hit the daily limits first" },
  { cat = "B", what = "rate limiter",
    words = { "rate", "ratelimit", "ratelimiter", "limiter", "throttle", "quota", "counter", "counters", "hits" },
    home = "Durable Object (one per key, or sharded)",
    why = "a put per request on the hot path" },
  { cat = "A", what = "lock", words = { "lock", "locks", "mutex", "leader", "semaphore" },
    home = "Durable Object (recommended), or a D1 lock table with a UNIQUE key",
    why = "KV is eventually consistent and a failed put leaves the lock wrong" },
  { cat = "A", what = "idempotency / dedup",
    words = { "idempotency", "idempotent", "idem", "dedup", "dedupe", "nonce", "nonces", "seen", "processed" },
    home = "D1 (UNIQUE constraint on the key)",
    why = "duplicate suppression must not fail open when a KV put is refused" },
  { cat = "A", what = "token / credential",
    words = { "token", "tokens", "oauth", "refresh", "credential", "credentials", "apikey", "api_key", "secret", "secrets",
      "mapping", "mappings" },
    home = "D1 (encrypted, with TTL / rotation)",
    why = "losing a refresh token or key mapping breaks the integration" },
  { cat = "A", what = "run state",
    words = { "last_run", "lastrun", "cron", "schedule", "scheduler", "checkpoint", "cursor", "state", "status", "heartbeat" },
    home = "D1 (a row per job), or a Durable Object",
    why = "automation stops when this put is refused (\"KV put() limit exceeded\")" },
  { cat = "B", what = "high-frequency writes",
    words = { "poll", "poller", "metric", "metrics", "stats", "usage", "analytics", "event", "events", "log", "logs",
      "visit", "visits", "views", "activity" },
    home = "Durable Object (buffer, then write in batches)",
    why = "a put per event adds up against the daily put limit" },
  { cat = "C", what = "cache",
    words = { "cache", "cached", "page", "pages", "html", "render", "rendered", "fragment", "feed", "response",
      "preview", "asset", "assets", "thumb", "thumbnail", "og" },
    home = "KV (keep): TTL required; fewer puts (batch, sample, debounce)",
    why = "a cache may be lost; it belongs in KV with a TTL" },
}
local WORD_RULE = {}
for _, rule in ipairs(M.RULES) do
  for _, w in ipairs(rule.words) do WORD_RULE[w] = WORD_RULE[w] or rule end
end

local function rule_for(text, memo)
  if not text or text == "" then return nil end
  local m = memo[text]
  if m ~= nil then return m or nil end
  local r = M._rule_for(text)
  memo[text] = r or false
  return r
end

-- The words of an identifier or key, lower-cased: "lastRun:v2" → last, run,
-- v; "KVStore" → kv, store. Byte by byte: on short texts that is cheaper
-- than any pattern.
local function each_word(text, fn)
  local bytes = { byte(text, 1, -1) }
  local start, n = nil, #bytes
  for i = 1, n + 1 do
    local c = bytes[i]
    local upper = c and c >= 65 and c <= 90
    local alpha = c and (upper or (c >= 97 and c <= 122))
    local split = false
    if start and alpha and upper then
      local prev, nxt = bytes[i - 1], bytes[i + 1]
      -- aB splits; ABc splits before B
      split = (prev >= 97 and prev <= 122) or (nxt and nxt >= 97 and nxt <= 122 and prev >= 65 and prev <= 90)
    end
    if start and (not alpha or split) then
      if fn(sub(text, start, i - 1):lower()) then return true end
      start = nil
    end
    if alpha and not start then start = i end
  end
  return false
end

function M._rule_for(text)
  local cache_rule, prev, found
  each_word(text, function(w)
    -- a word, or the two last words together (last_run)
    local rule = WORD_RULE[w] or (prev and WORD_RULE[prev .. "_" .. w])
    prev = w
    if rule and rule.cat ~= "C" then
      found = rule
      return true
    end
    if rule and not cache_rule then cache_rule = rule end
  end)
  return found or cache_rule
end

local DEFAULT_C = { cat = "C", what = "cache (no other sign)", home = "KV (keep): TTL required; fewer puts (batch, sample, debounce)",
  why = "nothing in key, function or binding says control plane or high frequency" }
local HOT_B = { cat = "B", what = "writes on a hot path", home = "Durable Object (buffer, then write in batches)",
  why = "a put or list on a path that runs all the time" }

---Give every site a category (A control plane, B high frequency, C cache),
---the evidence, and its suggested home.
---@param result table  from M.scan
---@return table result
-- What the evidence at each place is called in a reason; 5 is a list's
-- prefix (place 1 of a list).
local EVIDENCE = { "key", "function", "binding", "receiver", "list prefix" }

function M.classify(result)
  local memo, lastseg = {}, {}
  -- the reason for each (place, text): sites share keys and bindings, so
  -- most reasons are made once
  local said = { {}, {}, {}, {}, {} }
  local texts = {}
  for _, s in ipairs(result.sites) do
    local R = s.receiver
    local last = R and lastseg[R]
    if R and not last then
      last = match(R, "([%w_$]+)$") or ""
      lastseg[R] = last
    end
    -- evidence, strongest first: key (or list prefix), function, binding, receiver
    texts[1], texts[2], texts[3], texts[4] = s.prefix or s.key, s.fn, s.binding, last
    local chosen, at, first_c, first_at
    for i = 1, 4 do
      local rule = rule_for(texts[i], memo)
      if rule then
        if rule.cat ~= "C" then
          chosen, at = rule, i
          break
        end
        if not first_c then first_c, first_at = rule, i end
      end
    end
    if not chosen and first_c then chosen, at = first_c, first_at end
    local how
    if chosen then
      local place = (at == 1 and s.op == "list") and 5 or at
      local text = texts[at]
      how = said[place][text]
      if not how then
        -- (the rule is a function of the text: one reason per text)
        how = ('%s (%s "%s")'):format(chosen.what, EVIDENCE[place], text)
        said[place][text] = how
      end
    elseif s.hot and (s.op == "put" or s.op == "list") then
      chosen, how = HOT_B, HOT_B.what .. ": " .. s.hot
    else
      chosen, how = DEFAULT_C, DEFAULT_C.what .. ": " .. DEFAULT_C.why
    end
    s.category = chosen.cat
    s.category_reason = how
    s.what = chosen.what
    s.home = chosen.home
    s.home_reason = chosen.why
  end
  result._totals = nil -- categories changed
  return result
end

-- ------------------------------------------------------------ report

---Totals: sites, per op, puts without TTL, lists on hot paths, per category.
---Counted once per result and classification (the runbook asks in every
---step): the table is shared, read it only.
---@param result table
function M.totals(result)
  local memo = result._totals
  if memo and memo.of == result.sites and memo.n == #result.sites then return memo.t end
  local t = { sites = #result.sites, put = 0, get = 0, delete = 0, list = 0, put_without_ttl = 0,
    put_ttl_unknown = 0, list_hot = 0, A = 0, B = 0, C = 0, excluded = #result.excluded, files = result.files }
  for _, s in ipairs(result.sites) do
    t[s.op] = t[s.op] + 1
    if s.op == "put" and s.ttl == "no" then t.put_without_ttl = t.put_without_ttl + 1 end
    if s.op == "put" and s.ttl == "unknown" then t.put_ttl_unknown = t.put_ttl_unknown + 1 end
    if s.op == "list" and s.hot then t.list_hot = t.list_hot + 1 end
    if s.category then t[s.category] = t[s.category] + 1 end
  end
  result._totals = { of = result.sites, n = #result.sites, t = t }
  return t
end

local function family(s)
  local p = s.prefix
  if not p or p == "" then return nil end
  if s.key then return p:match("^(.*[:/])") or p end
  return p
end

local CAT_SCORE = { A = 30, B = 20, C = 0 }

---The sites worth moving first, grouped by binding, key family and
---category: control plane and high frequency first, then puts without a
---TTL and lists on hot paths.
---@param result table  classified
---@param n integer|nil  how many (default 10)
function M.candidates(result, n)
  local groups, order = {}, {}
  for _, s in ipairs(result.sites) do
    local score = CAT_SCORE[s.category] or 0
    local op = s.op
    local issue1, issue2
    if op == "put" then score = score + 10 end
    if op == "list" then score = score + 8 end
    if op == "put" and s.ttl == "no" then
      score = score + 5
      issue1 = "put without TTL"
    end
    -- a cache filled on every request is what a cache is for; a list there,
    -- or a control-plane put, is not
    if s.hot and (op == "list" or (op == "put" and s.category ~= "C")) then
      score = score + 10
      issue2 = op .. " " .. s.hot
    end
    if s.category ~= "C" or issue1 or issue2 then
      local fam = family(s)
      local key = s.binding .. "\0" .. (fam or "(dynamic key)") .. "\0" .. s.category
      local g = groups[key]
      if not g then
        g = { binding = s.binding, family = fam, category = s.category, what = s.what, home = s.home,
          reason = s.home_reason, evidence = s.category_reason, sites = {}, issues = {}, score = 0, ops = {} }
        groups[key] = g
        order[#order + 1] = g
      end
      g.sites[#g.sites + 1] = s
      g.ops[op] = (g.ops[op] or 0) + 1
      if issue1 then g.issues[issue1] = true end
      if issue2 then g.issues[issue2] = true end
      if score > g.score then g.score = score end
    end
  end
  for _, g in ipairs(order) do
    g.score = g.score + math.min(#g.sites, 10)
    if g.category == "C" then
      g.home = "KV (keep), but " .. (g.issues["put without TTL"] and "add expirationTtl" or "take the list off the hot path")
    end
    local list = {}
    for i in pairs(g.issues) do list[#list + 1] = i end
    table.sort(list)
    g.issue_list = list
  end
  table.sort(order, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    local sa, sb = a.sites[1], b.sites[1]
    if sa.file ~= sb.file then return sa.file < sb.file end
    return sa.line < sb.line
  end)
  local out = {}
  for i = 1, math.min(n or 10, #order) do out[i] = order[i] end
  return out
end

local function where(s) return ("%s:%d"):format(s.file, s.line) end

local function describe(s)
  local bits = { where(s), s.op, s.binding }
  if s.op == "list" then
    bits[#bits + 1] = s.prefix and ('prefix "%s"'):format(s.prefix) or "no prefix (the whole namespace)"
  elseif s.key then
    bits[#bits + 1] = ('key "%s"'):format(s.key)
  elseif s.prefix then
    bits[#bits + 1] = ('key "%s…"'):format(s.prefix)
  end
  return table.concat(bits, " ")
end
M.describe = describe

local function ops_text(ops)
  local parts = {}
  for _, op in ipairs(M.OPS) do if ops[op] then parts[#parts + 1] = ("%s %d"):format(op, ops[op]) end end
  return table.concat(parts, ", ")
end

---The report as lines: totals, exclusions by reason, puts without TTL,
---lists on hot paths, the top migration candidates.
---@param result table  classified
---@param o table|nil { limit = 20 }  how many sites to show per list
---@return string[]
function M.report(result, o)
  local limit = o and o.limit or 20
  local t = M.totals(result)
  local L = {}
  local function add(fmt, ...) L[#L + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end
  add("%d KV sites in %d files scanned (%.1f MB): put %d, get %d, delete %d, list %d", t.sites, t.files,
    result.bytes / 1e6, t.put, t.get, t.delete, t.list)
  add("categories: A control plane %d, B high frequency %d, C cache %d", t.A, t.B, t.C)
  local per = {}
  for _, s in ipairs(result.sites) do per[s.binding] = (per[s.binding] or 0) + 1 end
  local names = {}
  for k in pairs(per) do names[#names + 1] = k end
  table.sort(names, function(a, b)
    if per[a] ~= per[b] then return per[a] > per[b] end
    return a < b
  end)
  if #names > 0 then
    local parts = {}
    for _, k in ipairs(names) do parts[#parts + 1] = ("%s %d"):format(k, per[k]) end
    add("by binding: %s", table.concat(parts, ", "))
  end
  local reasons, rorder, example = {}, {}, {}
  for _, x in ipairs(result.excluded) do
    local r = x.group or x.reason
    if not reasons[r] then
      reasons[r] = 0
      rorder[#rorder + 1] = r
    end
    reasons[r] = reasons[r] + 1
    if not example[r] and x.line then example[r] = x end
  end
  table.sort(rorder, function(a, b)
    if reasons[a] ~= reasons[b] then return reasons[a] > reasons[b] end
    return a < b
  end)
  add("excluded %d lookalikes:", t.excluded)
  for _, r in ipairs(rorder) do
    local e = example[r]
    add("  %5d  %s%s", reasons[r], r, e and (" (e.g. %s:%d %s.%s)"):format(e.file, e.line, e.receiver, e.op) or "")
  end

  local function section(title, list, extra)
    add("%s (%d):", title, #list)
    for i = 1, math.min(#list, limit) do add("  %s — %s", describe(list[i]), extra(list[i])) end
    if #list > limit then add("  … and %d more (all of them are in the baseline JSON)", #list - limit) end
  end
  local nottl, unknown, hot = {}, {}, {}
  for _, s in ipairs(result.sites) do
    if s.op == "put" and s.ttl == "no" then nottl[#nottl + 1] = s end
    if s.op == "put" and s.ttl == "unknown" then unknown[#unknown + 1] = s end
    if s.op == "list" and s.hot then hot[#hot + 1] = s end
  end
  section("puts without TTL", nottl, function(s) return s.category .. " " .. s.what end)
  if #unknown > 0 then
    section("puts whose options are not written out here (TTL unknown)", unknown, function(s) return s.category .. " " .. s.what end)
  end
  section("lists on hot paths", hot, function(s) return s.hot .. (s.fn and (" in " .. s.fn) or "") end)
  local top = M.candidates(result, 10)
  add("top %d migration candidates:", #top)
  for i, g in ipairs(top) do
    add("  %2d. %s %s — %s %s → %s", i, g.binding, g.family and ('"' .. g.family .. '"') or "(dynamic key)",
      g.category, g.what, g.home)
    add("      %d site%s (%s)%s; e.g. %s; why: %s", #g.sites, #g.sites == 1 and "" or "s", ops_text(g.ops),
      #g.issue_list > 0 and ("; " .. table.concat(g.issue_list, "; ")) or "", where(g.sites[1]), g.evidence)
  end
  if #result.errors > 0 then
    add("unreadable files (%d):", #result.errors)
    for i = 1, math.min(#result.errors, limit) do add("  %s: %s", result.errors[i].file, result.errors[i].message) end
  end
  return L
end

-- ------------------------------------------------------------ baseline

M.BASELINE_VERSION = 1

---The baseline document (JSON-ready): totals and every site.
---@param result table  classified
function M.baseline(result)
  local t = M.totals(result)
  local sites = {}
  for i, s in ipairs(result.sites) do
    sites[i] = { id = s.id, file = s.file, line = s.line, op = s.op, binding = s.binding, ttl = s.ttl,
      key = s.key, prefix = s.prefix, hot = s.hot, category = s.category }
  end
  return {
    version = M.BASELINE_VERSION, tool = "runbook kv-audit",
    totals = { sites = t.sites, put = t.put, get = t.get, delete = t.delete, list = t.list,
      put_without_ttl = t.put_without_ttl, list_hot = t.list_hot, A = t.A, B = t.B, C = t.C },
    sites = sites,
  }
end

---@param result table  classified
---@return string json
function M.encode_baseline(result)
  local cjson = require("cjson")
  return cjson.encode(M.baseline(result)) .. "\n"
end

---Parse a baseline file's text.
---@param text string
---@param path string|nil  for messages
---@return table|nil baseline, string? err
function M.decode_baseline(text, path)
  path = path or "baseline"
  local doc = require("cjson.safe").decode(text)
  if type(doc) ~= "table" or type(doc.sites) ~= "table" or type(doc.totals) ~= "table" then
    return nil, ("%s is not a kv-audit baseline (no sites/totals); write one with -p write_baseline=%s"):format(path, path)
  end
  if doc.version ~= M.BASELINE_VERSION then
    return nil, ("%s has baseline version %s, this runbook writes %d; write it again with -p write_baseline=%s")
      :format(path, tostring(doc.version), M.BASELINE_VERSION, path)
  end
  return doc
end

local function list_sites(list, max)
  local parts = {}
  for i = 1, math.min(#list, max or 20) do parts[i] = describe(list[i]) end
  local s = table.concat(parts, "; ")
  if #list > (max or 20) then s = s .. ("; … and %d more"):format(#list - (max or 20)) end
  return s
end
M.list_sites = list_sites

---Compare a scan with a baseline. New TTL-less puts and new lists always
---fail; the total and the puts may grow by the allowances.
---@param base table  from decode_baseline
---@param result table  classified
---@param allow table|nil { total = 0, puts = 0 }
---@return table { ok, rules = { { name, ok, message, sites } }, new, removed, totals, base_totals }
function M.compare(base, result, allow)
  allow = allow or {}
  local count = {}
  for _, s in ipairs(base.sites) do
    if s.id then count[s.id] = (count[s.id] or 0) + 1 end
  end
  local new = {}
  for _, s in ipairs(result.sites) do
    local c = count[s.id]
    if c and c > 0 then count[s.id] = c - 1 else new[#new + 1] = s end
  end
  local removed = {}
  for _, s in ipairs(base.sites) do
    if s.id and (count[s.id] or 0) > 0 then
      count[s.id] = count[s.id] - 1
      removed[#removed + 1] = s
    end
  end
  local t, bt = M.totals(result), base.totals
  local new_nottl, new_lists, new_puts = {}, {}, {}
  for _, s in ipairs(new) do
    if s.op == "put" then new_puts[#new_puts + 1] = s end
    if s.op == "put" and s.ttl == "no" then new_nottl[#new_nottl + 1] = s end
    if s.op == "list" then new_lists[#new_lists + 1] = s end
  end
  local rules = {}
  local function rule(name, ok, message, sites)
    rules[#rules + 1] = { name = name, ok = ok, message = message, sites = sites }
  end
  rule("no new put without a TTL", #new_nottl == 0,
    #new_nottl > 0 and (("%d new put%s without expirationTtl: %s — add expirationTtl, or move it to D1/a Durable Object")
      :format(#new_nottl, #new_nottl == 1 and "" or "s", list_sites(new_nottl))) or nil, new_nottl)
  rule("no new list", #new_lists == 0,
    #new_lists > 0 and (("%d new list call%s: %s — KV list counts against the daily limit; review it, then refresh the baseline")
      :format(#new_lists, #new_lists == 1 and "" or "s", list_sites(new_lists))) or nil, new_lists)
  local dt = t.sites - (tonumber(bt.sites) or 0)
  local atot = allow.total or 0
  rule(("total KV sites grew by at most %d"):format(atot), dt <= atot,
    dt > atot and (("KV sites grew by %d (%d → %d), more than the allowed %d; new: %s")
      :format(dt, bt.sites, t.sites, atot, list_sites(new))) or nil, new)
  local dp = t.put - (tonumber(bt.put) or 0)
  local aput = allow.puts or 0
  rule(("puts grew by at most %d"):format(aput), dp <= aput,
    dp > aput and (("puts grew by %d (%d → %d), more than the allowed %d; new: %s")
      :format(dp, bt.put, t.put, aput, list_sites(new_puts))) or nil, new_puts)
  local ok = true
  for _, r in ipairs(rules) do ok = ok and r.ok end
  return { ok = ok, rules = rules, new = new, removed = removed, totals = t, base_totals = bt }
end

return M
