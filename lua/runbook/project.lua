-- project.lua — finds and loads `runbook.lua`, the project file that names
-- the environments (URLs, Worker names, wrangler --env, env files,
-- protected) and where the project's runbooks live. Searched from the
-- current directory upwards; $RUNBOOK_PROJECT names one explicitly.

local M = {}

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function cwd()
  local fs = require("runbook.fs.core")
  if fs.getcwd then
    local d = fs.getcwd()
    if d then return d end
  end
  return os.getenv("PWD") or "."
end

---Path of the project file, or nil.
function M.find(start)
  local explicit = os.getenv("RUNBOOK_PROJECT")
  if explicit and explicit ~= "" then return explicit end
  local dir = start or cwd()
  while dir and dir ~= "" do
    local p = dir .. "/runbook.lua"
    if exists(p) then return p end
    local parent = dir:match("^(.*)/[^/]+$")
    if parent == nil or parent == dir then break end
    dir = parent
  end
  if exists("/runbook.lua") then return "/runbook.lua" end
  return nil
end

---Load the project. Returns the project table (with .root and .path), or
---an empty project when there is none, or nil, err for a broken file.
function M.load(path)
  path = path or M.find()
  if not path then
    return { root = cwd(), environments = {}, runbook_dirs = {} }
  end
  local chunk, err = loadfile(path, "t")
  if not chunk then return nil, ("project file %s: %s"):format(path, err) end
  local ok, p = pcall(chunk)
  if not ok then return nil, ("project file %s: %s"):format(path, tostring(p)) end
  if type(p) ~= "table" then return nil, ("project file %s must return a table"):format(path) end
  p.path = path
  p.root = path:match("^(.*)/[^/]*$") or "."
  p.environments = p.environments or {}
  if type(p.environments) ~= "table" then
    return nil, ("project file %s: environments must be a table"):format(path)
  end
  for name, e in pairs(p.environments) do
    if type(e) ~= "table" then
      return nil, ("project file %s: environment %s must be a table"):format(path, tostring(name))
    end
  end
  local dirs = {}
  for _, d in ipairs(p.runbooks or { "runbooks" }) do
    dirs[#dirs + 1] = d:sub(1, 1) == "/" and d or (p.root .. "/" .. d)
  end
  p.runbook_dirs = dirs
  return p
end

---A path relative to the project root made absolute ("~/" is $HOME).
function M.path(project, p)
  if type(p) ~= "string" then return p end
  if p:sub(1, 2) == "~/" then return (os.getenv("HOME") or "") .. p:sub(2) end
  if p:sub(1, 1) == "/" then return p end
  return (project and project.root or ".") .. "/" .. p
end

return M
