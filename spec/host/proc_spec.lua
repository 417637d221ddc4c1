-- proc: running programs without a shell (runbook.proc.core and its face
-- runbook.proc): stdin bytes, captured and streamed output, exit codes and
-- signals, timeouts that take the whole process group down, background
-- processes, signal trapping and the process facts the engine records.
local core = require("runbook.proc.core")
local proc = require("runbook.proc")
local fs = require("runbook.fs.core")

local BIN = os.getenv("RUNBOOK_BIN") or "./runbook"
local FIX = "spec/fixtures/"

-- Every byte value, NULs included, in a scrambled order.
local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char((i * 167 + 13) % 256) end
  return table.concat(t)
end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(fs.mkdir_p(p, tonumber("700", 8)))
  return p
end

local function rmrf(dir)
  if dir and dir:match("^/tmp/") then core.run({ argv = { "rm", "-rf", dir }, timeout = 30 }) end
end

-- A killed process stays a zombie until its parent (init, for a
-- grandchild) reaps it; a zombie is gone for every purpose we care about.
local function zombie_or_gone(pid)
  if not core.alive(pid) then return true end
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return true end
  local s = f:read("a") or ""
  f:close()
  return s:match("^%d+ %b() (%a)") == "Z"
end

local function gone(pid)
  for _ = 1, 500 do -- bounded: up to ~5 s for init to reap
    if zombie_or_gone(pid) then return true end
    require("runbook.term.core").sleep(0.01)
  end
  return false
end

local function kv(out)
  local t = {}
  for k, v in out:gmatch("([%w_]+)=([^\n]*)") do t[k] = v end
  return t
end

describe("proc.run", function()
  it("captures stdout and stderr and reports the exit code", function()
    local r = assert(core.run({ argv = { "sh", "-c", "printf out; printf err >&2; exit 7" } }))
    assert.equals(7, r.code)
    assert.equals("out", r.stdout)
    assert.equals("err", r.stderr)
    assert.is_nil(r.signal)
    assert.is_false(r.timed_out)
    assert.is_true(math.type(r.pid) == "integer" and r.pid > 0)
  end)

  it("passes argv through untouched (no shell: spaces, quotes, globs stay literal)", function()
    local args = { "a b", "'q'", "*", "$HOME", "", "x\ty" }
    local r = assert(core.run({ argv = { "printf", "[%s]", table.unpack(args) } }))
    assert.equals("[a b]['q'][*][$HOME][][x\ty]", r.stdout)
  end)

  it("reports the signal that killed the child, with no code", function()
    local r = assert(core.run({ argv = { "sh", "-c", "kill -KILL $$" } }))
    assert.equals("KILL", r.signal)
    assert.is_nil(r.code)
    r = assert(core.run({ argv = { "sh", "-c", "kill -TERM $$" } }))
    assert.equals("TERM", r.signal)
  end)

  it("delivers stdin byte-exact, NULs included", function()
    local data = all_bytes() .. "\0\0end\0"
    local r = assert(core.run({ argv = { "cat" }, stdin = data }))
    assert.equals(0, r.code)
    assert.equals(#data, #r.stdout)
    assert.equals(data, r.stdout)
  end)

  it("delivers 1 MiB of stdin byte-exact", function()
    local data = all_bytes():rep(4096)
    assert.equals(1048576, #data)
    local r = assert(core.run({ argv = { "cat" }, stdin = data }))
    assert.equals(data, r.stdout)
  end)

  it("does not deadlock on a child that writes a lot and never reads its stdin", function()
    local r = assert(core.run({ argv = { "head", "-c", "5000000", "/dev/zero" },
      stdin = ("x"):rep(1048576), timeout = 60 }))
    assert.equals(0, r.code)
    assert.equals(5000000, #r.stdout)
    assert.is_false(r.timed_out)
  end)

  it("survives a child that exits without reading its stdin (no SIGPIPE death)", function()
    local r = assert(core.run({ argv = { "true" }, stdin = ("x"):rep(4 * 1048576) }))
    assert.equals(0, r.code)
    -- and we are still here to run another one
    assert.equals("ok", assert(core.run({ argv = { "printf", "ok" } })).stdout)
  end)

  it("gives the child an empty stdin when none is given", function()
    local r = assert(core.run({ argv = { "wc", "-c" } }))
    assert.equals("0", r.stdout:match("%d+"))
  end)

  it("returns nil, msg, ENOENT for a program that does not exist", function()
    local r, err, code = core.run({ argv = { "no-such-program-runbook-test" } })
    assert.is_nil(r)
    assert.equals("ENOENT", code)
    assert.matches("no%-such%-program%-runbook%-test", err)
    r, err, code = core.run({ argv = { "/nonexistent/dir/prog" } })
    assert.is_nil(r)
    assert.equals("ENOENT", code)
    assert.matches("/nonexistent/dir/prog", err, 1, true)
  end)

  it("returns EACCES for a file that is not executable", function()
    local dir = tmpdir()
    local f = dir .. "/script"
    assert(fs.write_atomic(f, "#!/bin/sh\necho hi\n", { mode = tonumber("644", 8) }))
    local r, _, code = core.run({ argv = { f } })
    rmrf(dir)
    assert.is_nil(r)
    assert.equals("EACCES", code)
  end)

  it("replaces the environment with env (PATH falls back to the system default)", function()
    local r = assert(core.run({ argv = { "env" }, env = { ONLY = "1", ["WITH_EQ"] = "a=b" } }))
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.sort(lines)
    assert.same({ "ONLY=1", "WITH_EQ=a=b" }, lines)
  end)

  it("adds to the inherited environment with env_add, false removes", function()
    local home = os.getenv("HOME")
    local r = assert(core.run({ argv = { "env" }, env_add = { RB_ADDED = "yes", HOME = false } }))
    assert.matches("\nRB_ADDED=yes\n", "\n" .. r.stdout, 1, true)
    assert.matches("\nPATH=", "\n" .. r.stdout, 1, true)
    if home then assert.not_matches("\nHOME=", "\n" .. r.stdout, 1, true) end
  end)

  it("finds the program on the PATH given in env", function()
    local dir = tmpdir()
    assert(fs.write_atomic(dir .. "/rb-only-here", "#!/bin/sh\necho found\n", { mode = tonumber("755", 8) }))
    local r = assert(core.run({ argv = { "rb-only-here" }, env_add = { PATH = dir .. ":/usr/bin:/bin" } }))
    local missing, _, code = core.run({ argv = { "rb-only-here" } })
    rmrf(dir)
    assert.equals("found\n", r.stdout)
    assert.is_nil(missing)
    assert.equals("ENOENT", code)
  end)

  it("raises on a malformed environment", function()
    assert.has_error(function() core.run({ argv = { "true" }, env = { ["A=B"] = "x" } }) end)
    assert.has_error(function() core.run({ argv = { "true" }, env_add = { A = "x\0y" } }) end)
    assert.has_error(function() core.run({ argv = { "true" }, env = "A=B" }) end)
  end)

  it("runs in cwd", function()
    local dir = tmpdir()
    local r = assert(core.run({ argv = { "pwd", "-P" }, cwd = dir }))
    local want = assert(core.run({ argv = { "realpath", dir } })).stdout
    rmrf(dir)
    assert.equals(want, r.stdout)
  end)

  it("returns ENOENT naming the cwd when it does not exist", function()
    local r, err, code = core.run({ argv = { "true" }, cwd = "/nonexistent-runbook-cwd" })
    assert.is_nil(r)
    assert.equals("ENOENT", code)
    assert.matches("cwd /nonexistent-runbook-cwd", err, 1, true)
  end)

  it("kills the whole process group on timeout, grandchildren included", function()
    local lines = {}
    local r = assert(core.run({
      argv = { "sh", "-c", "sleep 100 & echo $!; sleep 100" },
      timeout = 0.3,
      stdout = function(l) lines[#lines + 1] = l end,
    }))
    assert.is_true(r.timed_out)
    assert.equals("TERM", r.signal)
    local grandchild = tonumber(lines[1])
    assert.is_number(grandchild)
    assert.is_true(gone(r.pid), "the child is still running")
    assert.is_true(gone(grandchild), "the grandchild is still running")
  end)

  it("escalates to KILL when the group ignores TERM", function()
    local r = assert(core.run({ argv = { "sh", "-c", "trap '' TERM; sleep 100 & wait" },
      timeout = 0.2, grace = 0.2 }))
    assert.is_true(r.timed_out)
    assert.equals("KILL", r.signal)
    assert.is_true(gone(r.pid))
  end)

  it("returns when the child exits even if a background grandchild keeps the pipe", function()
    local lines = {}
    local r = assert(core.run({ argv = { "sh", "-c", "sleep 30 & echo $!; echo done" }, timeout = 20,
      stdout = function(l) lines[#lines + 1] = l end }))
    assert.equals(0, r.code)
    assert.is_false(r.timed_out)
    assert.equals("done", lines[2])
    -- not ours to kill once the child finished normally; clean up here
    core.run({ argv = { "kill", lines[1] } })
  end)

  it("streams lines to a function, the final partial line too", function()
    local out, err = {}, {}
    local r = assert(core.run({
      argv = { "sh", "-c", "printf 'a\\nb\\n\\nlast'; printf 'e1\\ne2\\n' >&2" },
      stdout = function(l) out[#out + 1] = l end,
      stderr = function(l) err[#err + 1] = l end,
    }))
    assert.equals(0, r.code)
    assert.same({ "a", "b", "", "last" }, out)
    assert.same({ "e1", "e2" }, err)
    assert.is_nil(r.stdout)
    assert.is_nil(r.stderr)
  end)

  it("keeps line bytes intact (NULs, CR) when streaming", function()
    local got = {}
    assert(core.run({ argv = { "cat" }, stdin = "x\0y\r\n\0\n", stdout = function(l) got[#got + 1] = l end }))
    assert.same({ "x\0y\r", "\0" }, got)
  end)

  it("propagates an error raised by the line function and stops the child", function()
    local pid
    local ok, err = pcall(core.run, {
      argv = { "sh", "-c", "echo $$; exec sleep 100" },
      timeout = 60,
      stdout = function(l)
        pid = tonumber(l)
        error("callback says no")
      end,
    })
    assert.is_false(ok)
    assert.matches("callback says no", tostring(err))
    assert.is_number(pid)
    assert.is_true(gone(pid))
  end)

  it("streams 100 MB with bounded memory #slow", function()
    local r = assert(core.run({ argv = { BIN, "exec", FIX .. "proc_stream.lua" }, timeout = 600 }))
    assert.equals(0, r.code, r.stderr)
    local t = kv(r.stdout:gsub(" ", "\n"))
    assert.equals("0", t.code)
    -- 41-byte lines: 2439024 whole ones and a final 16-byte partial line
    assert.equals("2439025", t.lines)
    assert.equals(tostring(2439024 * 40 + 16), t.chars)
    assert.equals("0123456789012345", t.last)
    assert.is_true(tonumber(t.hwm_kb) < 48 * 1024, "peak RSS " .. t.hwm_kb .. " kB")
  end)

  it("caps captured output at max_capture and says so", function()
    local r = assert(core.run({ argv = { "head", "-c", "300000", "/dev/zero" }, max_capture = 1000 }))
    assert.equals(0, r.code)
    assert.equals(1000, #r.stdout)
    assert.is_true(r.stdout_truncated)
    assert.is_nil(r.stderr_truncated)
    r = assert(core.run({ argv = { "printf", "abc" }, max_capture = 3 }))
    assert.equals("abc", r.stdout)
    assert.is_nil(r.stdout_truncated)
  end)

  it("discards with \"null\" and passes our own stdio through with \"inherit\"", function()
    local r = assert(core.run({ argv = { BIN, "exec", FIX .. "proc_inherit.lua" }, timeout = 60 }))
    assert.equals(0, r.code)
    assert.equals("to-stdout\n", r.stdout)
    assert.equals("to-stderr\n", r.stderr)
  end)

  it("does not let the child inherit our other file descriptors", function()
    local f = assert(io.open("/dev/null"))
    local r = assert(core.run({ argv = { "sh", "-c", "ls /proc/self/fd" } }))
    f:close()
    local fds = {}
    for n in r.stdout:gmatch("%d+") do fds[#fds + 1] = tonumber(n) end
    table.sort(fds)
    -- 0, 1, 2 and the fd ls itself opens to read the directory
    assert.is_true(#fds <= 4, "child fds: " .. r.stdout)
  end)

  it("raises on misuse: no argv, empty argv, unknown options, bad stream modes", function()
    assert.has_error(function() core.run({}) end)
    assert.has_error(function() core.run({ argv = {} }) end)
    assert.has_error(function() core.run({ argv = { "" } }) end)
    assert.has_error(function() core.run({ argv = { "true" }, shell = true }) end)
    assert.has_error(function() core.run({ argv = { "true" }, stdout = "file" }) end)
    assert.has_error(function() core.run({ argv = { "true" }, stdin = 42 }) end)
    assert.has_error(function() core.run({ argv = { "true" }, timeout = -1 }) end)
    assert.has_error(function() core.run({ argv = { "true" }, max_capture = 1.5 }) end)
    assert.has_error(function() core.run("true") end)
  end)
end)

describe("proc.run (face)", function()
  it("takes argv as the array part of the spec", function()
    local r = assert(proc.run({ "printf", "%s-%s", "a", "b" }))
    assert.equals("a-b", r.stdout)
  end)

  it("refuses argv given twice", function()
    assert.has_error(function() proc.run({ "true", argv = { "true" } }) end)
  end)

  it("applies a finite default timeout when none is given", function()
    local saved = proc.DEFAULT_TIMEOUT
    proc.DEFAULT_TIMEOUT = 0.2
    local ok, r = pcall(proc.run, { "sleep", "100" })
    proc.DEFAULT_TIMEOUT = saved
    assert.is_true(ok, r)
    assert.is_true(r.timed_out)
  end)

  it("runs without a limit only when timeout = math.huge is explicit", function()
    local saved = proc.DEFAULT_TIMEOUT
    proc.DEFAULT_TIMEOUT = 0
    local ok, r = pcall(proc.run, { "sh", "-c", "sleep 0.2; echo finished", timeout = math.huge })
    proc.DEFAULT_TIMEOUT = saved
    assert.is_true(ok, r)
    assert.is_false(r.timed_out)
    assert.equals("finished\n", r.stdout)
  end)

  it("passes expected failures through as nil, msg, code", function()
    local r, err, code = proc.run({ "no-such-program-runbook-test" })
    assert.is_nil(r)
    assert.is_string(err)
    assert.equals("ENOENT", code)
  end)
end)

describe("proc.which", function()
  it("finds a program on PATH", function()
    local p = proc.which("sh")
    assert.is_string(p)
    assert.matches("/sh$", p)
    assert.equals("file", fs.stat(p).type)
  end)

  it("returns nil for a missing program or a non-executable file", function()
    assert.is_nil(proc.which("no-such-program-runbook-test"))
    assert.is_nil(proc.which("passwd", "/etc"))
  end)

  it("searches the PATH it is given and takes a path with a slash as is", function()
    local sh = proc.which("sh")
    local dir = sh:match("^(.*)/sh$")
    assert.equals(dir .. "/sh", proc.which("sh", "/nonexistent:" .. dir))
    assert.is_nil(proc.which("sh", "/nonexistent"))
    assert.equals(sh, proc.which(sh))
    assert.is_nil(proc.which("/etc/passwd"))
  end)
end)

describe("proc.spawn", function()
  it("starts a background process: pid, running, wait with timeout, stop", function()
    local p = assert(core.spawn({ argv = { "sleep", "100" } }))
    assert.is_true(p:pid() > 0)
    assert.is_true(p:running())
    assert.is_true(core.alive(p:pid()))
    local r, err, code = p:wait(0.05)
    assert.is_nil(r)
    assert.equals("wait: timeout", err)
    assert.equals("TIMEOUT", code)
    local info = p:stop(5)
    assert.equals("TERM", info.signal)
    assert.is_false(p:running())
    assert.is_true(gone(p:pid()))
    p:close()
  end)

  it("waits for the exit code", function()
    local p = assert(proc.spawn({ "sh", "-c", "exit 4" }))
    local info = assert(p:wait(30))
    assert.equals(4, info.code)
    assert.is_false(info.timed_out)
    assert.equals(p:pid(), info.pid)
    assert.same(info, p:wait()) -- asking again gives the same answer
    p:close()
  end)

  it("sends kill to the whole group, by name or number", function()
    local dir = tmpdir()
    local pidfile = dir .. "/gc"
    local p = assert(core.spawn({ argv = { "sh", "-c", "sleep 100 & echo $! > " .. pidfile .. "; wait" } }))
    local gpid
    for _ = 1, 500 do
      local f = io.open(pidfile)
      if f then gpid = tonumber(f:read("a")) f:close() end
      if gpid then break end
      require("runbook.term.core").sleep(0.01)
    end
    assert.is_number(gpid)
    assert.is_true(p:kill("KILL"))
    assert.equals("KILL", assert(p:wait(30)).signal)
    assert.is_true(gone(gpid), "grandchild survived kill")
    local ok, _, code = p:kill(15)
    assert.is_nil(ok)
    assert.equals("ESRCH", code)
    assert.has_error(function() p:kill("NOSUCHSIG") end)
    p:close()
    rmrf(dir)
  end)

  it("writes stdout/stderr to files, truncating or appending", function()
    local dir = tmpdir()
    local out = dir .. "/out.log"
    assert(fs.write_atomic(out, "old contents\n"))
    local function once(append)
      local p = assert(core.spawn({ argv = { "sh", "-c", "echo line; echo oops >&2" },
        stdout = out, stderr = out, append = append }))
      assert(p:wait(30))
      p:close()
      return assert(fs.read(out))
    end
    local first, second = once(false), once(true)
    rmrf(dir)
    assert.equals("line\noops\n", first)
    assert.equals("line\noops\nline\noops\n", second)
  end)

  it("returns nil, msg, code when it cannot start or open its output", function()
    local p, _, code = core.spawn({ argv = { "no-such-program-runbook-test" } })
    assert.is_nil(p)
    assert.equals("ENOENT", code)
    p, _, code = core.spawn({ argv = { "true" }, stdout = "/nonexistent-dir/x.log" })
    assert.is_nil(p)
    assert.equals("ENOENT", code)
  end)

  it("stops the process when the handle is closed (<close>), and raises after", function()
    local pid, handle
    do
      local p <close> = assert(core.spawn({ argv = { "sleep", "100" } }))
      pid, handle = p:pid(), p
    end
    assert.is_true(gone(pid))
    assert.has_error(function() handle:pid() end, "attempt to use a closed process")
    assert.has_error(function() handle:wait() end)
    handle:close() -- idempotent
    assert.matches("closed", tostring(handle))
  end)

  it("raises on misuse", function()
    assert.has_error(function() core.spawn({ argv = { "true" }, stdin = "x" }) end)
    assert.has_error(function() core.spawn({ argv = { "true" }, stdout = 1 }) end)
    local p = assert(core.spawn({ argv = { "true" } }))
    assert.has_error(function() p:wait(-1) end)
    assert.has_error(function() p:stop(-1) end)
    p:close()
  end)
end)

describe("proc process facts", function()
  it("alive: this process yes, a reaped child no", function()
    assert.is_true(core.alive(core.getpid()))
    local r = assert(core.run({ argv = { "true" } }))
    assert.is_false(core.alive(r.pid))
    assert.has_error(function() core.alive(0) end)
  end)

  it("getpid matches the pid a child sees as its parent", function()
    local r = assert(core.run({ argv = { "sh", "-c", "echo $PPID" } }))
    assert.equals(core.getpid(), tonumber(r.stdout))
  end)

  it("hostname and user match hostname(1) and id -un", function()
    local h = assert(core.run({ argv = { "hostname" } })).stdout:gsub("%s+$", "")
    assert.equals(h, core.hostname())
    local u = assert(core.run({ argv = { "id", "-un" } })).stdout:gsub("%s+$", "")
    assert.equals(u, core.user())
  end)

  it("env returns this process's environment", function()
    local e = core.env()
    assert.equals(os.getenv("PATH"), e.PATH)
    local r = assert(core.run({ argv = { "env" } }))
    local n = 0
    for _ in pairs(e) do n = n + 1 end
    assert.equals(select(2, r.stdout:gsub("\n", "")), n)
  end)
end)

describe("proc signals", function()
  it("trap_signals turns INT/TERM into a flag that pending_signal takes once", function()
    local r = assert(core.run({ argv = { BIN, "exec", FIX .. "proc_signals.lua" }, timeout = 60 }))
    assert.equals(0, r.code, r.stderr)
    local t = kv(r.stdout)
    assert.equals("nil", t.before)
    assert.equals("true", t.trapped)
    assert.equals("INT", t.int)
    assert.equals("nil", t.cleared)
    assert.equals("false", t.sleep)        -- term.sleep returned early
    assert.equals("TERM", t.term)
    assert.equals("TERM", t.run_interrupted) -- run stopped its child
    assert.equals("false", t.run_timed_out)
    assert.equals("TERM", t.run_signal)
    assert.equals("TERM", t.still_pending)   -- and left the flag for the engine
    assert.equals("EINTR", t.wait)
    assert.equals("INT", t.wait_pending)
    assert.equals("EINTR", t.wait_late)
    assert.equals("INT", t.wait_late_pending)
    assert.equals("true", t.child_still_running)
  end)

  it("a second identical signal before the first is taken terminates", function()
    local r = assert(core.run({ argv = { BIN, "exec", FIX .. "proc_signals.lua", "force" }, timeout = 60 }))
    assert.equals("first=survived\n", r.stdout)
    assert.equals("INT", r.signal)
  end)
end)
