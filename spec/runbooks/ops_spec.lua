-- The seed-003 operations runbooks end to end against the real hub (wrangler
-- dev): verify-deployment, replay-dead-letters, retry-failed-run,
-- check-slos, daily-checks — each one's happy path and the failure it
-- exists for, as an operator runs them. One hub for the whole file; every
-- test starts from a wiped hub and seeds what it needs.
local localenv = require("localenv")
local cli = require("cli")
local crypto = require("runbook.crypto")
local cjson = require("cjson")
local callbacks = require("stdlib.callbacks")

local MINE = { "verify-deployment", "replay-dead-letters", "retry-failed-run", "check-slos", "daily-checks" }

describe("#hub ops runbooks", function()
  local L

  setup(function() L = localenv.start({ daemon = false }) end)
  teardown(function() if L then L:stop() end end)

  local function post(path, body, headers)
    local h = { ["Content-Type"] = "application/json" }
    for k, v in pairs(headers or {}) do h[k] = v end
    return L:request("POST", path, { body = cjson.encode(body or {}), headers = h })
  end

  local function admin(path, body)
    local r = post(path, body)
    assert(r.status >= 200 and r.status < 300, path .. " answered " .. r.status .. ": " .. r.body)
    return r.json
  end

  local function seed(t) return admin("/api/admin/seed", t) end
  local function get(path, headers) return L:request("GET", path, { headers = headers }) end
  local function run_of(id) return get("/api/job-sources/runs/" .. id).json.run end
  local function open_letters() return get("/api/admin/dead-letters").json.count end
  local function bearer() return { Authorization = "Bearer " .. L:hub_key("TASKS_AUTH_TOKEN") } end

  -- Everything the tool wrote for this run: stdout, stderr, journal (+ WAL).
  local function outputs(r)
    return { r.stdout, r.stderr, cli.slurp(L.journal) or "", cli.slurp(L.journal .. "-wal") or "" }
  end

  local function assert_absent(secret, outs)
    for i, out in ipairs(outs) do
      for _, f in ipairs({ secret, crypto.b64(secret), crypto.hex(secret) }) do
        assert.is_nil(out:find(f, 1, true), "output #" .. i .. " contains a secret")
      end
    end
  end

  -- A callback signed as the worker signs it (seed 003).
  local function callback(event)
    local body, headers = callbacks.signed(L:hub_key("WORKER_CALLBACK_SECRET"), event)
    return L:request("POST", "/callbacks/worker", { body = body, headers = headers })
  end

  -- The replay guard's records for these eventIds: eventId → record.
  local function events(ids)
    local q = {}
    for i, id in ipairs(ids) do q[i] = "event_id=" .. id end
    local r = get("/callbacks/events?" .. table.concat(q, "&"), bearer())
    assert.equals(200, r.status, r.body)
    local by = {}
    for _, e in ipairs(r.json.items) do by[e.event_id] = e end
    return by
  end

  -- Lines of stdout matching a pattern.
  local function lines(out, pat)
    local t = {}
    for line in out:gmatch("[^\n]+") do if line:match(pat) then t[#t + 1] = line end end
    return t
  end

  -- The part of stdout between a step's title line and its result line.
  local function step_output(out, title)
    local from = out:find("%] " .. title .. "\n")
    assert(from, "no step " .. title .. " in:\n" .. out)
    local to = out:find("%] %a+ +" .. title, from) or #out
    return out:sub(from, to)
  end

  before_each(function()
    admin("/api/admin/reset")
    L:request("DELETE", "/api/admin/faults")
  end)

  it("every runbook passes `runbook check` (offline run with fixtures)", function()
    local args = { "check" }
    for _, n in ipairs(MINE) do args[#args + 1] = n end
    local r = L:run(args)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    for _, n in ipairs(MINE) do assert.matches("ok   " .. n:gsub("%-", "%%-") .. " %(", r.stdout) end
    assert.matches("5 runbooks, 0 failed", r.stdout)
  end)

  describe("verify-deployment", function()
    local function probe_id(out) return "verify-deployment-" .. out:match("| run (%d+%-%d+%-%x+)") end

    it("checks API, worker and web at once, one line each with its time, then callback signing", function()
      local r = L:run({ "run", "verify-deployment" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      for _, name in ipairs({ "api health", "api readiness", "worker health", "web front end", "ops metrics",
        "smoke: queue read with key" }) do
        local l = lines(r.stdout, "^%s+ok   " .. name:gsub("[%-%.:]", "%%%0") .. "%s+200 +%d+ ms")
        assert.equals(1, #l, name .. " line missing:\n" .. r.stdout)
      end
      assert.matches("6 of 6 checks ok", r.stdout)
      -- seed 003's callback security, each refusal reported with the hub's reason
      assert.matches("ok   bad signature refused +401 %d+ ms  invalid signature", r.stdout)
      assert.matches("ok   stale timestamp refused +401 %d+ ms  timestamp outside tolerance", r.stdout)
      assert.matches("ok   signed callback accepted +200 %d+ ms", r.stdout)
      assert.matches("ok   replayed eventId refused +409 %d+ ms  eventId verify%-deployment%-%S+ already delivered", r.stdout)
      local id = probe_id(r.stdout)
      assert.equals("live", events({ id })[id].source)
      assert_absent(L.key, outputs(r))
      assert_absent(L:hub_key("WORKER_CALLBACK_SECRET"), outputs(r))
    end)

    it("--dry-run sends no callback", function()
      local r = L:run({ "run", "verify-deployment", "--dry-run" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("6 of 6 checks ok", r.stdout)
      assert.matches("signed callback accepted: not sent %(dry%-run%)", r.stdout)
      assert.same({}, events({ probe_id(r.stdout) }))
    end)

    it("reports a signing secret that differs from the Worker's", function()
      -- the running hub keeps the secret it started with; the file the
      -- runbook reads now holds another one (drift)
      local path = L.dir .. "/hub-src/.dev.vars"
      local saved = cli.slurp(path)
      local other = crypto.random_hex(16)
      assert(require("stdlib.dotenv").update(path, { WORKER_CALLBACK_SECRET = other }))
      local r = L:run({ "run", "verify-deployment" })
      assert(require("runbook.fs").write_atomic(path, saved, { mode = tonumber("600", 8) }))
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("ok   bad signature refused", r.stdout)
      assert.matches("FAIL signed callback accepted: HTTP 401 invalid signature, expected 200", r.stdout)
      assert.matches("callback_secret_file differs from the Worker's", r.stdout)
      assert_absent(other, outputs(r))
    end)

    it("names the readiness check when /api/ready fails and passes the others", function()
      admin("/api/admin/faults", { path_prefix = "/api/ready", count = 1, status = 503 })
      local r = L:run({ "run", "verify-deployment" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.equals(1, #lines(r.stdout, "^%s+FAIL api readiness%s+503 .*HTTP 503, expected 200: injected fault"), r.stdout)
      assert.matches("FAIL api readiness answers as expected: HTTP 503", r.stdout)
      for _, name in ipairs({ "api health", "worker health", "web front end", "ops metrics" }) do
        assert.equals(1, #lines(r.stdout, "^%s+ok   " .. name .. "%s+200"), name .. ":\n" .. r.stdout)
        assert.matches("ok   " .. name .. " answers as expected", r.stdout)
      end
      assert.matches("5 of 6 checks ok", r.stdout)
    end)

    it("reports a wrong key on the smoke request with the server's answer", function()
      local canonical = L.dir .. "/scripts/.env.assistant"
      local saved = cli.slurp(canonical)
      assert(require("runbook.fs").write_atomic(canonical, "ASSISTANT_API_KEY=" .. crypto.random_hex(32) .. "\n",
        { mode = tonumber("600", 8) }))
      local r = L:run({ "run", "verify-deployment" })
      assert(require("runbook.fs").write_atomic(canonical, saved, { mode = tonumber("600", 8) }))
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("FAIL smoke: queue read with key%s+401 .*unauthorized", r.stdout)
      assert.matches("5 of 6 checks ok", r.stdout)
    end)
  end)

  describe("replay-dead-letters", function()
    -- r1 has had evt-dup delivered live; a dead letter for evt-dup would
    -- fail r1 if it were applied again. evt-a completes r2; evt-orphan's run
    -- does not exist, so it stays open.
    local function scenario()
      seed({ runs = { { id = "r1", owner = "alice", status = "QUEUED" }, { id = "r2", owner = "alice", status = "RUNNING" } } })
      local c = callback({ eventId = "evt-dup", runId = "r1", type = "run.started" })
      assert.equals(200, c.status, c.body)
      seed({ dead_letters = {
        { eventId = "evt-dup", payload = { runId = "r1", type = "run.failed" }, reason = "timeout" },
        { eventId = "evt-a", payload = { runId = "r2", type = "run.completed" }, reason = "timeout" },
        { eventId = "evt-orphan", payload = { runId = "r-missing", type = "run.completed" }, reason = "run r-missing not found" },
      } })
      assert.equals(3, open_letters())
      assert.equals("RUNNING", run_of("r1").status)
    end

    it("replays, the count drops, the duplicate is reported and not applied twice", function()
      scenario()
      local before = events({ "evt-dup" })["evt-dup"]
      local r = L:run({ "run", "replay-dead-letters" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("3 open dead letters", r.stdout)
      assert.matches("evt%-dup already delivered %(live", r.stdout)
      assert.matches("replayed 1, duplicates 1 %(closed, not applied%), still failing 1, remaining open 1", r.stdout)
      assert.matches("open dead letters: 3 %-> 1", r.stdout)
      assert.matches("duplicate evt%-dup: kept its original delivery %(live", r.stdout)
      assert.matches("ok   every already%-delivered eventId kept its one original delivery", r.stdout)
      -- what the hub holds now
      assert.equals(1, open_letters())
      assert.equals("RUNNING", run_of("r1").status) -- the dead letter's run.failed was not applied
      assert.equals("SUCCEEDED", run_of("r2").status)
      local after = events({ "evt-dup", "evt-a", "evt-orphan" })
      assert.same(before, after["evt-dup"])
      assert.equals("replay", after["evt-a"].source)
      assert.is_nil(after["evt-orphan"])
      assert_absent(L:hub_key("TASKS_AUTH_TOKEN"), outputs(r))
    end)

    it("fails naming the reason when no letter can be delivered", function()
      seed({ dead_letters = { { eventId = "evt-orphan", payload = { runId = "r-missing" }, reason = "run r-missing not found" } } })
      local r = L:run({ "run", "replay-dead-letters" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("FAIL the open dead%-letter count dropped: still 1 open %(was 1%): evt%-orphan: run r%-missing not found",
        r.stdout)
      assert.equals(1, open_letters())
    end)

    it("--dry-run replays nothing", function()
      scenario()
      local before = events({ "evt-dup", "evt-a", "evt-orphan" })
      local r = L:run({ "run", "replay-dead-letters", "--dry-run" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("POST http://127%.0%.0%.1:%d+/callbacks/replay .*dry%-run", r.stdout)
      assert.equals(3, open_letters())
      assert.equals("RUNNING", run_of("r2").status)
      assert.same(before, events({ "evt-dup", "evt-a", "evt-orphan" }))
    end)

    it("says there is nothing to replay when no letter is open", function()
      local r = L:run({ "run", "replay-dead-letters" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("0 open dead letters", r.stdout)
      assert.matches("skip Replay them %(condition not met%)", r.stdout)
    end)
  end)

  describe("retry-failed-run", function()
    before_each(function()
      seed({ runs = { { id = "f1", owner = "alice", status = "FAILED" }, { id = "s1", owner = "alice", status = "SUCCEEDED" } } })
    end)

    local function run_count() return get("/api/job-sources/runs").json.count end

    it("refuses a non-owner with the server's reason", function()
      local r = L:run({ "run", "retry-failed-run", "-p", "run=f1", "-p", "user=bob" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("the server refused to retry run f1 for bob: only the run owner can retry %(HTTP 403%)", r.stdout)
      assert.equals(2, run_count())
      assert.equals("FAILED", run_of("f1").status)
    end)

    it("refuses a run that is not FAILED with the server's reason", function()
      local r = L:run({ "run", "retry-failed-run", "-p", "run=s1", "-p", "user=alice" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("only FAILED runs can be retried %(status SUCCEEDED%) %(HTTP 409%)", r.stdout)
      assert.equals(2, run_count())
    end)

    it("--dry-run creates no run", function()
      local r = L:run({ "run", "retry-failed-run", "-p", "run=f1", "-p", "user=alice", "--dry-run" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("POST .*/api/job%-sources/runs/f1/retry .*dry%-run", r.stdout)
      assert.equals(2, run_count())
    end)

    it("creates a new run linked back to the original, which stays unchanged", function()
      local before = run_of("f1")
      local r = L:run({ "run", "retry-failed-run", "-p", "run=f1", "-p", "user=alice" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("ok   the new run's retry_of_run_id is the original", r.stdout)
      assert.matches("ok   the original run is unchanged", r.stdout)
      local list = get("/api/job-sources/runs").json.runs
      assert.equals(3, #list)
      local new
      for _, x in ipairs(list) do if x.retry_of_run_id == "f1" then new = x end end
      assert.is_truthy(new, "no run links back to f1")
      assert.equals("alice", new.owner)
      assert.equals("QUEUED", new.status)
      assert.matches("new run " .. new.id:gsub("%-", "%%-"), r.stdout)
      assert.same(before, run_of("f1"))
    end)
  end)

  describe("check-slos", function()
    local function notifications(key)
      return get("/api/admin/notifications" .. (key and ("?dedup_key=" .. key) or "")).json
    end

    it("exits 0 with every value printed when all are within the thresholds", function()
      seed({ metrics = { heartbeat_stale_ratio = 0.1, callback_failed_ratio = 0.02, retry_success_rate = 0.8,
        scrape_success_rate = 0.95 } })
      local r = L:run({ "run", "check-slos" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("ok +heartbeat stale ratio +0%.1 %(alert when > 0%.25%)", r.stdout)
      assert.matches("ok +callback failed ratio +0%.02 %(alert when > 0%.1%)", r.stdout)
      assert.matches("ok +retry success rate +0%.8 %(alert when < 0%.7%)", r.stdout)
      assert.matches("ok +scrape success rate +0%.95 %(alert when < 0%.9%)", r.stdout)
      assert.matches("skip Notify the alert channel", r.stdout)
      assert.equals(0, notifications().count)
    end)

    it("computes the ratios from real runs and callbacks", function()
      -- 2 of 4 running runs without a heartbeat: 0.5 > 0.25
      seed({ runs = {
        { id = "a", owner = "o", status = "RUNNING", heartbeat_age_sec = 5 },
        { id = "b", owner = "o", status = "RUNNING", heartbeat_age_sec = 5 },
        { id = "c", owner = "o", status = "RUNNING", heartbeat_age_sec = 3600 },
        { id = "d", owner = "o", status = "RUNNING", heartbeat_age_sec = 3600 },
      } })
      local r = L:run({ "run", "check-slos", "-p", "notify_interval=1s" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("BREACH heartbeat stale ratio +0%.5 > 0%.25", r.stdout)
      assert.matches("nodata retry success rate", r.stdout)
    end)

    it("exits 1 naming each breach with value and threshold, and notifies once across two runs", function()
      seed({ metrics = { heartbeat_stale_ratio = 0.4, callback_failed_ratio = 0.05, retry_success_rate = 0.5,
        scrape_success_rate = 0.85 } })
      local r = L:run({ "run", "check-slos" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("BREACH heartbeat stale ratio +0%.4 > 0%.25", r.stdout)
      assert.matches("BREACH retry success rate +0%.5 < 0%.7", r.stdout)
      assert.matches("BREACH scrape success rate +0%.85 < 0%.9", r.stdout)
      assert.matches("ok +callback failed ratio +0%.05", r.stdout)
      assert.matches("FAIL heartbeat stale ratio <= 0%.25: heartbeat_stale_ratio is 0%.4 > 0%.25", r.stdout)
      assert.matches("FAIL retry success rate >= 0%.7: retry_success_rate is 0%.5 < 0%.7", r.stdout)
      assert.matches("FAIL scrape success rate >= 0%.9: scrape_success_rate is 0%.85 < 0%.9", r.stdout)
      assert.matches("ok   callback failed ratio <= 0%.1", r.stdout)
      assert.matches("3 of 4 thresholds breached", r.stdout)
      local n = notifications()
      assert.equals(1, n.count)
      assert.matches("heartbeat stale ratio 0%.4 > 0%.25", n.items[1].text)
      assert.matches("scrape success rate 0%.85 < 0%.9", n.items[1].text)

      local again = L:run({ "run", "check-slos" })
      assert.equals(1, again.code, again.stdout .. again.stderr)
      assert.matches("already notified for this set of breaches", again.stdout)
      assert.equals(1, notifications().count)
    end)
  end)

  describe("daily-checks", function()
    it("passes on a healthy, idle hub", function()
      local r = L:run({ "run", "daily-checks" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      local checklist = step_output(r.stdout, "The daily checklist")
      assert.equals(9, #lines(checklist, "^%s+ok   [%a]"), r.stdout)
      assert.equals(0, #lines(checklist, "FAIL"), r.stdout)
      assert.matches("queue: 0 pending", r.stdout)
      assert_absent(L.key, outputs(r))
    end)

    it("fails the one item that is wrong and still judges the others", function()
      seed({ sessions = { { id = "sess-stuck", processing_status = "processing", processing_started_min_ago = 30 } } })
      local r = L:run({ "run", "daily-checks" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("FAIL no session stuck in processing: 1 sessions processing for over 10 min: sess%-stuck "
        .. "%(runbook run investigate%-queue%-failure%)", r.stdout)
      assert.matches("ok   no failed sessions awaiting review", r.stdout)
      assert.matches("ok   queue backlog near zero", r.stdout)
      assert.matches("ok   every SLO within its alert threshold", r.stdout)
      local checklist = step_output(r.stdout, "The daily checklist")
      assert.equals(1, #lines(checklist, "^%s+FAIL [%a]"), r.stdout)
      assert.equals(8, #lines(checklist, "^%s+ok   [%a]"), r.stdout)
    end)

    it("fails on open dead letters beyond the limit, allowing them with max_dead_letters", function()
      seed({ dead_letters = { { eventId = "e1", payload = { runId = "nope" } }, { eventId = "e2", payload = { runId = "nope" } } } })
      local r = L:run({ "run", "daily-checks" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("FAIL open callback dead letters within the limit: 2 open dead letters %(at most 0 allowed%)", r.stdout)
      r = L:run({ "run", "daily-checks", "-p", "max_dead_letters=2" })
      -- two open letters out of two events is also a callback failed ratio of 1.0: the SLO item fails
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("ok   open callback dead letters within the limit", r.stdout)
      assert.matches("FAIL every SLO within its alert threshold: callback failed ratio 1 > 0%.1", r.stdout)
    end)
  end)
end)
