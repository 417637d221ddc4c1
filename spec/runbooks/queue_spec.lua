-- The queue and session runbooks of seeds 002 and 004 end to end against
-- the real hub (wrangler dev) in a local environment, as an operator runs
-- them: migrate-queue-kv-to-d1 (happy path, dry-run, cleanup only after the
-- counts reconcile, a lasting 5xx or SIGKILL mid-way then resume),
-- reprocess-session, rotate-provider-key (local .dev.vars + restart;
-- production through the recording wrangler; the value typed at a no-echo
-- prompt on a pseudo-terminal) and investigate-queue-failure.
local localenv = require("localenv")
local cli = require("cli")
local crypto = require("runbook.crypto")
local cjson = require("cjson.safe")

local function sleep(s) require("runbook.term.core").sleep(s) end
local function monotonic() return require("runbook.term.core").monotonic() end

local function forms(v) return { v, crypto.b64(v), crypto.hex(v) } end

local function assert_absent(v, outputs)
  for i, out in ipairs(outputs) do
    for _, f in ipairs(forms(v)) do
      assert.is_nil(out:find(f, 1, true), "output #" .. i .. " contains the secret")
    end
  end
end

describe("#hub queue and session runbooks", function()
  local L

  -- the hub directly, with room for 10,000-key seeds on a busy machine
  local function hub(method, path, body, headers)
    local h = { ["Content-Type"] = "application/json" }
    for k, v in pairs(headers or {}) do h[k] = v end
    local r = assert(require("runbook.http").request({ method = method, url = L.url .. path,
      body = body and cjson.encode(body) or nil, headers = h, timeout = 180 }))
    r.json = cjson.decode(r.body or "")
    return r
  end
  local function admin(path, body)
    local r = hub("POST", path, body or {})
    assert(r.status >= 200 and r.status < 300, path .. " answered " .. r.status .. ": " .. r.body)
    return r.json
  end
  local function keyed() return { ["X-API-Key"] = L.key } end
  local function counts()
    local r = hub("GET", "/api/admin/queue/counts?reconcile=1", nil, keyed())
    assert.equals(200, r.status, r.body)
    return r.json
  end
  local function migrate_requests_left()
    return hub("GET", "/api/admin/faults").json.remaining
  end
  local function out(r) return r.stdout .. r.stderr end
  local function run_id(stdout) return stdout:match("run (%d+%-%d+%-%x+)") end
  local function journal()
    return assert(require("runbook.sqlite").open(L.journal, { readonly = true, busy_timeout = 5000 }))
  end
  -- the last journaled checkpoint of a step in a run, decoded
  local function checkpoint(db, id, idx, key)
    local row = db:one("SELECT value FROM checkpoints WHERE run_id = ? AND idx = ? AND key = ?", id, idx, key)
    return row and cjson.decode(row.value) or nil
  end

  setup(function()
    L = localenv.start({ daemon = false })
  end)
  teardown(function() if L then L:stop() end end)

  describe("migrate-queue-kv-to-d1", function()
    setup(function()
      -- a D1 migration the hub has not applied yet
      assert(require("runbook.fs").write_atomic(L.dir .. "/hub-src/migrations/0099_spec_probe.sql",
        "CREATE TABLE IF NOT EXISTS spec_probe (id INTEGER PRIMARY KEY);\n"))
    end)

    before_each(function()
      admin("/api/admin/reset")
      hub("DELETE", "/api/admin/faults")
      admin("/api/admin/seed", { queue_tasks_kv = 2500, queue_results_kv = { count = 700 },
        kv = { ["queue:task:broken"] = "not json" } })
    end)

    it("--dry-run lists the pending D1 migration and the pages, and changes nothing", function()
      admin("/api/admin/faults", { path_prefix = "/api/admin/queue/migrate-", count = 100, delay_ms = 1 })
      local before = counts()
      local r = L:run({ "run", "migrate-queue-kv-to-d1", "--dry-run", "-p", "cleanup=true" })
      assert.equals(0, r.code, out(r))
      assert.matches("pending: 0099_spec_probe.sql", r.stdout)
      assert.matches("d1 migrations apply DB %-%-local %-%-persist%-to .-dry%-run", r.stdout)
      assert.matches("tasks: would POST page after page by cursor, 200 keys a page", r.stdout)
      assert.same(before, counts())
      assert.equals(100, migrate_requests_left()) -- not one page was asked for
      -- still pending: a second dry-run lists it again
      local again = L:run({ "run", "migrate-queue-kv-to-d1", "--dry-run" })
      assert.matches("pending: 0099_spec_probe.sql", again.stdout)
    end)

    it("applies the missing migration, copies 2,500 tasks and 700 results, KV untouched, counts reconcile", function()
      local r = L:run({ "run", "migrate-queue-kv-to-d1" })
      assert.equals(0, r.code, out(r))
      assert.matches("pending: 0099_spec_probe.sql", r.stdout)
      assert.matches("ok   no migration is pending", r.stdout)
      assert.matches("tasks: 13 pages, 2501 scanned, 2500 migrated, 0 already in D1, 1 not migratable", r.stdout)
      assert.matches("results: 4 pages, 700 scanned, 700 migrated", r.stdout)
      assert.matches("progress 2501/2501 %(100 %%%)", r.stdout)
      assert.matches("missing tasks: broken", r.stdout)
      assert.matches("Delete migrated tasks from KV %(condition not met%)", r.stdout)
      local c = counts()
      assert.same({ tasks = 2500, results = 700 }, c.d1)
      assert.same({ tasks = 2501, results = 700 }, c.kv) -- cleanup was not asked for
      assert.same({ "broken" }, c.reconcile.tasks.missing_ids)
      -- the queue API serves what was migrated
      local t = hub("GET", "/api/queue/task-000042", nil, keyed())
      assert.equals(200, t.status)
      assert.same({ kind = "demo", n = 42 }, t.json.task)
      assert.same({ ok = true, n = 42 }, t.json.result)

      -- a second run copies nothing and says so
      local r2 = L:run({ "run", "migrate-queue-kv-to-d1", "-p", "limit=1000" })
      assert.equals(0, r2.code, out(r2))
      assert.matches("no migrations pending", r2.stdout)
      assert.matches("tasks: 3 pages, 2501 scanned, 0 migrated, 2500 already in D1, 1 not migratable", r2.stdout)
      assert.same({ tasks = 2500, results = 700 }, counts().d1)
    end)

    it("cleans KV up only after the counts reconcile", function()
      -- pages slow enough to add a task behind the copy's back
      admin("/api/admin/faults", { path_prefix = "/api/admin/queue/migrate-", count = 1000, delay_ms = 300 })
      local log = L.dir .. "/late.log"
      local p = assert(require("runbook.proc").spawn({ argv = { cli.bin, "run", "migrate-queue-kv-to-d1",
        "-p", "limit=100", "-p", "cleanup=true" }, stdout = log, stderr = log,
        env_add = { RUNBOOK_PROJECT = L.project, RUNBOOK_JOURNAL = L.journal, NO_COLOR = "1" } }))
      -- once the tasks are copied, a task arrives in KV
      local id
      local t_end = monotonic() + 120
      while monotonic() < t_end do
        id = id or run_id(cli.slurp(log) or "")
        if id then
          local db = journal()
          local st = checkpoint(db, id, 3, "pages")
          db:close()
          if st and st.done then break end
        end
        sleep(0.1)
      end
      admin("/api/admin/seed", { queue_tasks_kv = { count = 1, prefix = "late" } })
      local res = p:wait(180)
      local text = cli.slurp(log) or ""
      assert.equals(1, res.code, text)
      assert.matches("missing tasks: broken, late%-000001", text)
      assert.matches("FAIL KV count = D1 count for the migrated ids: 1 tasks in KV but not in D1", text)
      assert.is_nil(text:find("Delete migrated tasks from KV", 1, true))
      assert.same({ tasks = 2502, results = 700 }, counts().kv) -- nothing deleted

      -- run again: the late task is copied, the counts reconcile, KV is cleaned
      hub("DELETE", "/api/admin/faults")
      local r = L:run({ "run", "migrate-queue-kv-to-d1", "-p", "limit=500", "-p", "cleanup=true" })
      assert.equals(0, r.code, out(r))
      assert.matches("tasks: 6 pages, 2502 scanned, 1 migrated", r.stdout)
      local c = counts()
      assert.same({ tasks = 2501, results = 700 }, c.d1)
      assert.same({ tasks = 1, results = 0 }, c.kv) -- only the key D1 cannot hold
      assert.same({ "broken" }, c.reconcile.tasks.missing_ids)
    end)

    it("retries a page the hub refuses for a moment; a lasting 5xx fails the step, resume skips what is done",
      function()
        admin("/api/admin/faults", { path_prefix = "/api/admin/queue/migrate-tasks", count = 2, status = 503,
          retry_after = 1 })
        admin("/api/admin/faults", { path_prefix = "/api/admin/queue/migrate-results", count = 100, status = 503 })
        local r = L:run({ "run", "migrate-queue-kv-to-d1", "-p", "limit=1000" })
        assert.equals(1, r.code, out(r))
        assert.matches("migrate%-tasks%-kv%-to%-d1: HTTP 503; retry 1 of 3 in 1%.0 s %(Retry%-After%)", r.stdout)
        assert.matches("tasks: 3 pages, 2501 scanned, 2500 migrated", r.stdout)
        assert.matches("results page 1: POST [^ ]+/api/admin/queue/migrate%-results%-kv%-to%-d1: HTTP 503 " ..
          "injected fault %(4 attempts%) %(no page of it is done yet%)", r.stdout)
        assert.matches("resume with: runbook resume " .. run_id(r.stdout), r.stdout, 1, true)
        assert.same({ tasks = 2500, results = 0 }, counts().d1)

        hub("DELETE", "/api/admin/faults")
        local usage = hub("GET", "/api/admin/kv-usage").json.list
        local again = L:run({ "resume", run_id(r.stdout) })
        assert.equals(0, again.code, out(again))
        assert.matches("resuming run %S+ at step 4/7", again.stdout)
        assert.is_nil(again.stdout:find("migrate-tasks-kv-to-d1", 1, true)) -- no task page asked again
        -- KV lists: one results page, then the reconcile's counts (3 task lists, 1 results list)
        assert.equals(usage + 1 + 4, hub("GET", "/api/admin/kv-usage").json.list)
        assert.same({ tasks = 2500, results = 700 }, counts().d1)
      end)

    it("#slow 5,000 tasks and 5,000 results: SIGKILLed at a random page, `runbook resume` finishes with every id " ..
      "in D1 once, KV untouched, no journaled page re-read", function()
        admin("/api/admin/reset")
        admin("/api/admin/seed", { queue_tasks_kv = 5000, queue_results_kv = { count = 5000 },
          kv = { ["queue:task:broken"] = "not json" } })
        local faults = 1000
        admin("/api/admin/faults", { path_prefix = "/api/admin/queue/migrate-", count = faults, delay_ms = 100 })
        -- 51 pages of tasks (one holds the key that is not JSON), then 50 of results
        local kill_after = math.random(2, 95)
        local log = L.dir .. "/kill.log"
        local p = assert(require("runbook.proc").spawn({ argv = { cli.bin, "run", "migrate-queue-kv-to-d1",
          "-p", "limit=100" }, stdout = log, stderr = log,
          env_add = { RUNBOOK_PROJECT = L.project, RUNBOOK_JOURNAL = L.journal, NO_COLOR = "1" } }))
        local id, done, journaled_migrated, t, r
        local t_end = monotonic() + 300
        while monotonic() < t_end do
          id = id or run_id(cli.slurp(log) or "")
          if id then
            local db = journal()
            t, r = checkpoint(db, id, 3, "pages"), checkpoint(db, id, 4, "pages")
            db:close()
            done = (t and t.pages or 0) + (r and r.pages or 0)
            journaled_migrated = (t and t.migrated or 0) + (r and r.migrated or 0)
            if done >= kill_after then break end
          end
          sleep(0.05)
        end
        assert(done and done >= kill_after,
          "the run did not reach page " .. kill_after .. ":\n" .. (cli.slurp(log) or ""))
        assert(p:kill("KILL"))
        p:wait(10)
        local mid = counts()
        -- D1 holds at least what the journal says was migrated (a page's
        -- checkpoint is written after the hub answered it)
        assert.is_true(journaled_migrated > 0)
        assert.is_true(mid.d1.tasks + mid.d1.results >= journaled_migrated,
          ("D1 has %s, the journal says %d were migrated"):format(cjson.encode(mid.d1), journaled_migrated))
        assert.is_true(mid.d1.tasks + mid.d1.results < 10000, "D1 has " .. cjson.encode(mid.d1))
        assert.same({ tasks = 5001, results = 5000 }, mid.kv)          -- KV untouched

        -- the kill may fall between the two steps (every task page done, no
        -- results page yet): the resumed run then starts the results afresh
        local kdb = journal()
        t, r = checkpoint(kdb, id, 3, "pages"), checkpoint(kdb, id, 4, "pages")
        kdb:close()
        local between = t and t.done and not (r and r.pages > 0)
        local res = L:run({ "resume", id })
        assert.equals(0, res.code, out(res))
        assert.matches("run " .. id .. " | resumed", res.stdout, 1, true)
        if between then
          assert.matches("resuming run %S+ at step 4/7", res.stdout)
        else
          assert.matches("resuming after page %d+", res.stdout)
        end
        local c = counts()
        assert.same({ tasks = 5000, results = 5000 }, c.d1)           -- every id once (primary keys)
        assert.same({ tasks = 5001, results = 5000 }, c.kv)           -- no cleanup was asked for
        assert.equals(1, c.reconcile.tasks.missing)
        assert.equals(0, c.reconcile.results.missing)
        -- every page the hub was asked for, against the pages journaled as
        -- done: only the page in flight at the kill may have been asked twice
        local db = journal()
        local tasks, results = checkpoint(db, id, 3, "pages"), checkpoint(db, id, 4, "pages")
        db:close()
        assert.is_true(tasks.done and results.done)
        assert.equals(5001, tasks.scanned)
        assert.equals(5000, results.scanned)
        local asked = faults - migrate_requests_left()
        local journaled = tasks.pages + results.pages
        assert.is_true(asked == journaled or asked == journaled + 1,
          ("the hub was asked for %d pages, %d are journaled"):format(asked, journaled))
      end)
  end)

  describe("sessions", function()
    local VALUE = "sk-ant-" .. crypto.random_hex(24)

    it("investigate-queue-failure prints the command that fixes each stuck or failed session", function()
      admin("/api/admin/reset")
      admin("/api/admin/seed", { sessions = {
        { id = "s-stuck", processing_status = "processing", processing_started_min_ago = 15 },
        { id = "s-fresh", processing_status = "processing", processing_started_min_ago = 2 },
        { id = "s-nokey", processing_status = "failed",
          events = { { type = "session.processing_failed", data = { reason = "ANTHROPIC_API_KEY is not set" } } } },
        { id = "s-done", processing_status = "processed", signal_count = 3 },
        { id = "s-bare", processing_status = "failed" },
      } })
      local r = L:run({ "run", "investigate-queue-failure" })
      assert.equals(1, r.code, out(r))
      assert.matches("ok   api%s+200", r.stdout)
      assert.matches("ok   processing worker%s+200", r.stdout)
      assert.matches("stuck: s%-stuck", r.stdout)
      assert.is_nil(r.stdout:find("s-fresh", 1, true))
      assert.matches("failed: s%-nokey — ANTHROPIC_API_KEY is not set", r.stdout)
      local rotate = r.stdout:find("next: runbook run rotate-provider-key --env local -p name=ANTHROPIC_API_KEY", 1, true)
      local nokey = r.stdout:find("next: runbook run reprocess-session --env local -p id=s-nokey", 1, true)
      local stuck = r.stdout:find("next: runbook run reprocess-session --env local -p id=s-stuck", 1, true)
      assert.is_truthy(rotate and nokey and stuck, r.stdout)
      assert.is_true(rotate < nokey, "the key must be set before reprocessing")
      assert.is_truthy(r.stdout:find("next: runbook run reprocess-session --env local -p id=s-bare", 1, true))
      assert.matches("s%-bare: failed without a session.processing_failed event", r.stdout)
      assert.matches("3 session%(s%) need attention; run first: runbook run rotate%-provider%-key", r.stdout)

      -- nothing stuck or failed: ok
      admin("/api/admin/reset")
      admin("/api/admin/seed", { sessions = { { id = "s-done", processing_status = "processed", signal_count = 3 } } })
      local ok = L:run({ "run", "investigate-queue-failure" })
      assert.equals(0, ok.code, out(ok))
      assert.is_nil(ok.stdout:find("next:", 1, true))
    end)

    it("reprocess-session fails with the missing ANTHROPIC_API_KEY and names the fix", function()
      admin("/api/admin/seed", { sessions = { { id = "s-1", processing_status = "failed" } } })
      local r = L:run({ "run", "reprocess-session", "-p", "id=s-1" })
      assert.equals(1, r.code, out(r))
      assert.matches("session s%-1 failed: ANTHROPIC_API_KEY is not set", r.stdout)
      assert.matches("fix: runbook run rotate%-provider%-key %-%-env local %-p name=ANTHROPIC_API_KEY && " ..
        "runbook run reprocess%-session %-%-env local %-p id=s%-1", r.stdout)
      local s = hub("GET", "/api/sessions/s-1").json
      assert.equals("failed", s.session.processing_status)
      local missing = L:run({ "run", "reprocess-session", "-p", "id=s-nope" })
      assert.equals(1, missing.code)
      assert.matches("Session not found", missing.stdout)
    end)

    it("rotate-provider-key --env local sets it in .dev.vars and restarts the hub; then reprocess succeeds", function()
      local r = L:run({ "run", "rotate-provider-key", "--env", "local", "--yes", "-p", "value_env=NEW_PROVIDER_KEY" },
        { env_add = { NEW_PROVIDER_KEY = VALUE } })
      assert.equals(0, r.code, out(r))
      assert.equals(VALUE, L:env_value(L.dir .. "/hub-src/.dev.vars", "ANTHROPIC_API_KEY"))
      assert.equals(L.key, L:hub_key("QUEUE_API_KEY")) -- the other secrets are kept
      assert.matches("restarted orchestrator%-hub", r.stdout)
      assert.matches("confirmed by %-%-yes: Revoke the OLD provider key", r.stdout)
      assert.matches(crypto.fingerprint(VALUE), r.stdout, 1, true)

      local p = L:run({ "run", "reprocess-session", "-p", "id=s-1" })
      assert.equals(0, p.code, out(p))
      assert.matches("session s%-1: processed, 3 signals, last event session.processed", p.stdout)
      local s = hub("GET", "/api/sessions/s-1").json
      assert.equals("processed", s.session.processing_status)
      assert.equals(3, s.session.signal_count)
      assert_absent(VALUE, { r.stdout, r.stderr, p.stdout, cli.slurp(L.journal) or "",
        cli.slurp(L.journal .. "-wal") or "", L:run({ "log", run_id(r.stdout) }).stdout })
    end)

    it("rotate-provider-key --env production: 4 puts on both worker configs, value on stdin only", function()
      local other = "sk-ant-" .. crypto.random_hex(24)
      -- protected: without --yes (and no terminal) nothing is put
      local refused = L:run({ "run", "rotate-provider-key", "--env", "production", "-p", "value_env=NEW_PROVIDER_KEY" },
        { env_add = { NEW_PROVIDER_KEY = other } })
      assert.equals(5, refused.code, out(refused))
      assert.is_nil((cli.slurp(L.wrangler_log) or ""):find("secret put ANTHROPIC_API_KEY", 1, true))

      local r = L:run({ "run", "rotate-provider-key", "--env", "production", "--yes", "-p", "value_env=NEW_PROVIDER_KEY" },
        { env_add = { NEW_PROVIDER_KEY = other } })
      assert.equals(0, r.code, out(r))
      local log = cli.slurp(L.wrangler_log) or ""
      local hash = crypto.hex(crypto.sha256(other)):sub(1, 16)
      local puts = {}
      for line in log:gmatch("[^\n]+") do
        if line:match("^secret put ANTHROPIC_API_KEY") then puts[#puts + 1] = line end
      end
      assert.same({
        "secret put ANTHROPIC_API_KEY -c wrangler.processing.toml stdin=" .. hash,
        "secret put ANTHROPIC_API_KEY -c wrangler.toml stdin=" .. hash,
        "secret put ANTHROPIC_API_KEY -c wrangler.processing.toml --env production stdin=" .. hash,
        "secret put ANTHROPIC_API_KEY -c wrangler.toml --env production stdin=" .. hash,
      }, puts)
      assert.matches("ok   every holder has the secret", r.stdout)
      assert.matches("confirmed by %-%-yes: Revoke the OLD provider key", r.stdout)
      assert_absent(other, { log, r.stdout, r.stderr, refused.stdout, refused.stderr, cli.slurp(L.journal) or "",
        cli.slurp(L.journal .. "-wal") or "" })
    end)

    it("rotate-provider-key asks for the value on a terminal without echoing it", function()
      local typed = "sk-ant-" .. crypto.random_hex(24)
      local d = cli.tmpdir()
      assert(require("runbook.fs").write_atomic(d .. "/input", typed .. "\n"))
      local function q(v) return "'" .. v .. "'" end
      local cmd = table.concat({ "env -u CI NO_COLOR=1", "RUNBOOK_PROJECT=" .. q(L.project),
        "RUNBOOK_JOURNAL=" .. q(L.journal), "WRANGLER_LOG=" .. q(L.wrangler_log),
        "WRANGLER_STATE=" .. q(L.dir .. "/wrangler-state"), q(cli.bin),
        "run rotate-provider-key --env production --yes -p name=OPENAI_API_KEY" }, " ")
      local r = assert(require("runbook.proc").run({ argv = { "sh", cli.root .. "/spec/fixtures/pty_type.sh", d,
        "New value of OPENAI_API_KEY (not echoed): ", cmd }, timeout = 180 }))
      local screen = cli.slurp(d .. "/ts") or ""
      cli.rmrf(d)
      assert.equals(0, r.code)
      assert.matches("status=0", screen)
      assert.matches("New value of OPENAI_API_KEY %(not echoed%): ", screen)
      local hash = crypto.hex(crypto.sha256(typed)):sub(1, 16)
      local log = cli.slurp(L.wrangler_log) or ""
      local n = 0
      for _ in log:gmatch("secret put OPENAI_API_KEY [^\n]*stdin=" .. hash) do n = n + 1 end
      assert.equals(4, n)
      assert_absent(typed, { screen, log, cli.slurp(L.journal) or "", cli.slurp(L.journal .. "-wal") or "" })
    end)
  end)
end)
