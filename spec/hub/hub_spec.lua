-- The local hub (examples/hub) end to end: one `wrangler dev` for the whole
-- file, started by spec/helpers/hub.lua, driven over HTTP on 127.0.0.1 the
-- way the runbooks drive the real orchestrator hub.
local hub = require("hub")
local crypto = require("runbook.crypto")
local cjson_null = require("cjson").null

local function sleep(s) require("runbook.term.core").sleep(s) end

describe("#hub local hub", function()
  local h
  local K1, K2 = crypto.random_hex(32), crypto.random_hex(32)
  local SECRET = crypto.random_hex(16)
  local VARS = {
    QUEUE_API_KEY = K1, ASSISTANT_API_KEY = K2, WORKER_CALLBACK_SECRET = SECRET,
    SESSION_PROCESS_DELAY_MS = "300", QUEUE_MAX = "5", QUEUE_RETRY_AFTER_SEC = "11",
  }

  setup(function()
    h = hub.start({ vars = VARS })
  end)

  teardown(function()
    if h then h.stop() end
  end)

  before_each(function()
    h.reset()
  end)

  local function key(k) return { ["X-API-Key"] = k } end

  it("the helper refuses a port another process listens on (its health would answer for a hub that never bound)",
    function()
      local ok, err = pcall(hub.start, { port = h.port, vars = VARS })
      assert.is_false(ok)
      assert.equals(("hub: port %d is taken by another process"):format(h.port), err)
    end)

  -- Everything the hub answered must be free of the keys.
  local function no_secret(r)
    local all = r.body
    for k, v in pairs(r.headers) do all = all .. k .. v end
    for _, s in ipairs({ K1, K2, SECRET }) do
      assert.is_nil(all:find(s, 1, true), "a response echoed a secret")
    end
  end

  -- Poll `fn` until it returns a truthy value (bounded: ~10 s).
  local function eventually(fn)
    for _ = 1, 100 do
      local v = fn()
      if v then return v end
      sleep(0.1)
    end
    error("condition not met within 10 s")
  end

  describe("start-up", function()
    it("wrote .dev.vars with mode 0600 and kept the secrets out of every argv", function()
      local st = assert(require("runbook.fs.core").stat(h.dev_vars_path))
      assert.equals(384, st.mode & 511) -- 0600
      local text = assert(io.open(h.dev_vars_path)):read("a")
      assert.truthy(text:find(K1, 1, true))
      local members = hub._group_members(h._proc.pid)
      assert.is_true(#members >= 2) -- wrangler and workerd at least
      for _, pid in ipairs(members) do
        local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
        local cmd = f and f:read("a") or ""
        if f then f:close() end
        assert.is_nil(cmd:find(K1, 1, true))
        assert.is_nil(cmd:find(SECRET, 1, true))
      end
    end)
  end)

  describe("health", function()
    it("GET /api/health names the worker", function()
      local r = assert(h.get("/api/health"))
      assert.equals(200, r.status)
      assert.equals("ok", r.json.status)
      assert.equals("orchestrator-hub", r.json.worker)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT", r.json.time)
    end)

    it("GET /api/ready touches D1 and KV and says which one failed", function()
      local r = assert(h.get("/api/ready"))
      assert.equals(200, r.status)
      assert.same({ status = "ok", d1 = true, kv = true }, r.json)

      h.fault({ path_prefix = "/api/ready", count = 1, binding = "d1" })
      r = assert(h.get("/api/ready"))
      assert.equals(503, r.status)
      assert.is_false(r.json.d1)
      assert.is_true(r.json.kv)
      assert.is_string(r.json.errors.d1)

      h.fault({ path_prefix = "/api/ready", count = 1, binding = "kv" })
      r = assert(h.get("/api/ready"))
      assert.equals(503, r.status)
      assert.is_true(r.json.d1)
      assert.is_false(r.json.kv)

      assert.equals(200, assert(h.get("/api/ready")).status)
    end)
  end)

  describe("queue API key", function()
    it("401 without a key", function()
      local r = assert(h.get("/api/queue"))
      assert.equals(401, r.status)
      assert.same({ error = "unauthorized" }, r.json)
    end)

    it("401 with a wrong key, also one that shares a prefix with the right one", function()
      for _, bad in ipairs({ "wrong", K1:sub(1, 63), K1 .. "0", K1:upper() }) do
        local r = assert(h.get("/api/queue", key(bad)))
        assert.equals(401, r.status)
        no_secret(r)
      end
    end)

    it("200 with QUEUE_API_KEY and with ASSISTANT_API_KEY", function()
      for _, k in ipairs({ K1, K2 }) do
        local r = assert(h.get("/api/queue", key(k)))
        assert.equals(200, r.status)
        assert.equals(0, r.json.pending)
        no_secret(r)
      end
    end)

    it("enqueues, lists and peeks", function()
      local r = assert(h.post("/api/queue", { task = { kind = "sync" } }, key(K1)))
      assert.equals(201, r.status)
      local id = r.json.id
      assert.is_string(id)
      r = assert(h.post("/api/queue", { task = "second" }, key(K2)))
      assert.equals(201, r.status)

      r = assert(h.get("/api/queue", key(K1)))
      assert.equals(2, r.json.pending)
      assert.equals(id, r.json.tasks[1].id)
      assert.same({ kind = "sync" }, r.json.tasks[1].task)

      r = assert(h.get("/api/queue/peek", key(K2)))
      assert.equals(id, r.json.task.id)
      assert.equals(400, assert(h.post("/api/queue", { nope = 1 }, key(K1))).status)
      assert.equals(401, assert(h.post("/api/queue", { task = 1 })).status)
    end)

    it("answers 429 with Retry-After once QUEUE_MAX tasks are pending", function()
      for i = 1, 5 do
        assert.equals(201, assert(h.post("/api/queue", { task = i }, key(K1))).status)
      end
      local r = assert(h.post("/api/queue", { task = 6 }, key(K1)))
      assert.equals(429, r.status)
      assert.equals("11", r.headers["retry-after"])
      assert.equals(5, r.json.pending)
      assert.equals(5, assert(h.get("/api/queue", key(K1))).json.pending)
    end)
  end)

  describe("notification sink", function()
    it("records every post and lists them with counts", function()
      for i = 1, 3 do
        local r = assert(h.post("/hooks/slack", { text = "Workers Hub HTTP 401 #" .. i, dedup_key = "q401" }))
        assert.equals(200, r.status)
        assert.equals("ok", r.body)
      end
      assert.equals(200, assert(h.post("/hooks/slack", { text = "other" })).status)
      assert.equals(400, assert(h.post("/hooks/slack", { dedup_key = "x" })).status)

      local r = assert(h.get("/api/admin/notifications"))
      assert.equals(4, r.json.count)
      assert.equals("Workers Hub HTTP 401 #1", r.json.items[1].text)
      assert.equals(3, assert(h.get("/api/admin/notifications?dedup_key=q401")).json.count)
    end)
  end)

  describe("KV usage counter", function()
    it("counts the worker's KV operations per day and can be set", function()
      local before = assert(h.get("/api/admin/kv-usage")).json
      assert.equals(0, before.read)
      h.get("/api/ready") -- one KV get
      h.get("/api/ready")
      local after = assert(h.get("/api/admin/kv-usage")).json
      assert.equals(2, after.read)
      assert.equals(1000, after.limits.write)

      local set = h.admin("/api/admin/kv-usage", { write = 850, list = 10 })
      assert.equals(850, set.write)
      assert.equals(0.85, set.ratio.write)
      assert.equals(0.85, set.max_ratio)
      assert.equals(2, set.read)
    end)
  end)

  describe("fault injection", function()
    it("fails the next N requests under a prefix with a 5xx, then recovers", function()
      h.fault({ path_prefix = "/api/queue", count = 2, status = 503 })
      assert.equals(2, assert(h.get("/api/admin/faults")).json.remaining)
      assert.equals(503, assert(h.get("/api/queue", key(K1))).status)
      assert.equals(503, assert(h.get("/api/queue/peek", key(K1))).status)
      assert.equals(200, assert(h.get("/api/queue", key(K1))).status)
      assert.equals(0, assert(h.get("/api/admin/faults")).json.remaining)
      -- other paths were never affected
      assert.equals(200, assert(h.get("/api/health")).status)
    end)

    it("answers 429 with the given Retry-After", function()
      h.fault({ path_prefix = "/api/", count = 1, status = 429, retry_after = 7 })
      local r = assert(h.get("/api/health"))
      assert.equals(429, r.status)
      assert.equals("7", r.headers["retry-after"])
      assert.equals(200, assert(h.get("/api/health")).status)
    end)

    it("a delay-only fault lets the request through and is used up", function()
      h.fault({ path_prefix = "/api/health", count = 1, delay_ms = 50 })
      assert.equals(200, assert(h.get("/api/health")).status)
      assert.equals(0, assert(h.get("/api/admin/faults")).json.remaining)
    end)

    it("refuses a status that is not 429 or 5xx", function()
      local r = assert(h.post("/api/admin/faults", { path_prefix = "/api/", status = 404 }))
      assert.equals(400, r.status)
    end)
  end)

  describe("admin endpoints", function()
    it("refuse a request not addressed to 127.0.0.1/localhost", function()
      local r = assert(h.request({ method = "POST", path = "/api/admin/reset", json = {},
        headers = { Host = "orchestrator-hub.example.workers.dev" } }))
      assert.equals(403, r.status)
      assert.equals("forbidden", r.json.error)
    end)
  end)

  describe("queue KV -> D1 migration", function()
    local function migrate(kind, body, k)
      return assert(h.post("/api/admin/queue/migrate-" .. kind .. "-kv-to-d1", body, key(k or K1)))
    end

    -- Follow the cursor to the end; returns the pages' answers.
    local function all_pages(kind, limit, cleanup)
      local pages, cursor = {}, nil
      for _ = 1, 100 do
        local r = migrate(kind, { limit = limit, cleanup = cleanup, cursor = cursor or cjson_null })
        assert.equals(200, r.status)
        pages[#pages + 1] = r.json
        if r.json.done then
          assert.equals(cjson_null, r.json.cursor)
          return pages
        end
        assert.is_string(r.json.cursor)
        cursor = r.json.cursor
      end
      error("migration did not finish")
    end

    local function counts()
      local r = assert(h.get("/api/admin/queue/counts", key(K2)))
      assert.equals(200, r.status)
      return r.json
    end

    local function sum(pages, field)
      local n = 0
      for _, p in ipairs(pages) do n = n + p[field] end
      return n
    end

    it("needs a queue key", function()
      assert.equals(401, assert(h.post("/api/admin/queue/migrate-tasks-kv-to-d1", { limit = 10 })).status)
      assert.equals(401, assert(h.get("/api/admin/queue/counts")).status)
    end)

    it("pages with a cursor, is idempotent, cleans up only what D1 holds, and counts reconcile", function()
      h.seed({ queue_tasks_kv = 2500, queue_results_kv = { count = 700 },
        kv = { ["queue:task:broken"] = "not json" } })
      assert.same({ kv = { tasks = 2501, results = 700 }, d1 = { tasks = 0, results = 0 } }, counts())

      local usage0 = assert(h.get("/api/admin/kv-usage")).json
      local pages = all_pages("tasks", 1000, false)
      assert.equals(3, #pages)
      assert.same({ 1000, 1000, 501 }, { pages[1].scanned, pages[2].scanned, pages[3].scanned })
      assert.equals(2500, sum(pages, "migrated"))
      assert.equals(1, sum(pages, "invalid"))
      assert.equals(1, sum(pages, "skipped"))
      assert.equals(0, sum(pages, "cleaned"))
      -- one KV list per page, one get per key: the counter saw exactly that
      local usage1 = assert(h.get("/api/admin/kv-usage")).json
      assert.equals(3, usage1.list - usage0.list)
      assert.equals(2501, usage1.read - usage0.read)

      -- a second run changes nothing
      local again = all_pages("tasks", 1000, false)
      assert.equals(0, sum(again, "migrated"))
      assert.equals(2501, sum(again, "skipped"))
      assert.same({ kv = { tasks = 2501, results = 700 }, d1 = { tasks = 2500, results = 0 } }, counts())

      -- results, small pages, with cleanup
      local rp = all_pages("results", 300, true)
      assert.equals(3, #rp)
      assert.equals(700, sum(rp, "migrated"))
      assert.equals(700, sum(rp, "cleaned"))

      -- cleanup of tasks removes the migrated keys, keeps the broken one
      local cp = all_pages("tasks", 1000, true)
      assert.equals(0, sum(cp, "migrated"))
      assert.equals(2500, sum(cp, "cleaned"))
      assert.same({ kv = { tasks = 1, results = 0 }, d1 = { tasks = 2500, results = 700 } }, counts())

      -- the migrated tasks are what the queue API now serves
      local r = assert(h.get("/api/queue/task-000001", key(K1)))
      assert.equals(200, r.status)
      assert.same({ kind = "demo", n = 1 }, r.json.task)
      assert.same({ ok = true, n = 1 }, r.json.result)
    end)

    it("#slow seeds 10,000 KV tasks in one call and migrates them all", function()
      local s = h.seed({ queue_tasks_kv = 10000 })
      assert.equals(10000, s.seeded.queue_tasks_kv)
      assert.equals(10000, counts().kv.tasks)
      local pages = all_pages("tasks", 1000, true)
      assert.equals(10, #pages)
      assert.equals(10000, sum(pages, "migrated"))
      assert.same({ kv = { tasks = 0, results = 0 }, d1 = { tasks = 10000, results = 0 } }, counts())
    end)
  end)

  describe("sessions", function()
    it("lists sessions stuck in processing for more than N minutes", function()
      h.seed({ sessions = {
        { id = "s-stuck", processing_status = "processing", processing_started_min_ago = 15 },
        { id = "s-fresh", processing_status = "processing", processing_started_min_ago = 2 },
        { id = "s-done", processing_status = "processed" },
      } })
      local r = assert(h.get("/api/sessions?status=processing&older_than_min=10"))
      assert.equals(1, r.json.count)
      assert.equals("s-stuck", r.json.sessions[1].id)
      assert.equals(2, assert(h.get("/api/sessions?status=processing")).json.count)
    end)

    it("reprocess clears the processing events, re-queues, and fails without ANTHROPIC_API_KEY", function()
      h.seed({ sessions = { { id = "s1", processing_status = "failed", events = {
        { type = "session.created" },
        { type = "session.processing_started" },
        { type = "session.processing_failed", data = { reason = "timeout" } },
      } } } })
      assert.equals(401, assert(h.post("/api/sessions/s1/reprocess", {})).status)
      assert.equals(404, assert(h.post("/api/sessions/nope/reprocess", {}, key(K1))).status)

      local r = assert(h.post("/api/sessions/s1/reprocess", {}, key(K1)))
      assert.equals(202, r.status)
      assert.equals("processing", r.json.processing_status)

      r = assert(h.get("/api/sessions/s1"))
      local types = {}
      for _, e in ipairs(r.json.events) do types[#types + 1] = e.type end
      if r.json.processing_status == "processing" then
        assert.same({ "session.created", "session.processing_started" }, types)
      end

      local final = eventually(function()
        local s = assert(h.get("/api/sessions/s1")).json
        return s.processing_status ~= "processing" and s
      end)
      assert.equals("failed", final.processing_status)
      assert.equals("failed", final.session.processing_status)
      local last = final.events[#final.events]
      assert.equals("session.processing_failed", last.type)
      assert.equals("ANTHROPIC_API_KEY is not set", last.data.reason)
      -- exactly one outcome event
      local failed = 0
      for _, e in ipairs(final.events) do
        if e.type == "session.processing_failed" then failed = failed + 1 end
      end
      assert.equals(1, failed)
    end)

    it("404 names a missing session", function()
      local r = assert(h.get("/api/sessions/none"))
      assert.equals(404, r.status)
      assert.equals("Session not found", r.json.reason)
    end)
  end)

  describe("job-source run retry", function()
    before_each(function()
      h.seed({ runs = {
        { id = "r-failed", owner = "alice", status = "FAILED" },
        { id = "r-running", owner = "alice", status = "RUNNING" },
      } })
    end)

    local function retry(id, user)
      return assert(h.post("/api/job-sources/runs/" .. id .. "/retry", {}, user and { ["X-User"] = user }))
    end

    it("only the owner may retry", function()
      local r = retry("r-failed", "bob")
      assert.equals(403, r.status)
      assert.equals("only the run owner can retry", r.json.reason)
      assert.equals(401, retry("r-failed", nil).status)
    end)

    it("only FAILED runs", function()
      local r = retry("r-running", "alice")
      assert.equals(409, r.status)
      assert.matches("only FAILED runs", r.json.reason)
      assert.equals(404, retry("r-none", "alice").status)
    end)

    it("creates a new run linked to the original, which stays unchanged", function()
      local r = retry("r-failed", "alice")
      assert.equals(201, r.status)
      assert.equals("r-failed", r.json.run.retry_of_run_id)
      assert.equals("QUEUED", r.json.run.status)
      assert.equals("alice", r.json.run.owner)
      assert.are_not.equal("r-failed", r.json.run.id)
      local orig = assert(h.get("/api/job-sources/runs/r-failed")).json.run
      assert.equals("FAILED", orig.status)
      assert.equals(cjson_null, orig.retry_of_run_id)
      assert.equals(3, assert(h.get("/api/job-sources/runs")).json.count)
    end)
  end)

  describe("signed worker callbacks", function()
    local function send(event, opts)
      opts = opts or {}
      local body = type(event) == "string" and event or require("cjson").encode(event)
      local ts = tostring(opts.ts or os.time())
      local sig = opts.sig or crypto.hmac_sha256_hex(opts.secret or SECRET, ts .. "." .. body)
      local headers = { ["Content-Type"] = "application/json" }
      if not opts.unsigned then
        headers["x-worker-timestamp"] = ts
        headers["x-worker-signature"] = sig
      end
      return assert(h.post("/callbacks/worker", body, headers))
    end

    before_each(function()
      h.seed({ runs = { { id = "r1", owner = "alice", status = "RUNNING" } } })
    end)

    it("accepts a signed callback and applies it once; a replayed eventId is 409", function()
      local r = send({ eventId = "e1", runId = "r1", type = "run.completed" })
      assert.equals(200, r.status)
      assert.equals("SUCCEEDED", assert(h.get("/api/job-sources/runs/r1")).json.run.status)
      r = send({ eventId = "e1", runId = "r1", type = "run.failed" })
      assert.equals(409, r.status)
      assert.equals("SUCCEEDED", assert(h.get("/api/job-sources/runs/r1")).json.run.status)
    end)

    it("rejects a wrong signature, a wrong secret, a stale timestamp and a missing signature", function()
      local ev = { eventId = "e2", runId = "r1" }
      assert.equals("invalid signature", send(ev, { sig = string.rep("0", 64) }).json.reason)
      assert.equals("invalid signature", send(ev, { secret = "other" }).json.reason)
      local stale = send(ev, { ts = os.time() - 400 })
      assert.equals(401, stale.status)
      assert.equals("timestamp outside tolerance", stale.json.reason)
      assert.equals(401, send(ev, { ts = os.time() + 400 }).status)
      assert.equals("missing signature", send(ev, { unsigned = true }).json.reason)
      -- none of these was applied: the event is still deliverable
      assert.equals(200, send(ev).status)
    end)

    it("dead-letters an undeliverable callback and replays each dead letter once", function()
      local r = send({ eventId = "e3", runId = "r-later", type = "run.completed" })
      assert.equals(422, r.status)
      assert.is_true(r.json.dead_lettered)
      assert.equals(1, assert(h.get("/api/admin/dead-letters")).json.count)

      local m = assert(h.get("/ops/metrics")).json
      assert.equals(1, m.callback_events_failed)

      assert.equals(401, assert(h.post("/callbacks/replay", {})).status)
      -- still undeliverable: stays
      r = assert(h.post("/callbacks/replay", {}, key(K1)))
      assert.same({ replayed = 0, duplicates = 0, failed = 1, remaining = 1 }, r.json)

      h.seed({ runs = { { id = "r-later", owner = "bob", status = "RUNNING" } } })
      r = assert(h.post("/callbacks/replay", {}, key(K2)))
      assert.same({ replayed = 1, duplicates = 0, failed = 0, remaining = 0 }, r.json)
      assert.equals("SUCCEEDED", assert(h.get("/api/job-sources/runs/r-later")).json.run.status)

      r = assert(h.post("/callbacks/replay", {}, key(K1)))
      assert.same({ replayed = 0, duplicates = 0, failed = 0, remaining = 0 }, r.json)
      assert.equals(0, assert(h.get("/api/admin/dead-letters")).json.count)
      assert.equals(0, assert(h.get("/ops/metrics")).json.callback_events_failed)
    end)

    it("replay never delivers an eventId that was already delivered", function()
      assert.equals(200, send({ eventId = "e4", runId = "r1", type = "run.failed" }).status)
      h.seed({ dead_letters = { { eventId = "e4", payload = { runId = "r1", type = "run.completed" } } } })
      local r = assert(h.post("/callbacks/replay", {}, key(K1)))
      assert.same({ replayed = 0, duplicates = 1, failed = 0, remaining = 0 }, r.json)
      assert.equals("FAILED", assert(h.get("/api/job-sources/runs/r1")).json.run.status)
    end)
  end)

  describe("/ops/metrics", function()
    it("computes the SLO inputs from runs and callbacks, and seeded values override them", function()
      h.seed({ runs = {
        { id = "a", owner = "o", status = "RUNNING", heartbeat_age_sec = 5 },
        { id = "b", owner = "o", status = "RUNNING", heartbeat_age_sec = 600 },
        { id = "c", owner = "o", status = "SUCCEEDED" },
        { id = "d", owner = "o", status = "SUCCEEDED" },
        { id = "e", owner = "o", status = "SUCCEEDED", retry_of_run_id = "f" },
        { id = "f", owner = "o", status = "FAILED" },
      } })
      local m = assert(h.get("/ops/metrics")).json
      assert.equals(2, m.running_runs)
      assert.equals(1, m.runs_without_heartbeat)
      assert.equals(0.5, m.heartbeat_stale_ratio)
      assert.equals(0.75, m.scrape_success_rate)
      assert.equals(1, m.retry_success_rate)
      assert.equals(0, m.callback_events_total)

      h.seed({ metrics = { scrape_success_rate = 0.85, callback_events_total = 100, callback_events_failed = 20 } })
      m = assert(h.get("/ops/metrics")).json
      assert.equals(0.85, m.scrape_success_rate)
      assert.equals(0.2, m.callback_failed_ratio)
      assert.truthy(m.overridden[1])

      h.seed({ metrics = { scrape_success_rate = cjson_null } })
      assert.equals(0.75, assert(h.get("/ops/metrics")).json.scrape_success_rate)
    end)
  end)

  -- Last: these restart the hub (state survives; secrets change).
  describe("restart", function()
    it("a hub with no keys set refuses every key", function()
      h.restart({})
      assert.equals(401, assert(h.get("/api/queue", key(K1))).status)
      assert.equals(401, assert(h.get("/api/queue", key(""))).status)
    end)

    it("with a rotated key the old keys are 401, the new one 200, data kept", function()
      h.restart(VARS)
      assert.equals(201, assert(h.post("/api/queue", { task = "survives" }, key(K1))).status)
      local K3 = crypto.random_hex(32)
      local vars = {}
      for k, v in pairs(VARS) do vars[k] = v end
      vars.QUEUE_API_KEY, vars.ASSISTANT_API_KEY, vars.ANTHROPIC_API_KEY = K3, K3, "sk-test"
      h.restart(vars)
      assert.equals(401, assert(h.get("/api/queue", key(K1))).status)
      assert.equals(401, assert(h.get("/api/queue", key(K2))).status)
      local r = assert(h.get("/api/queue", key(K3)))
      assert.equals(200, r.status)
      assert.equals("survives", r.json.tasks[1].task)
    end)

    it("once ANTHROPIC_API_KEY is set, a reprocessed session is processed", function()
      assert.equals("sk-test", h.vars.ANTHROPIC_API_KEY)
      local K3 = h.vars.QUEUE_API_KEY
      h.seed({ sessions = { { id = "s2", processing_status = "failed", events = {
        { type = "session.processing_failed", data = { reason = "ANTHROPIC_API_KEY is not set" } } } } } })
      assert.equals(202, assert(h.post("/api/sessions/s2/reprocess", {}, key(K3))).status)
      local final = eventually(function()
        local s = assert(h.get("/api/sessions/s2")).json
        return s.processing_status ~= "processing" and s
      end)
      assert.equals("processed", final.processing_status)
      assert.equals("session.processed", final.events[#final.events].type)
      assert.equals(3, final.session.signal_count)
    end)
  end)
end)
