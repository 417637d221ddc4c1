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

---Load a runbook file.
---@return table|nil def, string|nil err
function M.load_file(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then return nil, err end
  local ok, def = pcall(chunk)
  if not ok then return nil, tostring(def) end
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

---Find and load a runbook by name (or a path to a .lua file).
function M.find(name, project)
  if name:find("/") or name:match("%.lua$") then return M.load_file(name) end
  for _, s in ipairs(M.sources(project)) do
    if s.kind == "builtin" then
      if package.preload["runbooks." .. name] then return load_builtin(name) end
    else
      local p = s.dir .. "/" .. name .. ".lua"
      local f = io.open(p, "rb")
      if f then
        f:close()
        return M.load_file(p)
      end
    end
  end
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

return M
