-- catalogue.lua — where runbooks come from, in order of precedence: the
-- project's runbook directories, $RUNBOOK_PATH (colon-separated), then the
-- built-in catalogue embedded in the binary (runbooks/ of this tree).

local M = {}

local function list_dir(dir)
  local fs = require("runbook.fs.core")
  local names = fs.list(dir)
  local out = {}
  for _, n in ipairs(names or {}) do
    local name = n:match("^([%w][%w%-_]*)%.lua$")
    if name then out[#out + 1] = name end
  end
  return out
end

---Every source directory or the built-in set, in precedence order.
function M.sources(project)
  local src = {}
  for _, d in ipairs(project and project.runbook_dirs or {}) do
    src[#src + 1] = { kind = "dir", dir = d }
  end
  for d in (os.getenv("RUNBOOK_PATH") or ""):gmatch("[^:]+") do
    src[#src + 1] = { kind = "dir", dir = d }
  end
  if package.runbook_tree then
    src[#src + 1] = { kind = "dir", dir = package.runbook_tree .. "/runbooks", builtin = true }
  else
    src[#src + 1] = { kind = "builtin" }
  end
  return src
end

local function builtin_names()
  local out = {}
  for k in pairs(package.preload) do
    local n = k:match("^runbooks%.([%w][%w%-_]*)$")
    if n then out[#out + 1] = n end
  end
  table.sort(out)
  return out
end

local function check_def(def, origin)
  if type(def) ~= "table" or def.kind ~= "runbook" then
    return nil, origin .. ": does not return rb.runbook{...}"
  end
  return def
end

-- What a runbook file raised while loading, as a message naming the file:
-- the DSL's own errors name the runbook but not where it lives, and a
-- file may raise any value at all.
local function load_error(path, e)
  local ok, msg = false, nil
  if type(e) == "string" or type(e) == "number" or (getmetatable(e) or {}).__tostring then
    ok, msg = pcall(tostring, e)
  end
  if not ok or type(msg) ~= "string" then
    msg = ("raised a %s value, not an error message"):format(type(e))
  end
  if not msg:find(path, 1, true) then msg = path .. ": " .. msg end
  return msg
end

---Load a runbook file.
---@return table|nil def, string|nil err
function M.load_file(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then return nil, load_error(path, err) end
  local ok, def = pcall(chunk)
  if not ok then return nil, load_error(path, def) end
  def = select(1, check_def(def, path))
  if not def then return nil, path .. ": does not return rb.runbook{...}" end
  def.source = path
  return def
end

local function load_builtin(name)
  local loader = package.preload["runbooks." .. name]
  if not loader then return nil end
  local ok, def = pcall(loader, "runbooks." .. name)
  if not ok then return nil, tostring(def) end
  local d, err = check_def(def, "built-in " .. name)
  if not d then return nil, err end
  d.source = "built-in"
  return d
end

---Names available, each with where it comes from (first source wins).
function M.names(project)
  local seen, out = {}, {}
  for _, s in ipairs(M.sources(project)) do
    local names = s.kind == "builtin" and builtin_names() or list_dir(s.dir)
    for _, n in ipairs(names) do
      if not seen[n] then
        seen[n] = true
        out[#out + 1] = { name = n, source = s }
      end
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

---Where a runbook name (or a path to a .lua file) is loaded from: the
---file's path, false for a built-in, nil when there is no such runbook
---(first source wins).
local function locate(name, project)
  if name:find("/") or name:match("%.lua$") then return name end
  for _, s in ipairs(M.sources(project)) do
    if s.kind == "builtin" then
      if package.preload["runbooks." .. name] then return false end
    else
      local p = s.dir .. "/" .. name .. ".lua"
      local f = io.open(p, "rb")
      if f then f:close() return p end
    end
  end
  return nil
end

---Find and load a runbook by name (or a path to a .lua file).
function M.find(name, project)
  local where = locate(name, project)
  if where then return M.load_file(where) end
  if where == false then return load_builtin(name) end
  local names = {}
  for _, e in ipairs(M.names(project)) do names[#names + 1] = e.name end
  return nil, ("no runbook named '%s' (see `runbook list`%s)"):format(name,
    #names > 0 and (": " .. table.concat(names, ", ")) or "")
end

---Load every runbook; returns an array of { name, def | nil, err, source }.
function M.all(project)
  local out = {}
  for _, e in ipairs(M.names(project)) do
    local def, err
    if e.source.kind == "builtin" then
      def, err = load_builtin(e.name)
    else
      def, err = M.load_file(e.source.dir .. "/" .. e.name .. ".lua")
    end
    if def and def.name ~= e.name then
      err = ("%s: file is %s.lua but the runbook is named %s"):format(def.source, e.name, def.name)
      def = nil
    end
    out[#out + 1] = { name = e.name, def = def, err = err, source = e.source }
  end
  return out
end

-- Summaries for `runbook list`, cached: loading 20 runbooks costs more than
-- the whole start-up budget, so name and summary are kept per file in
-- $XDG_CACHE_HOME/runbook/catalogue.txt (default ~/.cache), keyed by the
-- file's path, size and mtime (built-ins: by the binary's). A file that does
-- not load is never cached, so its error shows every time. The cache is an
-- optimisation only: unreadable, unwritable or corrupt, it is ignored.
local function cache_path()
  local base = os.getenv("XDG_CACHE_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    if not home or home == "" then return nil end
    base = home .. "/.cache"
  end
  return base .. "/runbook/catalogue.txt"
end

local function stamp(fs, path)
  local st = fs.stat(path)
  return st and ("%d:%.9f"):format(st.size, st.mtime) or nil
end

-- The cache file: a first line "runbook-catalogue 1", then one line per
-- runbook "KEY<TAB>STAMP<TAB>SUMMARY" (plain text: reading it needs no JSON
-- decoder, the cost `runbook list` would otherwise pay at every start). An
-- entry whose key or summary holds a tab or a newline is not cached.
local CACHE_HEAD = "runbook-catalogue 1"

local function read_cache(path)
  local text = require("runbook.fs.core").read(path) or ""
  local entries = {}
  if text:sub(1, #CACHE_HEAD + 1) ~= CACHE_HEAD .. "\n" then return entries end
  for key, st, summary in text:gmatch("\n([^\t\n]+)\t([^\t\n]+)\t([^\t\n]*)") do
    entries[key] = { stamp = st, summary = summary }
  end
  return entries
end

local function cache_text(entries)
  local keys = {}
  for k, e in pairs(entries) do
    if not (k:find("[\t\n]") or e.stamp:find("[\t\n]") or e.summary:find("[\t\n]")) then keys[#keys + 1] = k end
  end
  table.sort(keys)
  local out = { CACHE_HEAD }
  for _, k in ipairs(keys) do out[#out + 1] = k .. "\t" .. entries[k].stamp .. "\t" .. entries[k].summary end
  return table.concat(out, "\n") .. "\n"
end

---@return table rows { name, summary | nil, err | nil, source }
function M.summaries(project)
  local fs = require("runbook.fs.core")
  local cpath = cache_path()
  local cache = cpath and read_cache(cpath) or {}
  local exe_stamp = package.runbook_exe and stamp(fs, package.runbook_exe)
  local fresh, changed, out = {}, false, {}
  for _, e in ipairs(M.names(project)) do
    local key, st
    if e.source.kind == "builtin" then
      key, st = "builtin:" .. e.name, exe_stamp and (exe_stamp .. ":" .. (package.runbook_version or ""))
    else
      key = e.source.dir .. "/" .. e.name .. ".lua"
      st = stamp(fs, key)
    end
    local hit = st and cache[key]
    if hit and hit.stamp == st then
      fresh[key] = hit
      out[#out + 1] = { name = e.name, summary = hit.summary, source = e.source }
    else
      local def, err
      if e.source.kind == "builtin" then def, err = load_builtin(e.name) else def, err = M.load_file(key) end
      if def and def.name ~= e.name then
        err = ("%s: file is %s.lua but the runbook is named %s"):format(def.source, e.name, def.name)
        def = nil
      end
      if def and st and type(def.summary) == "string" then
        fresh[key] = { stamp = st, summary = def.summary }
        changed = true
      end
      out[#out + 1] = { name = e.name, summary = def and def.summary, err = err, source = e.source }
    end
  end
  for k in pairs(cache) do if not fresh[k] then changed = true end end
  if cpath and changed then
    local dir = cpath:match("^(.*)/[^/]*$")
    if fs.mkdir_p(dir, tonumber("700", 8)) then
      fs.write_atomic(cpath, cache_text(fresh), { mode = tonumber("600", 8) })
    end
  end
  return out
end

-- `runbook show`, cached the same way: the rendered text of a runbook, keyed
-- by the stamps of every file its loading read — the runbook file and any
-- module it required from a file — and of the binary (which embeds the
-- engine and the stdlib). A development tree (RUNBOOK_TREE) is never cached.
-- One small file per shown runbook (no JSON to load or decode on the way):
--   line 1: the key; then "stamp<TAB>path" lines; an empty line; the text.
local function show_file(cpath, key)
  local base = key:gsub("[^%w%-]", "_")
  if #base > 180 then base = base:sub(-180) end
  return cpath:gsub("catalogue%.txt$", "show/" .. base)
end

local function read_show(path, key, fs)
  local data = fs.read(path) -- nil for a missing file, a directory, an I/O error
  if not data then return nil end
  local head_end = data:find("\n\n", 1, true)
  if not head_end then return nil end
  local first = true
  for line in data:sub(1, head_end):gmatch("[^\n]+") do
    if first then
      if line ~= key then return nil end -- another key that sanitised the same
      first = false
    else
      local st, p = line:match("^([^\t]+)\t(.+)$")
      if not st or stamp(fs, p) ~= st then return nil end
    end
  end
  return data:sub(head_end + 2)
end

---render(def) → text. Returns the text, or nil, err when the runbook does not load.
function M.show_cached(name, project, variant, render)
  local fs = require("runbook.fs.core")
  local file = locate(name, project)
  -- a runbook named by its path is not cached: one-off files (and the specs'
  -- temporary ones) would pile up in the cache directory
  local by_path = name:find("/") or name:match("%.lua$")
  local cpath = not by_path and not package.runbook_tree and package.runbook_exe and cache_path()
  local key = "show:" .. variant .. ":" .. (file or ("builtin:" .. name))
  local spath = cpath and show_file(cpath, key)
  if spath then
    local text = read_show(spath, key, fs)
    if text then return text end
  end
  local before = {}
  for k in pairs(package.loaded) do before[k] = true end
  local def, err = M.find(name, project)
  if not def then return nil, err end
  local text = render(def)
  if spath and not key:find("\n", 1, true) then
    local lines = { key }
    local function add(path)
      local st = path and not path:find("\n", 1, true) and stamp(fs, path)
      if not st then return false end
      lines[#lines + 1] = st .. "\t" .. path
      return true
    end
    if not add(package.runbook_exe) or (file and not add(file)) then return text end
    for k in pairs(package.loaded) do
      if not before[k] and not package.preload[k] then
        -- a module loaded from a file is part of what was shown; one we
        -- cannot find (a C module, a custom loader) means: no cache
        if not add(package.searchpath(k, package.path)) then return text end
      end
    end
    if fs.mkdir_p(spath:match("^(.*)/[^/]*$"), tonumber("700", 8)) then
      fs.write_atomic(spath, table.concat(lines, "\n") .. "\n\n" .. text, { mode = tonumber("600", 8) })
    end
  end
  return text
end

return M
