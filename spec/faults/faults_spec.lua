-- The fault matrix (issue 7), row by row, through the CLI as an operator
-- runs it: inject the fault, then check what they see — the exit code, one
-- clear line naming what failed, no Lua traceback, files intact, the run
-- resumable. Rows covered elsewhere are listed in docs/FAULTS.md.
local cli = require("cli")
local ts = require("testserver")
local cjson = require("cjson.safe")

local function journal_of(dir) return dir .. "/journal.db" end

local function no_traceback(r)
  assert.is_nil(r.stdout:find("stack traceback", 1, true), r.stdout)
  assert.is_nil(r.stderr:find("stack traceback", 1, true), r.stderr)
  assert.is_nil((r.stdout .. r.stderr):find("internal error", 1, true), r.stdout .. r.stderr)
end

local function run_faults(dir, params, o)
  local args = { "run", "faults", "--journal", journal_of(dir) }
  for k, v in pairs(params) do
    args[#args + 1] = "-p"
    args[#args + 1] = k .. "=" .. tostring(v)
  end
  for _, a in ipairs(o and o.extra or {}) do args[#args + 1] = a end
  return cli.run(args, o)
end

local function resume_id(r)
  return (r.stdout .. r.stderr):match("runbook resume (%S+)")
end

describe("fault matrix", function()
  local srv, dir

  setup(function() srv = ts.start() end)
  teardown(function() if srv then srv.stop() end end)
  before_each(function()
    dir = cli.tmpdir()
    require("runbook.http").get(srv.url .. "/reset")
  end)
  after_each(function() cli.rmrf(dir) end)

  local function requests()
    return cjson.decode(require("runbook.http").get(srv.url .. "/requests").body)
  end

  describe("HTTP", function()
    it("a 5xx storm: bounded retries with backoff, then the step fails with the last status", function()
      local r = run_faults(dir, { url = srv.url .. "/fail/100" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      no_traceback(r)
      assert.matches("GET " .. srv.url:gsub("%p", "%%%0") .. "/fail/100: HTTP 503 after 4 attempts, expected 200", r.stdout)
      local retries = 0
      for _ in r.stdout:gmatch("retry %d of 3 in [%d.]+ s %(backoff%)") do retries = retries + 1 end
      assert.equals(3, retries)
      assert.equals(4, requests().count)
      assert.truthy(resume_id(r), "no resume command in:\n" .. r.stdout)
    end)

    it("a short 5xx burst is ridden out", function()
      local r = run_faults(dir, { url = srv.url .. "/fail/2?json=1" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("HTTP 503; retry 1 of 3 in [%d.]+ s %(backoff%)", r.stdout)
      assert.matches("HTTP 503; retry 2 of 3 in [%d.]+ s %(backoff%)", r.stdout)
      assert.is_nil(r.stdout:find("retry 3 of 3", 1, true))
      assert.equals(3, requests().count)
    end)

    it("429 with Retry-After: waits as told, then continues", function()
      local r = run_faults(dir, { url = srv.url .. "/limited/2/1" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("HTTP 429; retry 1 of 3 in 1%.0 s %(Retry%-After%)", r.stdout)
      assert.matches("HTTP 429; retry 2 of 3 in 1%.0 s %(Retry%-After%)", r.stdout)
      assert.equals(3, requests().count)
    end)

    it("429 with a huge Retry-After: the wait is capped", function()
      local r = run_faults(dir, { url = srv.url .. "/limited/1/86400", max_wait = 1 })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("Retry%-After 86400 s, capped at 1 s", r.stdout)
    end)

    it("connection refused: one line naming the URL, resumable", function()
      local r = run_faults(dir, { url = "http://127.0.0.1:9/doc" })
      assert.equals(1, r.code)
      no_traceback(r)
      assert.matches("http://127.0.0.1:9/doc", r.stdout)
      assert.matches("[Cc]onnect", r.stdout)
      assert.truthy(resume_id(r))
    end)

    it("connection refused, retried when the call says it is safe: each try a line, then the count", function()
      local r = run_faults(dir, { url = "http://127.0.0.1:9/doc", transport = true })
      assert.equals(1, r.code)
      no_traceback(r)
      local retries = 0
      for _ in r.stdout:gmatch("GET http://127%.0%.0%.1:9/doc: [^\n]*[Cc]onnect[^\n]*; retry %d of 3 in [%d.]+ s %(backoff%)") do
        retries = retries + 1
      end
      assert.equals(3, retries, r.stdout)
      assert.matches("[Cc]onnect[^\n]* %(4 attempts%)", r.stdout)
      assert.truthy(resume_id(r))
      -- a timeout is not: the request may still be running there
      local t = run_faults(dir, { url = srv.url .. "/stall", timeout = 1, transport = true }, { timeout = 60 })
      assert.equals(1, t.code)
      assert.matches("[Tt]imed out after 1%d%d%d milliseconds", t.stdout)
      assert.is_nil(t.stdout:find("retry 1 of", 1, true), t.stdout)
    end)

    it("a stalled server: the request times out at its limit, no hang", function()
      local r = run_faults(dir, { url = srv.url .. "/stall", timeout = 1 }, { timeout = 60 })
      assert.equals(1, r.code)
      no_traceback(r)
      assert.matches("/stall", r.stdout)
      assert.matches("[Tt]imed out after 1%d%d%d milliseconds", r.stdout)
      assert.truthy(resume_id(r))
    end)

    it("a self-signed certificate is refused, saying why; allowed only when asked", function()
      local r = run_faults(dir, { url = srv.https_url .. "/limited/0/0" })
      assert.equals(1, r.code)
      no_traceback(r)
      assert.matches("certificate", r.stdout)
      r = run_faults(dir, { url = srv.https_url .. "/limited/0/0", insecure = true })
      assert.equals(0, r.code, r.stdout .. r.stderr)
    end)

    it("an HTML error page where JSON was expected: a short excerpt, no traceback", function()
      local r = run_faults(dir, { url = srv.url .. "/html" })
      assert.equals(1, r.code)
      no_traceback(r)
      local line = r.stdout:match("[^\n]*is not JSON[^\n]*")
      assert.truthy(line, r.stdout)
      assert.matches("<", line)
      assert.is_true(#line < 400, line)
    end)

    it("a 10 MB body that is not JSON: a short excerpt, and the run ends normally", function()
      local r = run_faults(dir, { url = srv.url .. "/bytes/10485760" })
      assert.equals(1, r.code)
      no_traceback(r)
      assert.matches("is not JSON %(HTTP 200%)", r.stdout)
      assert.is_true(#r.stdout < 20000, "output is " .. #r.stdout .. " bytes")
      assert.is_true(#(cli.slurp(journal_of(dir)) or "") + #(cli.slurp(journal_of(dir) .. "-wal") or "") < 2e6,
        "the body went into the journal")
    end)
  end)

  describe("files and the journal", function()
    -- the child runs under a file-size limit (sh's ulimit -f, 512-byte blocks)
    local function limited(blocks, args)
      local argv = { "sh", "-c", "ulimit -f " .. blocks .. ' && exec "$0" "$@"', cli.bin }
      for _, a in ipairs(args) do argv[#argv + 1] = a end
      return argv
    end

    it("a file-size limit while writing the env file: old file byte-identical, run failed, resumable", function()
      local env = dir .. "/app.env"
      local old = "# keep me\nKEY=old\nOTHER=1\n"
      assert(require("runbook.fs").write_atomic(env, old, { mode = tonumber("600", 8) }))
      -- create the journal first, unlimited, so only the env file hits the limit
      assert.equals(0, cli.run({ "history", "--journal", journal_of(dir) }).code)
      local P = require("runbook.proc")
      local r = assert(P.run({ argv = limited(2048, { "run", "faults", "--journal", journal_of(dir),
        "-p", "env_file=" .. env, "-p", "value_bytes=" .. 2 * 1024 * 1024 }),
        env_add = { NO_COLOR = "1", RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks" }, timeout = 60 }))
      assert.equals(1, r.code, r.stdout .. r.stderr)
      no_traceback(r)
      assert.matches("write .*app%.env: File too large", r.stdout)
      assert.matches("app%.env", r.stdout)
      assert.equals(old, cli.slurp(env))
      -- and no temp file left behind next to it
      local left = {}
      for _, n in ipairs(require("runbook.fs").list(dir)) do
        if not n:match("^journal%.db") then left[#left + 1] = n end
      end
      assert.same({ "app.env" }, left)
      -- lifted: the same run resumes and finishes
      local id = resume_id(r)
      assert.truthy(id, r.stdout)
      local r2 = cli.run({ "resume", id, "--journal", journal_of(dir) })
      assert.equals(0, r2.code, r2.stdout .. r2.stderr)
      assert.matches("KEY=" .. ("v"):rep(64), cli.slurp(env):sub(1, 200))
    end)

    it("the journal hits the limit mid-run: a clear error naming it, no traceback", function()
      assert.equals(0, cli.run({ "history", "--journal", journal_of(dir) }).code)
      local P = require("runbook.proc")
      local r = assert(P.run({ argv = limited(400, { "run", "faults", "--journal", journal_of(dir),
        "-p", "log_steps=60" }),
        env_add = { NO_COLOR = "1", RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks" }, timeout = 60 }))
      assert.is_not.equals(0, r.code)
      no_traceback(r)
      assert.matches("journal " .. journal_of(dir):gsub("%p", "%%%0"), r.stdout .. r.stderr)
      assert.matches("the run stopped here %(run %S+%)%. Free space or fix the file, then `runbook resume ", r.stderr)
      -- the limit lifted, the run resumes from the journal and finishes
      local id = r.stderr:match("runbook resume (%S+)")
      local r2 = cli.run({ "resume", id, "--journal", journal_of(dir) })
      assert.equals(0, r2.code, r2.stdout .. r2.stderr)
    end)

    it("a journal that is not a database is refused and left untouched", function()
      local j = journal_of(dir)
      local junk = "this is not sqlite\n"
      local f = assert(io.open(j, "w")); f:write(junk); f:close()
      local r = run_faults(dir, { hold = 0 })
      assert.equals(2, r.code, r.stdout .. r.stderr)
      no_traceback(r)
      assert.matches("journal " .. j:gsub("%p", "%%%0") .. ".*not a runbook journal", r.stderr)
      assert.equals(junk, cli.slurp(j))
    end)

    it("a journal locked by another process: waits the busy timeout, then a clear error", function()
      local j = journal_of(dir)
      assert.equals(0, cli.run({ "history", "--journal", j }).code)
      -- another process holds an exclusive lock on the database
      local P = require("runbook.proc")
      local ready = dir .. "/ready"
      local holder = assert(P.spawn({ argv = { cli.bin, "exec", cli.root .. "/spec/fixtures/hold_lock.lua", j, ready } }))
      for _ = 1, 200 do
        if cli.exists(ready) then break end
        require("runbook.term").sleep(0.05)
      end
      assert.truthy(cli.exists(ready), "the lock holder did not start")
      local r = run_faults(dir, {}, { timeout = 60 })
      holder:stop(5)
      assert.is_not.equals(0, r.code)
      no_traceback(r)
      assert.matches("journal " .. j:gsub("%p", "%%%0") .. ".*locked", r.stdout .. r.stderr)
    end)
  end)

  describe("signals", function()
    it("SIGTERM mid-step: journaled interrupted, exit 4, resumable", function()
      local P = require("runbook.proc")
      local out = dir .. "/out"
      local p = assert(P.spawn({ argv = { cli.bin, "run", "faults", "--journal", journal_of(dir),
        "-p", "url=" .. srv.url .. "/limited/0/0", "-p", "hold=3" },
        env_add = { NO_COLOR = "1", RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks" },
        stdout = out, stderr = out }))
      local term = require("runbook.term")
      for _ = 1, 100 do
        if (cli.slurp(out) or ""):find("Fetch the document", 1, true) then break end
        term.sleep(0.05)
      end
      assert(p:kill("TERM"))
      local res = p:wait(20)
      assert.equals(4, res.code, cli.slurp(out))
      local text = cli.slurp(out)
      assert.matches("interrupted", text)
      local id = resume_id({ stdout = text, stderr = "" })
      assert.truthy(id, text)
      local h = cli.run({ "history", "--journal", journal_of(dir) })
      assert.matches("interrupted", h.stdout)
      local r2 = cli.run({ "resume", id, "--journal", journal_of(dir) })
      assert.equals(0, r2.code, r2.stdout .. r2.stderr)
    end)
  end)
end)
