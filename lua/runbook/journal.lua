-- journal.lua — the run journal: one sqlite file (WAL) holding runs, steps,
-- context values, checkpoints, locks and notification dedup.
--
-- Everything written here has already been through redact.mask; secret
-- values are never stored (a resumed run reads them again from their
-- canonical place). A checkpoint is committed with synchronous=FULL so it is
-- on disk before the next page of work begins; step records use NORMAL
-- (they survive a killed process, which is what resume needs).

local cjson = require("cjson.safe")
local redact = require("runbook.redact")

local M = {}
local J = {}
J.__index = J

local SCHEMA_VERSION = 1
local SCHEMA = [[
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY, runbook TEXT NOT NULL, env TEXT NOT NULL, mode TEXT NOT NULL,
  params TEXT, status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
  user TEXT, host TEXT, pid INTEGER, exit_code INTEGER, error TEXT,
  failed_step INTEGER, resumes INTEGER NOT NULL DEFAULT 0, source TEXT);
CREATE INDEX IF NOT EXISTS runs_by_runbook ON runs(runbook, started_at);
CREATE TABLE IF NOT EXISTS steps(
  run_id TEXT NOT NULL, idx INTEGER NOT NULL, title TEXT NOT NULL, status TEXT NOT NULL,
  started_at REAL, ended_at REAL, output TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(run_id, idx));
CREATE TABLE IF NOT EXISTS run_values(
  run_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT, secret INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(run_id, key));
CREATE TABLE IF NOT EXISTS checkpoints(
  run_id TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, value TEXT,
  updated_at REAL NOT NULL, PRIMARY KEY(run_id, idx, key));
CREATE TABLE IF NOT EXISTS locks(
  runbook TEXT NOT NULL, env TEXT NOT NULL, run_id TEXT NOT NULL, pid INTEGER NOT NULL,
  host TEXT NOT NULL, started_at REAL NOT NULL, PRIMARY KEY(runbook, env));
CREATE TABLE IF NOT EXISTS notifications(
  key TEXT PRIMARY KEY, last_sent_at REAL NOT NULL, sent INTEGER NOT NULL DEFAULT 0,
  suppressed INTEGER NOT NULL DEFAULT 0);
]] .. ("PRAGMA user_version = %d;"):format(SCHEMA_VERSION)

local function now()
  return require("runbook.term.core").now()
end

---Default journal path: $RUNBOOK_JOURNAL, else the user's state dir.
function M.default_path()
  local p = os.getenv("RUNBOOK_JOURNAL")
  if p and p ~= "" then return p end
  local state = os.getenv("XDG_STATE_HOME")
  if not state or state == "" then
    state = (os.getenv("HOME") or "/tmp") .. "/.local/state"
  end
  return state .. "/runbook/journal.db"
end

---Open (creating if needed) a journal.
---@param path string|nil
---@return table|nil journal, string|nil err, string|nil code
function M.open(path)
  path = path or M.default_path()
  local fs = require("runbook.fs.core")
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    local ok, err, code = fs.mkdir_p(dir, tonumber("700", 8))
    if not ok then return nil, "journal " .. path .. ": " .. err, code end
  end
  local sqlite = require("runbook.sqlite.core")
  -- the -wal file is kept between runs (emptied at the last close: the
  -- journal_size_limit below), so a run does not create and unlink it
  local db, err, code = sqlite.open(path, { busy_timeout = 5000, persist_wal = true })
  if not db then return nil, "journal " .. path .. ": " .. err, code end
  local self = setmetatable({ db = db, path = path, stmts = {} }, J)
  -- a file that is not a database (or not ours) is refused, never rewritten
  local ok
  ok, err, code = db:exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=1048576;")
  -- a journal already at this schema is not written to on open (parsing
  -- the schema and a write transaction are most of what opening costs)
  local version
  if ok then
    local st = db:prepare("PRAGMA user_version")
    if st then
      local row = st:step()
      version = row and row.user_version
      st:close()
    end
  end
  if ok and version ~= SCHEMA_VERSION then ok, err, code = db:exec("BEGIN IMMEDIATE;" .. SCHEMA .. "COMMIT;") end
  if not ok then
    db:exec("ROLLBACK")
    db:close()
    if code == "SQLITE_NOTADB" then
      err = "is not a runbook journal (not a sqlite database); it was left untouched — pass --journal to use another file"
    end
    return nil, "journal " .. path .. ": " .. err, code
  end
  return self
end

function J:close()
  for _, st in pairs(self.stmts) do st:close() end
  self.stmts = {}
  if self.db then self.db:close() end
  self.db = nil
end

-- Prepared statements are cached by SQL text: a step costs a handful of
-- binds and steps, not parses.
function J:stmt(sql)
  local st = self.stmts[sql]
  if not st then
    local err, code
    st, err, code = self.db:prepare(sql)
    if not st then error(("journal %s: %s (%s)"):format(self.path, err, code), 0) end
    self.stmts[sql] = st
  end
  return st
end

-- Run one statement to completion; returns the rows.
function J:q(sql, ...)
  local st = self:stmt(sql)
  st:reset()
  if select("#", ...) > 0 then st:bind(...) end
  local rows = {}
  while true do
    local row, err, code = st:step()
    if row == false then break end
    if row == nil then
      st:reset()
      error(("journal %s: %s (%s)"):format(self.path, err, code), 0)
    end
    rows[#rows + 1] = row
  end
  st:reset()
  return rows
end

function J:tx(fn, ...)
  local ok, err, code = self.db:exec("BEGIN IMMEDIATE")
  if not ok then error(("journal %s: %s (%s)"):format(self.path, err, code), 0) end
  local res = table.pack(pcall(fn, ...))
  if res[1] then
    ok, err, code = self.db:exec("COMMIT")
    if not ok then
      self.db:exec("ROLLBACK")
      error(("journal %s: %s (%s)"):format(self.path, err, code), 0)
    end
    return table.unpack(res, 2, res.n)
  end
  self.db:exec("ROLLBACK")
  error(res[2], 0)
end

local function enc(v)
  local s = cjson.encode(v)
  return s
end

-- JSON has one number type; a whole number comes back as an integer so a
-- resumed cursor is 3, not 3.0 (which would print as "3.0" in a key).
local function normalize(v, depth)
  if type(v) == "number" then return math.tointeger(v) or v end
  if v == cjson.null then return nil end
  if type(v) == "table" and depth < 64 then
    for k, x in pairs(v) do v[k] = normalize(x, depth + 1) end
  end
  return v
end

local function dec(s)
  if s == nil then return nil end
  return normalize(cjson.decode(s), 0)
end

---A fresh run id: date-time plus 4 random hex digits.
function M.new_id()
  local f = io.open("/dev/urandom", "rb")
  local r = f and f:read(2) or tostring(os.clock())
  if f then f:close() end
  return os.date("!%Y%m%d-%H%M%S") .. "-" .. ("%02x%02x"):format(r:byte(1, 2))
end

---Take the lock for runbook+env. Returns true, takeover_info|nil, or
---nil, holder_row when a live process holds it.
function J:lock(runbook, env, run_id, pid, host)
  local proc = require("runbook.proc.core")
  return self:tx(function()
    local held = self:q("SELECT run_id, pid, host, started_at FROM locks WHERE runbook=? AND env=?",
      runbook, env)[1]
    local took_over
    if held then
      if held.run_id == run_id then
        took_over = nil
      elseif held.host == host and not proc.alive(held.pid) then
        took_over = held
      elseif held.host ~= host then
        return nil, held
      else
        return nil, held
      end
    end
    self:q("INSERT OR REPLACE INTO locks(runbook, env, run_id, pid, host, started_at) VALUES(?,?,?,?,?,?)",
      runbook, env, run_id, pid, host, now())
    return true, took_over
  end)
end

function J:unlock(runbook, env, run_id)
  self:q("DELETE FROM locks WHERE runbook=? AND env=? AND run_id=?", runbook, env, run_id)
end

function J:begin_run(r)
  self:q([[INSERT INTO runs(id, runbook, env, mode, params, status, started_at, user, host, pid, source)
    VALUES(?,?,?,?,?,'running',?,?,?,?,?)]],
    r.id, r.runbook, r.env, r.mode, enc(redact.mask_deep(r.params or {})), now(),
    r.user, r.host, r.pid, r.source)
end

function J:resume_run(id, pid)
  self:q("UPDATE runs SET status='running', ended_at=NULL, exit_code=NULL, error=NULL, pid=?, resumes=resumes+1 WHERE id=?",
    pid, id)
end

function J:end_run(id, status, exit_code, err, failed_step)
  self:q("UPDATE runs SET status=?, ended_at=?, exit_code=?, error=?, failed_step=? WHERE id=?",
    status, now(), exit_code, redact.mask(err), failed_step, id)
end

function J:step_start(run_id, idx, title)
  self:q([[INSERT INTO steps(run_id, idx, title, status, started_at, attempts) VALUES(?,?,?,'running',?,1)
    ON CONFLICT(run_id, idx) DO UPDATE SET status='running', started_at=excluded.started_at,
    ended_at=NULL, error=NULL, attempts=attempts+1]], run_id, idx, redact.mask(title), now())
end

function J:step_end(run_id, idx, status, output, err)
  self:q("UPDATE steps SET status=?, ended_at=?, output=?, error=? WHERE run_id=? AND idx=?",
    status, now(), redact.mask(output), redact.mask(err), run_id, idx)
end

---Store a context value; a value holding a secret is stored only as a marker.
function J:set_value(run_id, key, value)
  local s = enc(value)
  local secret = s == nil or redact.mask(s) ~= s
  self:q("INSERT OR REPLACE INTO run_values(run_id, key, value, secret) VALUES(?,?,?,?)",
    run_id, key, (not secret) and s or nil, secret and 1 or 0)
end

---@return table values, table secret_keys
function J:values(run_id)
  local vals, secrets = {}, {}
  for _, r in ipairs(self:q("SELECT key, value, secret FROM run_values WHERE run_id=?", run_id)) do
    if r.secret == 1 then secrets[r.key] = true else vals[r.key] = dec(r.value) end
  end
  return vals, secrets
end

---Durable checkpoint: on disk (fsync'd WAL) when this returns.
function J:checkpoint(run_id, idx, key, value)
  local s = enc(value)
  if s and redact.mask(s) ~= s then
    error("checkpoint '" .. key .. "' holds a secret; checkpoints are journaled, secrets never are", 0)
  end
  self.db:exec("PRAGMA synchronous=FULL")
  self:q("INSERT OR REPLACE INTO checkpoints(run_id, idx, key, value, updated_at) VALUES(?,?,?,?,?)",
    run_id, idx, key, s, now())
  self.db:exec("PRAGMA synchronous=NORMAL")
end

function J:checkpoints(run_id, idx)
  local out = {}
  for _, r in ipairs(self:q("SELECT key, value FROM checkpoints WHERE run_id=? AND idx=?", run_id, idx)) do
    out[r.key] = dec(r.value)
  end
  return out
end

function J:run(id)
  local r = self:q("SELECT * FROM runs WHERE id=?", id)[1]
  if r then r.params = dec(r.params) end
  return r
end

function J:steps(id)
  return self:q("SELECT * FROM steps WHERE run_id=? ORDER BY idx", id)
end

function J:history(runbook, limit)
  if runbook then
    return self:q("SELECT * FROM runs WHERE runbook=? ORDER BY started_at DESC LIMIT ?", runbook, limit or 20)
  end
  return self:q("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", limit or 20)
end

---Notification dedup: may a message with this key be sent now?
---Records the send (or the suppression) in the same transaction; the third
---result is the previous send time, for notify_release.
---@return boolean send, number|nil seconds_until_allowed, number|nil previous_sent_at
function J:notify_gate(key, min_interval, at)
  at = at or now()
  return self:tx(function()
    local r = self:q("SELECT last_sent_at FROM notifications WHERE key=?", key)[1]
    if r and at - r.last_sent_at < min_interval then
      self:q("UPDATE notifications SET suppressed=suppressed+1 WHERE key=?", key)
      return false, min_interval - (at - r.last_sent_at)
    end
    self:q([[INSERT INTO notifications(key, last_sent_at, sent) VALUES(?,?,1)
      ON CONFLICT(key) DO UPDATE SET last_sent_at=excluded.last_sent_at, sent=sent+1]], key, at)
    return true, nil, r and r.last_sent_at or nil
  end)
end

---Give back a send taken by notify_gate when the message was not delivered
---(the channel was down): the next attempt is not suppressed because of it.
---@param previous number|nil  notify_gate's third result
function J:notify_release(key, previous)
  return self:tx(function()
    if previous then
      self:q("UPDATE notifications SET last_sent_at=?, sent=sent-1 WHERE key=?", previous, key)
    else
      self:q("DELETE FROM notifications WHERE key=?", key)
    end
    return true
  end)
end

return M
