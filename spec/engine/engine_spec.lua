-- The engine as an operator meets it: through the `runbook` command.
local cli = require("cli")
local cjson = require("cjson")

local function journal_of(dir) return dir .. "/journal.db" end

local function history(j)
  local r = cli.run({ "history", "--json", "--journal", j })
  local rows = {}
  for line in r.stdout:gmatch("[^\n]+") do rows[#rows + 1] = cjson.decode(line) end
  return rows
end

local function lines(path)
  local n, t = 0, {}
  for l in (cli.slurp(path) or ""):gmatch("[^\n]+") do n = n + 1 t[#t + 1] = l end
  return n, t
end

-- wait (bounded) until fn() is true
local function wait_for(fn, seconds)
  local term = require("runbook.term.core")
  local t_end = term.monotonic() + (seconds or 10)
  while term.monotonic() < t_end do
    if fn() then return true end
    term.sleep(0.02)
  end
  return false
end

describe("engine", function()
  local dir
  before_each(function() dir = cli.tmpdir() end)
  after_each(function() cli.rmrf(dir) end)

  it("refuses a missing parameter before any step runs, naming it", function()
    local r = cli.run({ "run", "steps3", "--journal", journal_of(dir) })
    assert.equals(2, r.code)
    assert.matches("missing parameter 'dir'", r.stderr .. r.stdout)
    assert.is_false(cli.exists(dir .. "/first"))
    assert.equals(0, #history(journal_of(dir)))
  end)

  it("refuses an unknown runbook and an unknown environment with usage exit 2", function()
    local r = cli.run({ "run", "no-such-runbook" })
    assert.equals(2, r.code)
    assert.matches("no runbook named 'no%-such%-runbook'", r.stderr)
    r = cli.run({ "run", "steps3", "--env", "mars", "-p", "dir=" .. dir, "--journal", journal_of(dir) })
    assert.equals(2, r.code)
    assert.matches("unknown environment 'mars'", r.stderr .. r.stdout)
  end)

  it("stops at a failed step with its hint and resume command; resume skips done steps", function()
    local j = journal_of(dir)
    cli.slurp(dir) -- no-op: dir exists
    assert(io.open(dir .. "/fail", "w")):close()
    local r = cli.run({ "run", "steps3", "-p", "dir=" .. dir, "--journal", j, "--junit", dir .. "/1.xml" })
    assert.equals(1, r.code)
    assert.matches("flag file .*/fail is present", r.stdout)
    -- JUnit: every step is a testcase, the one never reached too
    local x = cli.slurp(dir .. "/1.xml")
    assert.matches('tests="3" failures="1" errors="0" skipped="1"', x)
    assert.matches('name="03 [^"]*"[^>]*>%s*<skipped message="not reached: the run stopped at step 2"/>', x)
    assert.matches("remove the fail file and resume", r.stdout)
    local run_id = r.stdout:match("runbook resume (%d+%-%d+%-%x+)")
    assert.is_truthy(run_id)
    assert.equals("1", cli.slurp(dir .. "/first"))
    assert.is_false(cli.exists(dir .. "/done"))

    os.remove(dir .. "/fail")
    r = cli.run({ "resume", run_id, "--journal", j, "--junit", dir .. "/2.xml" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    x = cli.slurp(dir .. "/2.xml")
    assert.matches('tests="3" failures="0" errors="0" skipped="1"', x)
    assert.matches('name="01 [^"]*"[^>]*>%s*<skipped message="done in an earlier attempt of this run"/>', x)
    assert.equals("1", cli.slurp(dir .. "/first"))   -- step 1 not re-run
    assert.equals("2", cli.slurp(dir .. "/second"))  -- step 2 re-run once
    assert.equals("yes", cli.slurp(dir .. "/done"))
    local h = history(j)
    assert.equals(1, #h)
    assert.equals("ok", h[1].status)
    local log = cli.run({ "log", run_id, "--journal", j })
    assert.matches("%[1%] ok", log.stdout)
    assert.matches("%[3%] ok", log.stdout)
  end)

  it("resumes after SIGKILL mid-step from the last durable checkpoint", function()
    local j = journal_of(dir)
    local proc = require("runbook.proc.core")
    local p = assert(proc.spawn({ argv = { cli.bin, "run", "pages", "-p", "dir=" .. dir, "-p", "pages=40",
      "-p", "delay=0.03", "--journal", j }, env_add = { RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks" },
      stdout = "null", stderr = "null" }))
    assert.is_true(wait_for(function() return lines(dir .. "/log") >= 6 end, 20))
    p:kill("KILL")
    p:wait(10)
    local before = lines(dir .. "/log")
    assert.is_true(before < 40)
    local h = history(j)
    -- killed, it never got to say otherwise; its process is gone, so history
    -- and log say it died and how to continue
    assert.equals("died", h[1].status)
    assert.is_true(h[1].process_gone)
    local table_out = cli.run({ "history", "--journal", j }).stdout
    local id = h[1].id:gsub("%p", "%%%0")
    assert.matches("\n" .. id .. "%s+pages%s+%S+%s+run%s+died ", table_out)
    local log = cli.run({ "log", h[1].id, "--journal", j }).stdout
    assert.matches(" — died\n", log)
    assert.matches("is gone without ending the run: `runbook resume " .. id .. " %-%-journal " ..
      j:gsub("%p", "%%%0") .. "` continues it", log)
    local r = cli.run({ "resume", h[1].id, "--journal", j })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local n, seen = lines(dir .. "/log")
    local count = {}
    for _, l in ipairs(seen) do count[l] = (count[l] or 0) + 1 end
    for page = 1, 40 do
      assert.is_true(cli.exists(dir .. "/page-" .. page), "page " .. page)
      assert.is_true((count[tostring(page)] or 0) >= 1)
    end
    -- at most the page in flight when killed is done twice
    assert.is_true(n <= 41, "pages processed " .. n .. " times")
  end)

  it("stops cleanly on SIGINT, journals interrupted, exits 4, and resumes", function()
    local j = journal_of(dir)
    local proc = require("runbook.proc.core")
    local out = dir .. "/out.txt"
    local p = assert(proc.spawn({ argv = { cli.bin, "run", "pages", "-p", "dir=" .. dir, "-p", "pages=200",
      "-p", "delay=0.02", "--journal", j }, env_add = { RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks",
      NO_COLOR = "1" }, stdout = out, stderr = out }))
    assert.is_true(wait_for(function() return lines(dir .. "/log") >= 3 end, 20))
    p:kill("INT")
    local res = p:wait(10)
    assert.equals(4, res.code)
    assert.matches("runbook resume", cli.slurp(out))
    local h = history(j)
    assert.equals("interrupted", h[1].status)
    local r = cli.run({ "resume", h[1].id, "--journal", j })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.is_true(cli.exists(dir .. "/page-200"))
  end)

  it("refuses a second live run with the holder's id and pid; takes over a dead holder's lock", function()
    local j = journal_of(dir)
    local proc = require("runbook.proc.core")
    local p = assert(proc.spawn({ argv = { cli.bin, "run", "pages", "-p", "dir=" .. dir, "-p", "pages=500",
      "-p", "delay=0.05", "--journal", j }, env_add = { RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks" },
      stdout = "null", stderr = "null" }))
    assert.is_true(wait_for(function() return lines(dir .. "/log") >= 1 end, 20))
    local r = cli.run({ "run", "pages", "-p", "dir=" .. dir, "--journal", j })
    assert.equals(3, r.code)
    local first = history(j)[1]
    assert.matches("already running: run " .. first.id:gsub("%-", "%%-") .. ", pid " .. p:pid(), r.stderr .. r.stdout)
    p:kill("KILL")
    p:wait(10)
    local dir2 = cli.tmpdir()
    r = cli.run({ "run", "pages", "-p", "dir=" .. dir2, "-p", "pages=2", "-p", "delay=0", "--journal", j })
    cli.rmrf(dir2)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("took over the lock of run " .. first.id:gsub("%-", "%%-"), r.stdout)
  end)

  it("asks before touching a protected environment and stops without a terminal or --yes", function()
    local pf = dir .. "/runbook.lua"
    local f = assert(io.open(pf, "w"))
    f:write('return { default_env = "prod", environments = { prod = { url = "http://127.0.0.1:9", protected = true } } }')
    f:close()
    local r = cli.run({ "run", "steps3", "-p", "dir=" .. dir, "--journal", journal_of(dir) },
      { env_add = { RUNBOOK_PROJECT = pf } })
    assert.equals(5, r.code)
    assert.matches("%-%-yes", r.stdout .. r.stderr)
    assert.is_false(cli.exists(dir .. "/first"))
    r = cli.run({ "run", "steps3", "-p", "dir=" .. dir, "--yes", "--journal", journal_of(dir) },
      { env_add = { RUNBOOK_PROJECT = pf } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
  end)

  it("runbook show follows edits to a runbook and to a module it requires, whatever it cached", function()
    local rbdir, cache = dir .. "/rb", dir .. "/cache"
    assert(require("runbook.fs").mkdir_p(rbdir, tonumber("700", 8)))
    local function write(path, text) local f = assert(io.open(path, "w")); f:write(text); f:close() end
    local function put(title)
      write(rbdir .. "/mine.lua", ('package.path = %q .. "/?.lua;" .. package.path\n'):format(rbdir)
        .. 'local rb = require("runbook")\nlocal helper = require("minehelper")\n'
        .. ('return rb.runbook { name = "mine", summary = "s", steps = {\n'
        .. '  rb.step(%q) { run = function() end, no_verify = "spec", hint = helper.hint } } }\n'):format(title))
    end
    local function show()
      return cli.run({ "show", "mine" }, { env_add = { RUNBOOK_PATH = rbdir, XDG_CACHE_HOME = cache } })
    end
    write(rbdir .. "/minehelper.lua", 'return { hint = "first hint" }\n')
    put("First title")
    local r = show()
    assert.equals(0, r.code, r.stderr)
    assert.matches("First title", r.stdout)
    assert.matches("if it fails: first hint", r.stdout)
    assert.equals(r.stdout, show().stdout)
    local files = require("runbook.fs").list(cache .. "/runbook/show")
    assert.equals(1, #files)
    -- the second show came from the cache: doctor the cached text and see it
    local cfile = cache .. "/runbook/show/" .. files[1]
    local data = cli.slurp(cfile)
    local head = data:sub(1, data:find("\n\n", 1, true) + 1)
    write(cfile, head .. "CACHED TEXT\n")
    assert.equals("CACHED TEXT\n", show().stdout)
    write(cfile, head .. r.stdout)
    -- a damaged cache entry (here a directory in its place) is ignored
    os.remove(cfile)
    assert(require("runbook.fs").mkdir_p(cfile, tonumber("700", 8)))
    local d = show()
    assert.equals(0, d.code, d.stderr)
    assert.equals(r.stdout, d.stdout)
    os.remove(cfile)
    put("A longer second title")
    assert.matches("A longer second title", show().stdout)
    write(rbdir .. "/minehelper.lua", 'return { hint = "a changed, longer hint" }\n')
    assert.matches("if it fails: a changed, longer hint", show().stdout)
  end)

  it("a read-only runbook needs no confirmation on a protected environment, and any write it tries fails", function()
    local pf = dir .. "/runbook.lua"
    local f = assert(io.open(pf, "w"))
    f:write('return { default_env = "prod", environments = { prod = { url = "http://127.0.0.1:9", protected = true } } }')
    f:close()
    f = assert(io.open(dir .. "/in", "w")); f:write("data"); f:close()
    local r = cli.run({ "run", "readonly", "-p", "dir=" .. dir, "--journal", journal_of(dir) },
      { env_add = { RUNBOOK_PROJECT = pf } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("read%-only %(any write fails%), so no confirmation is asked", r.stdout)
    for _, mode in ipairs({ {}, { "--dry-run" } }) do
      local args = { "run", "readonly", "-p", "dir=" .. dir, "-p", "write=true", "--journal", journal_of(dir) }
      for _, m in ipairs(mode) do args[#args + 1] = m end
      r = cli.run(args, { env_add = { RUNBOOK_PROJECT = pf } })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("read%-only runbook refused a write: write .*/out", r.stdout)
      assert.is_false(cli.exists(dir .. "/out"))
    end
  end)

  it("--offline performs no writes and needs no network", function()
    local log = dir .. "/record.log"
    local r = cli.run({ "run", "spy", "--offline", "-p", "url=http://127.0.0.1:9", "-p", "dir=" .. dir,
      "-p", "record=" .. cli.root .. "/spec/fixtures/bin/record", "--journal", journal_of(dir) },
      { env_add = { RECORD_LOG = log } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.is_false(cli.exists(log))
    assert.is_false(cli.exists(dir .. "/written"))
    assert.matches("POST http://127.0.0.1:9/echo", r.stdout)
    assert.matches("not run", r.stdout)
  end)

  it("runbook show and list describe without running", function()
    local r = cli.run({ "show", "steps3" })
    assert.equals(0, r.code)
    assert.matches("Fail while the flag exists", r.stdout)
    assert.matches("verify: value from step 1 is visible", r.stdout)
    assert.matches("dir%s+path, required", r.stdout)
    r = cli.run({ "list" })
    assert.equals(0, r.code)
    assert.matches("steps3%s+Three steps", r.stdout)
  end)

  it("prints a step's no_verify reason once, as the check that was not run", function()
    local f = assert(io.open(dir .. "/noverify.lua", "w"))
    f:write('local rb = require("runbook")\nreturn rb.runbook { name = "noverify", summary = "s",\n'
      .. '  steps = { rb.step "Count" { run = function() end, no_verify = "counts in memory only" } } }\n')
    f:close()
    local r = cli.run({ "run", dir .. "/noverify.lua", "--journal", journal_of(dir) })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("\n      skip not verified %(not run: counts in memory only%)\n", r.stdout)
    local _, n = r.stdout:gsub("counts in memory only", "")
    assert.equals(1, n, r.stdout)
  end)

  it("runbook show never prints a secret parameter's default (nor caches it)", function()
    local f = assert(io.open(dir .. "/withsecret.lua", "w"))
    f:write('local rb = require("runbook")\nreturn rb.runbook { name = "withsecret", summary = "s",\n'
      .. '  params = { { name = "token", type = "secret", default = "dflt-s3cr3t-value" } },\n'
      .. '  steps = { rb.step "Nothing" { run = function() end, no_verify = "spec" } } }\n')
    f:close()
    local cache = dir .. "/cache"
    for _ = 1, 2 do -- rendered, then from the cache
      local r = cli.run({ "show", "withsecret" }, { env_add = { RUNBOOK_PATH = dir, XDG_CACHE_HOME = cache } })
      assert.equals(0, r.code, r.stderr)
      assert.matches("token%s+secret, default %(secret, not shown%)", r.stdout)
      assert.is_nil((r.stdout .. r.stderr):find("s3cr3t", 1, true))
    end
    for _, name in ipairs(require("runbook.fs").list(cache .. "/runbook/show")) do
      assert.is_nil(cli.slurp(cache .. "/runbook/show/" .. name):find("s3cr3t", 1, true))
    end
  end)

  it("runbook list follows edits to a runbook, whatever it cached", function()
    local rbdir, cache = dir .. "/rb", dir .. "/cache"
    assert(require("runbook.fs").mkdir_p(rbdir, tonumber("700", 8)))
    local function put(summary)
      local f = assert(io.open(rbdir .. "/mine.lua", "w"))
      f:write(('local rb = require("runbook")\nreturn rb.runbook { name = "mine", summary = %q, steps = {\n'
        .. '  rb.step "Nothing" { run = function() end, no_verify = "spec" } } }\n'):format(summary))
      f:close()
    end
    local function list()
      return cli.run({ "list" }, { env_add = { RUNBOOK_PATH = rbdir, XDG_CACHE_HOME = cache } })
    end
    put("First summary")
    assert.matches("mine%s+First summary", list().stdout)
    assert.matches("mine%s+First summary", list().stdout)
    local cfile = cache .. "/runbook/catalogue.txt"
    local ctext = cli.slurp(cfile)
    assert.matches("^runbook%-catalogue 1\n.*\tFirst summary\n", ctext)
    -- list reads the summary from the cache when the stamp matches
    local cf = assert(io.open(cfile, "w")); cf:write((ctext:gsub("\tFirst summary\n", "\tCached summary\n"))); cf:close()
    assert.matches("mine%s+Cached summary", list().stdout)
    put("A longer, second summary")
    assert.matches("mine%s+A longer, second summary", list().stdout)
    local f = assert(io.open(rbdir .. "/mine.lua", "w")); f:write("return 42\n"); f:close()
    for _ = 1, 2 do                                                  -- a broken file is never cached
      local r = list()
      assert.equals(1, r.code)
      assert.matches("mine%s+%(broken: .*does not return rb.runbook", r.stdout)
    end
    put("Back again")
    -- a damaged cache (a stale stamp, then garbage) is ignored, never trusted
    f = assert(io.open(cache .. "/runbook/catalogue.txt", "w"))
    f:write("runbook-catalogue 1\n" .. rbdir .. "/mine.lua\t0:0\tStale summary\n"); f:close()
    assert.matches("mine%s+Back again", list().stdout)
    f = assert(io.open(cache .. "/runbook/catalogue.txt", "w")); f:write("\0\1garbage\t\t\n\t"); f:close()
    local r = list()
    assert.equals(0, r.code, r.stderr)
    assert.matches("mine%s+Back again", r.stdout)
  end)
end)
