-- fs: files the way a runbook must touch them (runbook.fs.core and its face
-- runbook.fs): atomic replacement that never leaves a half-written or
-- wrong-mode file, symlink refusal for secrets, listing and walking in a
-- stable order, and a lock another process cannot take.
local core = require("runbook.fs.core")
local fs = require("runbook.fs")
local proc = require("runbook.proc.core")

local BIN = os.getenv("RUNBOOK_BIN") or "./runbook"
local FIX = "spec/fixtures/"

local function oct(s) return tonumber(s, 8) end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(core.mkdir_p(p, oct("700")))
  return p
end

local function rmrf(dir)
  if dir and dir:match("^/tmp/") then proc.run({ argv = { "rm", "-rf", dir }, timeout = 30 }) end
end

local function sh(cmd)
  local r = assert(proc.run({ argv = { "sh", "-c", cmd }, timeout = 30 }))
  assert(r.code == 0, r.stderr)
  return r.stdout
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("fs", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() rmrf(dir) end)

  describe("read", function()
    it("returns the contents byte-exact", function()
      local data = "a\0b\r\n" .. ("z"):rep(200000)
      assert(core.write_atomic(dir .. "/f", data))
      assert.equals(data, core.read(dir .. "/f"))
      assert(core.write_atomic(dir .. "/empty", ""))
      assert.equals("", core.read(dir .. "/empty"))
    end)

    it("gives each file its own bytes, small after large, above and below the shared buffer's limit", function()
      -- files up to 1 MiB are read through one buffer kept between reads
      local sizes = { 3000, 2 * 1024 * 1024, 70000, 5, 1024 * 1024 - 1, 1024 * 1024 + 7, 17, 0, 40000 }
      local want = {}
      for i, n in ipairs(sizes) do
        local unit = string.char(96 + i) .. "\n"
        want[i] = unit:rep(n // 2) .. (n % 2 == 1 and "!" or "")
        assert(core.write_atomic(("%s/f%d"):format(dir, i), want[i]))
      end
      for _ = 1, 2 do
        for i = 1, #sizes do assert.equals(want[i], core.read(("%s/f%d"):format(dir, i)), "file " .. i) end
      end
    end)

    it("reads a file that is not a regular one (size 0 in stat) to its end", function()
      local s = assert(core.read("/proc/self/status"))
      assert.truthy(s:find("\nPid:", 1, true))
    end)

    it("reads a file whose size in stat is not what it holds (sysfs says 4096) to its end", function()
      local path = "/sys/devices/system/cpu/online"
      local f = io.open(path, "rb")
      if not f then return pending("no " .. path .. " here") end
      local want = f:read("a")
      f:close()
      assert.is_true(#want < 4096)
      assert.equals(want, core.read(path))
    end)

    it("returns nil, msg, ENOENT / EISDIR", function()
      local d, err, code = core.read(dir .. "/missing")
      assert.is_nil(d)
      assert.equals("ENOENT", code)
      assert.matches(dir .. "/missing", err, 1, true)
      d, err, code = core.read(dir)
      assert.is_nil(d)
      assert.equals("EISDIR", code)
      assert.is_string(err)
    end)

    it("follows a symlink unless nofollow, which refuses it with ELOOP", function()
      assert(core.write_atomic(dir .. "/target", "secret"))
      sh("ln -s target " .. q(dir .. "/link"))
      assert.equals("secret", core.read(dir .. "/link"))
      local d, _, code = core.read(dir .. "/link", { nofollow = true })
      assert.is_nil(d)
      assert.equals("ELOOP", code)
      assert.equals("secret", core.read(dir .. "/target", { nofollow = true }))
    end)

    it("raises on an unknown option", function()
      assert.has_error(function() core.read(dir .. "/x", { follow = false }) end)
    end)
  end)

  describe("write_atomic", function()
    it("creates a file with the contents and mode 0644 (0600 with nofollow)", function()
      assert.is_true(core.write_atomic(dir .. "/new", "hello\n"))
      assert.equals("hello\n", core.read(dir .. "/new"))
      assert.equals(oct("644"), core.stat(dir .. "/new").mode)
      assert(core.write_atomic(dir .. "/secret", "k", { nofollow = true }))
      assert.equals(oct("600"), core.stat(dir .. "/secret").mode)
    end)

    it("replaces the contents and keeps the old mode", function()
      local f = dir .. "/f"
      assert(core.write_atomic(f, "one"))
      assert(core.chmod(f, oct("640")))
      assert(core.write_atomic(f, "two, longer"))
      assert.equals("two, longer", core.read(f))
      assert.equals(oct("640"), core.stat(f).mode)
    end)

    it("applies a given mode over the old one", function()
      local f = dir .. "/f"
      assert(core.write_atomic(f, "one", { mode = oct("644") }))
      assert(core.write_atomic(f, "two", { mode = oct("600") }))
      assert.equals(oct("600"), core.stat(f).mode)
    end)

    it("leaves no temporary file behind", function()
      assert(core.write_atomic(dir .. "/f", "x"))
      assert(core.write_atomic(dir .. "/f", "y"))
      assert.same({ "f" }, core.list(dir))
    end)

    it("refuses a symlink with nofollow (ELOOP), leaving link and target alone", function()
      assert(core.write_atomic(dir .. "/target", "original"))
      sh("ln -s target " .. q(dir .. "/link"))
      local ok, err, code = core.write_atomic(dir .. "/link", "evil", { nofollow = true })
      assert.is_nil(ok)
      assert.equals("ELOOP", code)
      assert.matches("symbolic link", err)
      assert.equals("original", core.read(dir .. "/target"))
      assert.equals("link", core.stat(dir .. "/link", { nofollow = true }).type)
      assert.same({ "link", "target" }, core.list(dir))
    end)

    it("writes through a symlink without nofollow, keeping the link", function()
      assert(core.write_atomic(dir .. "/target", "original"))
      assert(core.chmod(dir .. "/target", oct("604")))
      sh("ln -s target " .. q(dir .. "/link"))
      assert(core.write_atomic(dir .. "/link", "updated"))
      assert.equals("updated", core.read(dir .. "/target"))
      assert.equals("link", core.stat(dir .. "/link", { nofollow = true }).type)
      assert.equals(oct("604"), core.stat(dir .. "/target").mode)
    end)

    it("fails with ENOENT in a missing directory and EISDIR on a directory", function()
      local ok, _, code = core.write_atomic(dir .. "/no/such/f", "x")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      ok, _, code = core.write_atomic(dir, "x")
      assert.is_nil(ok)
      assert.equals("EISDIR", code)
    end)

    it("keeps the old file byte-identical and removes the temp on EFBIG", function()
      local f = dir .. "/keep.txt"
      local old = "old contents\0 with a NUL\n"
      assert(core.write_atomic(f, old, { mode = oct("640") }))
      -- a child under a 25 kB file-size limit with SIGXFSZ ignored, so the
      -- write fails with EFBIG instead of killing the process
      local r = assert(proc.run({ argv = { "sh", "-c",
        "ulimit -f 50 && trap '' XFSZ && exec \"$0\" exec \"$1\" \"$2\"",
        BIN, FIX .. "fs_efbig.lua", f }, timeout = 60 }))
      assert.equals(0, r.code, r.stderr)
      assert.equals("nil EFBIG\n", r.stdout)
      assert.equals(old, core.read(f))
      assert.equals(oct("640"), core.stat(f).mode)
      assert.same({ "keep.txt" }, core.list(dir))
    end)

    it("raises on misuse", function()
      assert.has_error(function() core.write_atomic(dir .. "/f") end)
      assert.has_error(function() core.write_atomic(dir .. "/f", "x", { mode = oct("17777") }) end)
      assert.has_error(function() core.write_atomic(dir .. "/f", "x", { atomic = false }) end)
    end)
  end)

  describe("stat", function()
    it("describes files, directories and links", function()
      assert(core.write_atomic(dir .. "/f", "12345", { mode = oct("640") }))
      sh("ln -s f " .. q(dir .. "/l"))
      local st = assert(core.stat(dir .. "/f"))
      assert.equals("file", st.type)
      assert.equals(5, st.size)
      assert.equals(oct("640"), st.mode)
      assert.is_number(st.mtime)
      assert.is_true(math.abs(st.mtime - os.time()) < 600)
      assert.equals("integer", math.type(st.uid))
      assert.equals("dir", core.stat(dir).type)
      assert.equals("file", core.stat(dir .. "/l").type)
      assert.equals("link", core.stat(dir .. "/l", { nofollow = true }).type)
    end)

    it("returns nil, msg, ENOENT for a missing path", function()
      local st, err, code = core.stat(dir .. "/missing")
      assert.is_nil(st)
      assert.equals("ENOENT", code)
      assert.matches("missing", err)
    end)
  end)

  describe("chmod", function()
    it("changes the mode", function()
      assert(core.write_atomic(dir .. "/f", "x"))
      assert.is_true(core.chmod(dir .. "/f", oct("600")))
      assert.equals(oct("600"), core.stat(dir .. "/f").mode)
    end)

    it("returns ENOENT for a missing file and raises on a bad mode", function()
      local ok, _, code = core.chmod(dir .. "/missing", oct("600"))
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert.has_error(function() core.chmod(dir .. "/f", -1) end)
    end)
  end)

  describe("mkdir_p", function()
    it("creates every missing level with the mode, and accepts existing ones", function()
      local p = dir .. "/a/b//c/"
      assert.is_true(core.mkdir_p(p, oct("750")))
      assert.equals("dir", core.stat(dir .. "/a/b/c").type)
      assert.equals(oct("750"), core.stat(dir .. "/a/b/c").mode)
      assert.is_true(core.mkdir_p(p))
    end)

    it("fails with ENOTDIR when a file is in the way", function()
      assert(core.write_atomic(dir .. "/file", "x"))
      local ok, _, code = core.mkdir_p(dir .. "/file/sub")
      assert.is_nil(ok)
      assert.equals("ENOTDIR", code)
      ok, _, code = core.mkdir_p(dir .. "/file")
      assert.is_nil(ok)
      assert.equals("ENOTDIR", code)
    end)
  end)

  describe("list", function()
    it("returns the names sorted, without . and ..", function()
      for _, n in ipairs({ "b", "a", "C", ".hidden", "a.txt" }) do assert(core.write_atomic(dir .. "/" .. n, "")) end
      assert(core.mkdir_p(dir .. "/sub"))
      assert.same({ ".hidden", "C", "a", "a.txt", "b", "sub" }, core.list(dir))
    end)

    it("returns nil, msg, code for a missing directory or a file", function()
      local l, _, code = core.list(dir .. "/missing")
      assert.is_nil(l)
      assert.equals("ENOENT", code)
      assert(core.write_atomic(dir .. "/f", ""))
      l, _, code = core.list(dir .. "/f")
      assert.is_nil(l)
      assert.equals("ENOTDIR", code)
    end)
  end)

  describe("walk", function()
    before_each(function()
      for _, p in ipairs({ "z.txt", "a/b/deep.lua", "a/one.lua", "a.txt", "node_modules/pkg/index.js",
        "src/.git/HEAD", "src/main.lua" }) do
        assert(core.mkdir_p(fs.dirname(dir .. "/t/" .. p)))
        assert(core.write_atomic(dir .. "/t/" .. p, p))
      end
      assert(core.mkdir_p(dir .. "/outside/secret"))
      assert(core.write_atomic(dir .. "/outside/secret/key", "k"))
      sh("ln -s ../outside " .. q(dir .. "/t/linkdir") .. " && ln -s z.txt " .. q(dir .. "/t/linkfile"))
    end)

    it("returns sorted relative paths of files, listing symlinks without following them", function()
      assert.same({ "a.txt", "a/b/deep.lua", "a/one.lua", "linkdir", "linkfile",
        "node_modules/pkg/index.js", "src/.git/HEAD", "src/main.lua", "z.txt" }, core.walk(dir .. "/t"))
    end)

    it("does not enter directories named in skip, at any depth", function()
      assert.same({ "a.txt", "a/b/deep.lua", "a/one.lua", "linkdir", "linkfile", "src/main.lua", "z.txt" },
        core.walk(dir .. "/t", { skip = { "node_modules", ".git" } }))
    end)

    it("returns nil, msg, code for a missing root; raises on a bad skip", function()
      local w, _, code = core.walk(dir .. "/missing")
      assert.is_nil(w)
      assert.equals("ENOENT", code)
      assert.has_error(function() core.walk(dir, { skip = "node_modules" }) end)
      assert.has_error(function() core.walk(dir, { follow = true }) end)
    end)
  end)

  describe("remove", function()
    it("removes a file, a symlink (not its target) and an empty directory", function()
      assert(core.write_atomic(dir .. "/f", "x"))
      sh("ln -s f " .. q(dir .. "/l"))
      assert(core.mkdir_p(dir .. "/d"))
      assert.is_true(core.remove(dir .. "/l"))
      assert.equals("x", core.read(dir .. "/f"))
      assert.is_true(core.remove(dir .. "/f"))
      assert.is_true(core.remove(dir .. "/d"))
      assert.same({}, core.list(dir))
    end)

    it("returns ENOENT for a missing path and ENOTEMPTY for a full directory", function()
      local ok, _, code = core.remove(dir .. "/missing")
      assert.is_nil(ok)
      assert.equals("ENOENT", code)
      assert(core.mkdir_p(dir .. "/d"))
      assert(core.write_atomic(dir .. "/d/f", ""))
      ok, _, code = core.remove(dir .. "/d")
      assert.is_nil(ok)
      assert.equals("ENOTEMPTY", code)
    end)
  end)

  describe("lock", function()
    it("is exclusive against another process until unlocked", function()
      local path = dir .. "/run.lock"
      local lock = assert(core.lock(path))
      local r = assert(proc.run({ argv = { BIN, "exec", FIX .. "fs_lock.lua", "try", path }, timeout = 60 }))
      assert.equals("EWOULDBLOCK", r.stdout:match("^(%u+)\n"), r.stdout .. r.stderr)
      assert.matches("held by pid " .. proc.getpid(), r.stdout, 1, true)
      lock:unlock()
      r = assert(proc.run({ argv = { BIN, "exec", FIX .. "fs_lock.lua", "try", path }, timeout = 60 }))
      assert.equals("ok\n", r.stdout)
    end)

    it("reports EWOULDBLOCK while another process holds it, and waits for it", function()
      local path, ready = dir .. "/run.lock", dir .. "/ready"
      local holder = assert(proc.spawn({ argv = { BIN, "exec", FIX .. "fs_lock.lua", "hold", path, ready } }))
      for _ = 1, 1000 do
        if core.stat(ready) or not holder:running() then break end
        require("runbook.term.core").sleep(0.01)
      end
      assert.is_truthy(core.stat(ready), "the holder did not take the lock")
      local l, err, code = core.lock(path)
      assert.is_nil(l)
      assert.equals("EWOULDBLOCK", code)
      assert.matches("held by pid " .. holder:pid(), err, 1, true)
      l, err, code = core.lock(path, { wait = 0.05 })
      assert.is_nil(l)
      assert.equals("EWOULDBLOCK", code)
      assert.matches("after waiting", err, 1, true)
      holder:stop(5)
      holder:close()
      l = assert(core.lock(path, { wait = 10 }))
      l:unlock()
    end)

    it("is released by <close> and unlock is idempotent", function()
      local path = dir .. "/run.lock"
      do
        local l <close> = assert(core.lock(path))
        assert.matches("held", tostring(l))
        assert.is_nil((core.lock(path))) -- a second open file in this process conflicts too
      end
      local l = assert(core.lock(path, { wait = true }))
      l:unlock()
      l:unlock()
      assert.matches("released", tostring(l))
    end)

    it("returns nil, msg, code when the lock file cannot be created; raises on misuse", function()
      local l, _, code = core.lock(dir .. "/missing/run.lock")
      assert.is_nil(l)
      assert.equals("ENOENT", code)
      assert.has_error(function() core.lock(dir .. "/x.lock", { wait = "yes" }) end)
      assert.has_error(function() core.lock(dir .. "/x.lock", { timeout = 1 }) end)
    end)
  end)

  describe("getcwd", function()
    it("is the physical current directory", function()
      assert.equals(sh("pwd -P"), core.getcwd() .. "\n")
    end)
  end)

  describe("face", function()
    it("re-exports the core", function()
      for _, n in ipairs({ "read", "write_atomic", "stat", "chmod", "mkdir_p", "list", "walk", "remove", "lock", "getcwd" }) do
        assert.equals(core[n], fs[n], n)
      end
    end)

    it("read_all returns the contents or raises with the message and code", function()
      assert(core.write_atomic(dir .. "/f", "data"))
      assert.equals("data", fs.read_all(dir .. "/f"))
      local ok, err = pcall(fs.read_all, dir .. "/missing")
      assert.is_false(ok)
      assert.matches("missing: No such file or directory (ENOENT)", err, 1, true)
    end)

    it("exists follows symlinks", function()
      assert(core.write_atomic(dir .. "/f", ""))
      sh("ln -s f " .. q(dir .. "/good") .. " && ln -s nowhere " .. q(dir .. "/dangling"))
      assert.is_true(fs.exists(dir .. "/f"))
      assert.is_true(fs.exists(dir .. "/good"))
      assert.is_true(fs.exists(dir))
      assert.is_false(fs.exists(dir .. "/dangling"))
      assert.is_false(fs.exists(dir .. "/missing"))
    end)
  end)
end)

describe("fs path helpers", function()
  it("dirname behaves like dirname(1)", function()
    local cases = { ["a/b"] = "a", ["a/b/"] = "a", a = ".", ["/a"] = "/", ["/"] = "/", [""] = ".",
      ["/a/b/c"] = "/a/b", ["a//b"] = "a", ["//a"] = "/", ["./x"] = "." }
    for input, want in pairs(cases) do assert.equals(want, fs.dirname(input), input) end
  end)

  it("basename behaves like basename(1)", function()
    local cases = { ["a/b"] = "b", ["a/b/"] = "b", a = "a", ["/a"] = "a", ["/"] = "/", [""] = "",
      ["/a/b.lua"] = "b.lua" }
    for input, want in pairs(cases) do assert.equals(want, fs.basename(input), input) end
  end)

  it("join inserts single slashes, skips empty parts, restarts at an absolute part", function()
    assert.equals("a/b/c", fs.join("a", "b", "c"))
    assert.equals("a/b", fs.join("a/", "b"))
    assert.equals("a/b", fs.join("", "a", "", "b"))
    assert.equals("/etc/x", fs.join("a", "/etc", "x"))
    assert.equals("", fs.join())
    assert.has_error(function() fs.join("a", 1) end)
  end)
end)
