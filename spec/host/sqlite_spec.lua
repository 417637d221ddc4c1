-- sqlite: the core handles (runbook.sqlite.core: Db, Stmt) and the face
-- (runbook.sqlite: query/one/run, transactions, statement cache) against
-- real database files in a temporary directory.
local core = require("runbook.sqlite.core")
local sqlite = require("runbook.sqlite")

local tmpfiles = {}
local function tmpdb()
  local p = os.tmpname()
  os.remove(p)
  p = p .. ".db"
  tmpfiles[#tmpfiles + 1] = p
  return p
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

teardown(function()
  for _, p in ipairs(tmpfiles) do
    os.remove(p)
    os.remove(p .. "-journal")
    os.remove(p .. "-wal")
    os.remove(p .. "-shm")
  end
end)

-- every byte value, to prove blobs are binary-safe
local all_bytes = {}
for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char(255 - i) end
all_bytes = table.concat(all_bytes)

describe("sqlite core: open", function()
  it("opens :memory: and a file, creating it by default", function()
    local db = assert(core.open(":memory:"))
    assert.matches("^sqlite.Db %(:memory:%)$", tostring(db))
    db:close()
    local p = tmpdb()
    db = assert(core.open(p))
    assert.is_true(db:exec("CREATE TABLE t(x)"))
    db:close()
    assert.is_true(exists(p))
  end)

  it("create = false does not create a missing file: SQLITE_CANTOPEN", function()
    local p = tmpdb()
    local db, msg, code = core.open(p, { create = false })
    assert.is_nil(db)
    assert.equals("SQLITE_CANTOPEN", code)
    assert.equals("sqlite: " .. p .. ": unable to open database file", msg)
    assert.is_false(exists(p))
  end)

  it("a file in a missing directory: SQLITE_CANTOPEN", function()
    local db, msg, code = core.open("/nonexistent/dir/x.db")
    assert.is_nil(db)
    assert.matches("^sqlite: /nonexistent/dir/x.db: ", msg)
    assert.equals("SQLITE_CANTOPEN", code)
  end)

  it("readonly rejects writes with SQLITE_READONLY but reads", function()
    local p = tmpdb()
    local w = assert(core.open(p))
    assert(w:exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)"))
    w:close()
    local db = assert(core.open(p, { readonly = true }))
    local ok, msg, code = db:exec("INSERT INTO t VALUES (2)")
    assert.is_nil(ok)
    assert.equals("SQLITE_READONLY", code)
    assert.matches("^sqlite: INSERT INTO t VALUES %(2%): attempt to write a readonly database", msg)
    local st = assert(db:prepare("SELECT count(*) AS n FROM t"))
    assert.same({ n = 1 }, st:step())
    db:close()
  end)

  it("readonly open of a missing file: SQLITE_CANTOPEN", function()
    local _, _, code = core.open(tmpdb(), { readonly = true })
    assert.equals("SQLITE_CANTOPEN", code)
  end)

  it("a file that is not a database: SQLITE_NOTADB on first use", function()
    local p = tmpdb()
    write(p, ("this is not a database, just some garbage bytes\n"):rep(40))
    local db = assert(core.open(p))
    local ok, msg, code = db:exec("SELECT * FROM sqlite_master")
    assert.is_nil(ok)
    assert.equals("SQLITE_NOTADB", code)
    assert.matches("file is not a database", msg)
    db:close()
  end)

  it("persist_wal keeps the WAL file, emptied, when the last connection closes", function()
    local function wal_after_close(opts)
      local p = tmpdb()
      tmpfiles[#tmpfiles + 1] = p .. "-wal"
      tmpfiles[#tmpfiles + 1] = p .. "-shm"
      local db = assert(core.open(p, opts))
      assert(db:exec("PRAGMA journal_mode=WAL; PRAGMA journal_size_limit=0; CREATE TABLE t(x); INSERT INTO t VALUES (1)"))
      assert.is_true(exists(p .. "-wal"))
      db:close()
      local f = io.open(p .. "-wal", "rb")
      local size = f and f:seek("end")
      if f then f:close() end
      -- and the data reached the database itself
      local r = assert(core.open(p, { readonly = true }))
      assert.same({ n = 1 }, r:prepare("SELECT count(*) AS n FROM t"):step())
      r:close()
      return size
    end
    assert.is_nil(wal_after_close(nil))
    assert.equals(0, wal_after_close({ persist_wal = true }))
    assert.has_error(function() core.open(":memory:", { persist_wal = 1 }) end)
  end)

  it("raises on unknown options and bad option types", function()
    assert.has_error(function() core.open(":memory:", { bogus = true }) end)
    assert.has_error(function() core.open(":memory:", { readonly = "yes" }) end)
    assert.has_error(function() core.open(":memory:", { busy_timeout = -1 }) end)
    assert.has_error(function() core.open(":memory:", { busy_timeout = 1.5 }) end)
    assert.has_error(function() core.open(nil) end)
  end)
end)

describe("sqlite core: values", function()
  local db
  before_each(function()
    db = assert(core.open(":memory:"))
    assert(db:exec("CREATE TABLE t(k INTEGER PRIMARY KEY, v)"))
  end)
  after_each(function() db:close() end)

  local function roundtrip(value)
    local ins = assert(db:prepare("INSERT INTO t(v) VALUES (?)"))
    ins:bind(value)
    assert.is_false(ins:step())
    local id = db:last_insert_rowid()
    ins:close()
    local sel = assert(db:prepare("SELECT v, typeof(v) AS type FROM t WHERE k = ?"))
    sel:bind(id)
    local row = sel:step()
    sel:close()
    return row.v, row.type
  end

  it("integers come back as Lua integers, including the int64 extremes", function()
    for _, n in ipairs({ 0, -1, 42, math.maxinteger, math.mininteger }) do
      local v, ty = roundtrip(n)
      assert.equals("integer", ty)
      assert.equals(n, v)
      assert.equals("integer", math.type(v))
    end
  end)

  it("floats stay floats", function()
    for _, x in ipairs({ 1.5, -0.25, 3.0, 1e300 }) do
      local v, ty = roundtrip(x)
      assert.equals("real", ty)
      assert.equals(x, v)
      assert.equals("float", math.type(v))
    end
  end)

  it("strings are text, binary-safe", function()
    local v, ty = roundtrip("héllo\0world")
    assert.equals("text", ty)
    assert.equals("héllo\0world", v)
    assert.equals("", (roundtrip("")))
  end)

  it("{blob = s} is a blob and comes back byte for byte", function()
    local v, ty = roundtrip({ blob = all_bytes })
    assert.equals("blob", ty)
    assert.equals(all_bytes, v)
    v, ty = roundtrip({ blob = "" })
    assert.equals("blob", ty)
    assert.equals("", v)
  end)

  it("booleans are 0/1 and nil is NULL, absent from the row", function()
    assert.equals(1, (roundtrip(true)))
    assert.equals(0, (roundtrip(false)))
    local v, ty = roundtrip(nil)
    assert.is_nil(v)
    assert.equals("null", ty)
  end)

  it("raises on values with no SQL form", function()
    local st = assert(db:prepare("INSERT INTO t(v) VALUES (?)"))
    assert.has_error(function() st:bind(print) end)
    assert.has_error(function() st:bind({ 1, 2 }) end)
    assert.has_error(function() st:bind({ blob = 5 }) end)
    st:close()
  end)
end)

describe("sqlite core: statements", function()
  local db
  before_each(function()
    db = assert(core.open(":memory:"))
    assert(db:exec([[
      CREATE TABLE p(name TEXT UNIQUE, age INTEGER);
      INSERT INTO p VALUES ('ann', 30), ('bob', 40), ('cy', 50);
    ]]))
  end)
  after_each(function() db:close() end)

  it("binds named parameters in all three spellings from one table", function()
    local st = assert(db:prepare("SELECT :a AS a, @b AS b, $c AS c"))
    st:bind({ a = 1, b = "two", c = 3.5 })
    assert.same({ a = 1, b = "two", c = 3.5 }, st:step())
    st:bind({ a = 1 }) -- the others become NULL: absent
    assert.same({ a = 1 }, st:step())
    st:close()
  end)

  it("binds positionally, clears earlier bindings, and rejects too many", function()
    local st = assert(db:prepare("SELECT ? AS x, ? AS y"))
    st:bind(1, 2)
    assert.same({ x = 1, y = 2 }, st:step())
    st:bind(7)
    assert.same({ x = 7 }, st:step())
    assert.has_error(function() st:bind(1, 2, 3) end)
    st:close()
  end)

  it("named placeholders can also be bound by position", function()
    local st = assert(db:prepare("SELECT :a AS a, :b AS b"))
    st:bind(1, 2)
    assert.same({ a = 1, b = 2 }, st:step())
    st:close()
  end)

  it("steps through rows, then false", function()
    local st = assert(db:prepare("SELECT name FROM p WHERE age > ? ORDER BY age"))
    st:bind(35)
    assert.same({ name = "bob" }, st:step())
    assert.same({ name = "cy" }, st:step())
    assert.is_false(st:step())
    st:close()
  end)

  it("rows() iterates every row; reset() starts again", function()
    local st = assert(db:prepare("SELECT name, age FROM p ORDER BY age"))
    local names = {}
    for row in st:rows() do names[#names + 1] = row.name .. row.age end
    assert.same({ "ann30", "bob40", "cy50" }, names)
    assert.same({ name = "ann", age = 30 }, st:step())
    st:reset()
    assert.same({ name = "ann", age = 30 }, st:step())
    st:close()
  end)

  it("rows() raises on an error", function()
    local st = assert(db:prepare("SELECT abs(?) AS x"))
    st:bind(math.mininteger) -- abs(-2^63) overflows
    assert.has_error(function() for _ in st:rows() do end end, "sqlite: SELECT abs(?) AS x: integer overflow")
    st:close()
  end)

  it("readonly() is true for SELECT, false for INSERT", function()
    local sel = assert(db:prepare("SELECT * FROM p"))
    local ins = assert(db:prepare("INSERT INTO p VALUES (?, ?)"))
    assert.is_true(sel:readonly())
    assert.is_false(ins:readonly())
    sel:close()
    ins:close()
  end)

  it("columns() lists the result columns in order", function()
    local st = assert(db:prepare("SELECT age, name AS who, 1 FROM p"))
    assert.same({ "age", "who", "1" }, st:columns())
    st:close()
  end)

  it("changes() and last_insert_rowid() report the last write", function()
    assert(db:exec("UPDATE p SET age = age + 1 WHERE age < 45"))
    assert.equals(2, db:changes())
    local st = assert(db:prepare("INSERT INTO p VALUES ('dee', 60)"))
    assert.is_false(st:step())
    st:close()
    assert.equals(1, db:changes())
    assert.equals(4, db:last_insert_rowid())
  end)

  it("a constraint violation is SQLITE_CONSTRAINT and the message has no bound value", function()
    local st = assert(db:prepare("INSERT INTO p VALUES (?, ?)"))
    st:bind("ann", 99)
    local row, msg, code = st:step()
    assert.is_nil(row)
    assert.equals("SQLITE_CONSTRAINT", code)
    assert.equals("sqlite: INSERT INTO p VALUES (?, ?): UNIQUE constraint failed: p.name", msg)
    st:bind("s3cr3t-value", 1)
    assert.is_false(st:step())
    st:bind("s3cr3t-value", 2)
    msg = select(2, st:step())
    assert.is_nil(msg:find("s3cr3t", 1, true))
    st:close()
  end)

  it("exec and prepare report SQL errors as SQLITE_ERROR with the SQL start", function()
    local ok, msg, code = db:exec("SELECT * FROM missing_table")
    assert.is_nil(ok)
    assert.equals("SQLITE_ERROR", code)
    assert.equals("sqlite: SELECT * FROM missing_table: no such table: missing_table", msg)
    local st
    st, msg, code = db:prepare("SELEC\n   1")
    assert.is_nil(st)
    assert.equals("SQLITE_ERROR", code)
    assert.matches("^sqlite: SELEC 1: near \"SELEC\": syntax error", msg)
    local long = "SELECT " .. ("1 + "):rep(40) .. "nope"
    msg = select(2, db:exec(long))
    assert.matches("^sqlite: SELECT 1 %+ 1 [^:]*%.%.%.: no such column: nope$", msg)
  end)

  it("prepare raises on an empty statement or more than one", function()
    assert.has_error(function() db:prepare("  ;  ") end)
    assert.has_error(function() db:prepare("SELECT 1; SELECT 2") end)
    local st = assert(db:prepare("SELECT 1 AS one;  \n"))
    assert.same({ one = 1 }, st:step())
    st:close()
  end)
end)

describe("sqlite core: handles", function()
  it("a closed Db raises; close is idempotent", function()
    local db = assert(core.open(":memory:"))
    assert.is_true(db:close())
    assert.is_true(db:close())
    assert.equals("sqlite.Db (closed)", tostring(db))
    assert.has_error(function() db:exec("SELECT 1") end, "sqlite: attempt to use a closed database")
    assert.has_error(function() db:prepare("SELECT 1") end)
    assert.has_error(function() db:changes() end)
  end)

  it("a closed Stmt raises", function()
    local db = assert(core.open(":memory:"))
    local st = assert(db:prepare("SELECT 1"))
    st:close()
    st:close()
    assert.has_error(function() st:step() end, "sqlite: attempt to use a closed statement")
    assert.has_error(function() st:bind(1) end)
    db:close()
  end)

  it("a Stmt used after its Db closed raises instead of crashing", function()
    local db = assert(core.open(":memory:"))
    local st = assert(db:prepare("SELECT 1 AS x"))
    local st2 = assert(db:prepare("SELECT 2 AS x"))
    assert.same({ x = 1 }, st:step())
    db:close()
    assert.has_error(function() st:step() end,
      "sqlite: attempt to use a statement whose database was closed")
    assert.has_error(function() st2:readonly() end)
    assert.equals("sqlite.Stmt (closed)", tostring(st2))
    st:close() -- still fine
  end)

  it("a reachable Stmt keeps its Db open through garbage collection", function()
    local st
    do
      local db = assert(core.open(":memory:"))
      st = assert(db:prepare("SELECT 41 + 1 AS x"))
    end
    collectgarbage()
    collectgarbage()
    assert.same({ x = 42 }, st:step())
    st:close()
  end)

  it("local <close> closes the Db and its statements at scope end", function()
    local db_ref, st
    do
      local db <close> = assert(core.open(":memory:"))
      db_ref = db
      st = assert(db:prepare("SELECT 1"))
    end
    assert.equals("sqlite.Db (closed)", tostring(db_ref))
    assert.has_error(function() st:step() end)
  end)

  it("local <close> works for a Stmt", function()
    local db = assert(core.open(":memory:"))
    local ref
    do
      local st <close> = assert(db:prepare("SELECT 1"))
      ref = st
    end
    assert.has_error(function() ref:step() end, "sqlite: attempt to use a closed statement")
    db:close()
  end)

  it("db:busy_timeout(ms) takes a non-negative integer", function()
    local db = assert(core.open(":memory:"))
    assert.equals(db, db:busy_timeout(10))
    assert.has_error(function() db:busy_timeout(-5) end)
    db:close()
  end)
end)

describe("sqlite core: locking", function()
  it("a second connection gets SQLITE_BUSY while the first holds an exclusive lock", function()
    local p = tmpdb()
    local a = assert(core.open(p))
    assert(a:exec("CREATE TABLE t(x)"))
    local b = assert(core.open(p, { busy_timeout = 50 }))
    assert(a:exec("BEGIN EXCLUSIVE; INSERT INTO t VALUES (1)"))
    local ok, msg, code = b:exec("SELECT * FROM t")
    assert.is_nil(ok)
    assert.equals("SQLITE_BUSY", code)
    assert.equals("sqlite: SELECT * FROM t: database is locked", msg)
    assert(a:exec("COMMIT"))
    assert.is_true(b:exec("SELECT * FROM t"))
    a:close()
    b:close()
  end)
end)

describe("sqlite face", function()
  local db
  before_each(function()
    db = assert(sqlite.open(":memory:"))
    assert(db:exec("CREATE TABLE kv(k TEXT PRIMARY KEY, v)"))
  end)
  after_each(function() db:close() end)

  it("open returns nil, msg, code on failure and passes options through", function()
    local d, msg, code = sqlite.open(tmpdb(), { create = false })
    assert.is_nil(d)
    assert.matches("^sqlite: ", msg)
    assert.equals("SQLITE_CANTOPEN", code)
    assert.has_error(function() sqlite.open(":memory:", { nope = 1 }) end)
    assert.matches("^%d+%.%d+%.%d+", sqlite.version)
  end)

  it("run returns the number of changed rows, 0 for a read", function()
    assert.equals(1, db:run("INSERT INTO kv VALUES (?, ?)", "a", 1))
    assert.equals(1, db:run("INSERT INTO kv VALUES (:k, :v)", { k = "b", v = 2 }))
    assert.equals(2, db:run("UPDATE kv SET v = v * 10"))
    assert.equals(0, db:run("SELECT * FROM kv"))
    assert.equals(2, db:last_insert_rowid())
    assert.equals(2, db:changes())
  end)

  it("run, query and one return nil, msg, code on failure", function()
    db:run("INSERT INTO kv VALUES ('a', 1)")
    local n, msg, code = db:run("INSERT INTO kv VALUES (?, ?)", "a", "secret-xyz")
    assert.is_nil(n)
    assert.equals("SQLITE_CONSTRAINT", code)
    assert.is_nil(msg:find("secret-xyz", 1, true))
    local rows
    rows, msg, code = db:query("SELECT * FROM nowhere")
    assert.is_nil(rows)
    assert.equals("sqlite: SELECT * FROM nowhere: no such table: nowhere", msg)
    assert.equals("SQLITE_ERROR", code)
    code = select(3, db:one("SELECT abs(?)", math.mininteger))
    assert.equals("SQLITE_ERROR", code)
  end)

  it("query returns every row as an array; one the first row or nil", function()
    for i = 1, 3 do db:run("INSERT INTO kv VALUES (?, ?)", "k" .. i, i) end
    assert.same({ { k = "k2", v = 2 }, { k = "k3", v = 3 } },
      db:query("SELECT k, v FROM kv WHERE v >= ? ORDER BY v", 2))
    assert.same({}, db:query("SELECT k FROM kv WHERE v > 100"))
    assert.same({ k = "k1", v = 1 }, db:one("SELECT * FROM kv WHERE k = $k", { k = "k1" }))
    assert.is_nil(db:one("SELECT * FROM kv WHERE k = ?", "zz"))
  end)

  it("reuses one prepared statement per SQL text", function()
    local sql = "SELECT v FROM kv WHERE k = ?"
    db:one(sql, "a")
    local first = db._cache[sql]
    assert.is_not_nil(first)
    db:one(sql, "b")
    db:query(sql, "c")
    assert.equals(first, db._cache[sql])
  end)

  it("keeps the cache bounded and still answers correctly", function()
    for i = 1, 300 do
      assert.equals(i, db:one("SELECT " .. i .. " AS n").n)
    end
    assert.is_true(db._ncache <= 128)
    assert.equals(7, db:one("SELECT 7 AS n").n)
  end)

  it("cached statements do not hold locks between calls", function()
    local p = tmpdb()
    local a = assert(sqlite.open(p, { busy_timeout = 0 }))
    a:exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
    local b = assert(sqlite.open(p, { busy_timeout = 0 }))
    assert.same({ x = 1 }, a:one("SELECT x FROM t ORDER BY x"))
    assert.equals(1, b:run("INSERT INTO t VALUES (3)"))
    assert.is_true(b:exec("BEGIN EXCLUSIVE; COMMIT"))
    a:close()
    b:close()
  end)

  it("transaction commits and returns true plus fn's results", function()
    local ok, x, y = db:transaction(function(a, b)
      db:run("INSERT INTO kv VALUES ('t1', ?)", a)
      db:run("INSERT INTO kv VALUES ('t2', ?)", b)
      return a + b, "done"
    end, 1, 2)
    assert.is_true(ok)
    assert.equals(3, x)
    assert.equals("done", y)
    assert.equals(2, #db:query("SELECT * FROM kv"))
  end)

  it("transaction rolls back on error and re-raises the same error", function()
    local err = { reason = "boom" }
    local ok, got = pcall(db.transaction, db, function()
      db:run("INSERT INTO kv VALUES ('gone', 1)")
      error(err)
    end)
    assert.is_false(ok)
    assert.equals(err, got)
    assert.is_nil(db:one("SELECT * FROM kv WHERE k = 'gone'"))
    assert.has_error(function()
      db:transaction(function() error("plain message") end)
    end, "plain message")
    -- the connection is usable and outside any transaction afterwards
    assert.is_true((db:transaction(function() db:run("INSERT INTO kv VALUES ('kept', 1)") end)))
    assert.is_not_nil(db:one("SELECT * FROM kv WHERE k = 'kept'"))
  end)

  it("a nested transaction is a savepoint: its failure undoes only its part", function()
    assert.is_true((db:transaction(function()
      db:run("INSERT INTO kv VALUES ('outer', 1)")
      local ok = pcall(db.transaction, db, function()
        db:run("INSERT INTO kv VALUES ('inner', 1)")
        error("inner fails")
      end)
      assert.is_false(ok)
      assert.is_true((db:transaction(function()
        db:run("INSERT INTO kv VALUES ('inner2', 1)")
      end)))
    end)))
    local keys = {}
    for _, r in ipairs(db:query("SELECT k FROM kv ORDER BY k")) do keys[#keys + 1] = r.k end
    assert.same({ "inner2", "outer" }, keys)
  end)

  it("an error escaping nested levels rolls back everything", function()
    assert.has_error(function()
      db:transaction(function()
        db:run("INSERT INTO kv VALUES ('a', 1)")
        db:transaction(function()
          db:run("INSERT INTO kv VALUES ('b', 1)")
          error("deep")
        end)
      end)
    end, "deep")
    assert.same({}, db:query("SELECT * FROM kv"))
  end)

  it("transaction returns nil, msg, SQLITE_BUSY when another connection holds the lock", function()
    local p = tmpdb()
    local a = assert(sqlite.open(p))
    a:exec("CREATE TABLE t(x)")
    local b = assert(sqlite.open(p, { busy_timeout = 50 }))
    assert(a:exec("BEGIN IMMEDIATE"))
    local called = false
    local ok, msg, code = b:transaction(function() called = true end)
    assert.is_nil(ok)
    assert.equals("SQLITE_BUSY", code)
    assert.matches("database is locked", msg)
    assert.is_false(called)
    a:exec("ROLLBACK")
    assert.is_true((b:transaction(function() b:run("INSERT INTO t VALUES (1)") end)))
    assert.equals(1, a:one("SELECT count(*) AS n FROM t").n)
    a:close()
    b:close()
  end)

  it("prepare gives an uncached statement the caller owns", function()
    local st = assert(db:prepare("SELECT 5 AS five"))
    assert.same({ five = 5 }, st:step())
    st:close()
    assert.is_nil(db._cache["SELECT 5 AS five"])
  end)

  it("a closed face raises on use; close is idempotent", function()
    db:one("SELECT 1")
    db:close()
    db:close()
    assert.has_error(function() db:query("SELECT 1") end)
    assert.has_error(function() db:run("SELECT 1") end)
    assert.has_error(function() db:exec("SELECT 1") end)
  end)

  it("local <close> closes the face", function()
    local ref
    do
      local d <close> = assert(sqlite.open(":memory:"))
      ref = d
      d:one("SELECT 1")
    end
    assert.matches("closed", tostring(ref))
    assert.has_error(function() ref:one("SELECT 1") end)
  end)

  it("busy_timeout(ms) returns the db", function()
    assert.equals(db, db:busy_timeout(100))
  end)
end)
