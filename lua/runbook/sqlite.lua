-- sqlite.lua — the public face of runbook.sqlite.core (sqlite3).
--
-- `sqlite.open(path, opts)` returns a Lua wrapper around the core Db handle
-- (the core stays untouched, so its metatable means the same thing to every
-- user).  The wrapper adds what the journal and the runbooks want:
--
--   db:query(sql, ...)  -> array of rows, or nil, msg, code
--   db:one(sql, ...)    -> first row or nil, or nil, msg, code
--   db:run(sql, ...)    -> number of rows changed, or nil, msg, code
--   db:transaction(fn, ...) -> true, fn's results; or nil, msg, code
--
-- `...` is bound as for stmt:bind: positional values, or one table read by
-- name when the SQL uses :name / @name / $name.  Statements used through
-- query/one/run are prepared once per connection and kept in a cache keyed
-- by the SQL text (the journal writes a row per step; re-preparing every
-- time would cost more than the write).  A cached statement is always reset
-- after use, so it never holds a read lock between calls.
--
-- Also passed through: exec, prepare (an uncached Stmt the caller owns and
-- closes), changes, last_insert_rowid, busy_timeout, close; `local db
-- <close> = sqlite.open(...)` closes it at the end of the scope.

local core = require("runbook.sqlite.core")

local M = {
  --- sqlite library version, e.g. "3.40.1"
  version = core.version,
  --- how long a busy database is retried before SQLITE_BUSY, unless opts say otherwise
  default_busy_timeout = 5000,
}

-- Distinct SQL texts kept per connection; past this the cache starts over
-- (dynamically built SQL must not grow it without bound).
local CACHE_MAX = 128

---@class runbook.sqlite.DB
---@field path string
local DB = {}
DB.__index = DB

--- Open a database file (":memory:" for a private in-memory one).
---@param path string
---@param opts? { readonly?: boolean, create?: boolean, busy_timeout?: integer }
---@return runbook.sqlite.DB|nil db, string? msg, string? code
function M.open(path, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.busy_timeout == nil then o.busy_timeout = M.default_busy_timeout end
  local h, msg, code = core.open(path, o)
  if not h then return nil, msg, code end
  return setmetatable({ path = path, _h = h, _cache = {}, _ncache = 0, _depth = 0 }, DB)
end

function DB:__tostring()
  return tostring(self._h)
end

--- A cached prepared statement for `sql`, or nil, msg, code.
function DB:_stmt(sql)
  local st = self._cache[sql]
  if st then return st end
  local msg, code
  st, msg, code = self._h:prepare(sql)
  if not st then return nil, msg, code end
  if self._ncache >= CACHE_MAX then
    for _, old in pairs(self._cache) do old:close() end
    self._cache, self._ncache = {}, 0
  end
  self._cache[sql] = st
  self._ncache = self._ncache + 1
  return st
end

--- Run one statement with its parameters; every row in an array.
---@param sql string
---@param ... any parameters (positional values, or one table of named ones)
---@return table[]|nil rows, string? msg, string? code
function DB:query(sql, ...)
  local st, msg, code = self:_stmt(sql)
  if not st then return nil, msg, code end
  st:bind(...)
  local rows, n = {}, 0
  while true do
    local row, emsg, ecode = st:step()
    if row then
      n = n + 1
      rows[n] = row
    elseif row == false then
      break
    else
      st:reset()
      return nil, emsg, ecode
    end
  end
  st:reset()
  return rows
end

--- The first row of a query, or nil when there is none.
---@param sql string
---@param ... any parameters
---@return table|nil row, string? msg, string? code
function DB:one(sql, ...)
  local st, msg, code = self:_stmt(sql)
  if not st then return nil, msg, code end
  st:bind(...)
  local row, emsg, ecode = st:step()
  st:reset()
  if row == nil then return nil, emsg, ecode end
  return row or nil
end

--- Run a statement to completion; the number of rows it changed (0 for a
--- statement that does not write).
---@param sql string
---@param ... any parameters
---@return integer|nil changes, string? msg, string? code
function DB:run(sql, ...)
  local st, msg, code = self:_stmt(sql)
  if not st then return nil, msg, code end
  st:bind(...)
  while true do
    local row, emsg, ecode = st:step()
    if row == false then break end
    if row == nil then
      st:reset()
      return nil, emsg, ecode
    end
  end
  local n = st:readonly() and 0 or self._h:changes()
  st:reset()
  return n
end

-- Undo the innermost transaction level.  Errors are ignored: sqlite may
-- already have rolled back by itself (SQLITE_FULL, SQLITE_IOERR, ...), and
-- the error worth reporting is the one that got us here.
local function undo(self, sp)
  if sp then
    self:run("ROLLBACK TO " .. sp)
    self:run("RELEASE " .. sp)
  else
    self:run("ROLLBACK")
  end
end

--- Run `fn(...)` inside a transaction: `BEGIN IMMEDIATE` (the write lock is
--- taken up front, so a busy database fails here, not half way), COMMIT when
--- fn returns.  If fn raises, everything it did is rolled back and the
--- error re-raised.  A call inside fn nests as a SAVEPOINT: its failure
--- undoes only its own part (if the outer fn catches the error).
--- Returns true and fn's results, or nil, msg, code when the transaction
--- could not start or commit (then nothing fn did remains).
---@param fn fun(...): ...
---@param ... any arguments for fn
---@return true|nil ok, any ...
function DB:transaction(fn, ...)
  local depth = self._depth
  local sp = depth > 0 and ("runbook_sp" .. depth) or nil
  local ok, msg, code = self:run(sp and ("SAVEPOINT " .. sp) or "BEGIN IMMEDIATE")
  if not ok then return nil, msg, code end
  self._depth = depth + 1
  local res = table.pack(pcall(fn, ...))
  self._depth = depth
  if not res[1] then
    undo(self, sp)
    error(res[2], 0)
  end
  ok, msg, code = self:run(sp and ("RELEASE " .. sp) or "COMMIT")
  if not ok then
    undo(self, sp)
    return nil, msg, code
  end
  return true, table.unpack(res, 2, res.n)
end

--- Run SQL text (several statements allowed, no parameters).
---@param sql string
---@return true|nil ok, string? msg, string? code
function DB:exec(sql)
  return self._h:exec(sql)
end

--- An uncached prepared statement (the caller closes it).
---@param sql string
---@return userdata|nil stmt, string? msg, string? code
function DB:prepare(sql)
  return self._h:prepare(sql)
end

--- Rows changed by the most recent write.
---@return integer
function DB:changes()
  return self._h:changes()
end

--- Rowid of the most recent INSERT on this connection.
---@return integer
function DB:last_insert_rowid()
  return self._h:last_insert_rowid()
end

--- Retry a locked database for up to `ms` milliseconds before SQLITE_BUSY.
---@param ms integer
---@return runbook.sqlite.DB
function DB:busy_timeout(ms)
  self._h:busy_timeout(ms)
  return self
end

--- Close the connection and every cached statement (idempotent).
---@return true
function DB:close()
  for _, st in pairs(self._cache) do st:close() end
  self._cache, self._ncache = {}, 0
  return self._h:close()
end

DB.__close = DB.close

return M
