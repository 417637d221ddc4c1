-- fs.lua — the public face of runbook.fs.core (files, directories, locks).
-- Re-exports the core and adds the path helpers and conveniences runbooks
-- and the stdlib use. Expected failures return nil, msg, code (ENOENT,
-- EACCES, ELOOP for a refused symlink, EWOULDBLOCK for a held lock, ...);
-- `read_all` is the one helper that raises instead.

local core = require("runbook.fs.core")

local M = {}

--- Whole contents of a file; nofollow refuses a symlink (ELOOP).
---@param path string
---@param opts table|nil { nofollow = bool }
---@return string|nil data, string? msg, string? code
M.read = core.read

--- Replace a file atomically (temp in the same dir, fsync, rename, fsync the
--- dir). Keeps the old mode unless `mode` is given; a new file gets 0644
--- (0600 with nofollow). nofollow refuses a symlink (ELOOP). On failure the
--- old file is untouched.
---@param path string
---@param data string
---@param opts table|nil { mode = integer, nofollow = bool }
---@return boolean|nil ok, string? msg, string? code
M.write_atomic = core.write_atomic

--- { type = "file"|"dir"|"link"|..., size, mode, mtime, uid, gid }.
---@param path string
---@param opts table|nil { nofollow = bool }
---@return table|nil st, string? msg, string? code
M.stat = core.stat

---@param path string
---@param mode integer
---@return boolean|nil ok, string? msg, string? code
M.chmod = core.chmod

--- mkdir -p; mode (default 0777, less the umask) applies to new directories.
---@param path string
---@param mode integer|nil
---@return boolean|nil ok, string? msg, string? code
M.mkdir_p = core.mkdir_p

--- Sorted names in a directory (no "." and "..").
---@param dir string
---@return string[]|nil names, string? msg, string? code
M.list = core.list

--- Sorted relative paths of everything under dir that is not a directory;
--- symlinks are listed, never followed; directories named in skip are not
--- entered.
---@param dir string
---@param opts table|nil { skip = { "node_modules", ".git" } }
---@return string[]|nil paths, string? msg, string? code
M.walk = core.walk

--- Remove a file, a symlink or an empty directory.
---@param path string
---@return boolean|nil ok, string? msg, string? code
M.remove = core.remove

--- Exclusive flock on a lock file → Lock (unlock / <close>), or nil, msg,
--- "EWOULDBLOCK" while another holder has it. wait = true or seconds polls.
---@param path string
---@param opts table|nil { wait = boolean|number }
---@return userdata|nil lock, string? msg, string? code
M.lock = core.lock

--- The current directory.
---@return string|nil dir, string? msg, string? code
M.getcwd = core.getcwd

--- Contents of a file, raising "read PATH: why (CODE)" when it cannot be read.
---@param path string
---@param opts table|nil { nofollow = bool }
---@return string
function M.read_all(path, opts)
  local data, err, code = core.read(path, opts)
  if not data then error(("%s (%s)"):format(err, code), 2) end
  return data
end

--- Does the path exist (following symlinks: a dangling link does not)?
---@param path string
---@return boolean
function M.exists(path)
  return core.stat(path) ~= nil
end

--- The directory part of a path, as dirname(1): "a/b" → "a", "a" → ".", "/a" → "/".
---@param path string
---@return string
function M.dirname(path)
  local p = path:gsub("/+$", "")
  if p == "" then return path:sub(1, 1) == "/" and "/" or "." end
  local dir = p:match("^(.*)/[^/]*$")
  if dir == nil then return "." end
  dir = dir:gsub("/+$", "")
  return dir == "" and "/" or dir
end

--- The last component, as basename(1): "a/b/" → "b", "/" → "/".
---@param path string
---@return string
function M.basename(path)
  local p = path:gsub("/+$", "")
  if p == "" then return path:sub(1, 1) == "/" and "/" or "" end
  return (p:match("([^/]*)$"))
end

--- Join path parts with single slashes; an absolute part starts over
--- (as Python's os.path.join); empty parts are skipped.
---@param ... string
---@return string
function M.join(...)
  local out = ""
  for i = 1, select("#", ...) do
    local part = select(i, ...)
    assert(type(part) == "string", "fs.join: every part must be a string")
    if part:sub(1, 1) == "/" then
      out = part
    elseif part ~= "" then
      if out == "" or out:sub(-1) == "/" then
        out = out .. part
      else
        out = out .. "/" .. part
      end
    end
  end
  return out
end

return M
