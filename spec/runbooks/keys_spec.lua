-- The queue-key runbooks of seeds 000 and 001 against the real hub (wrangler
-- dev) and the example daemon: a key drift injected behind the tool's back
-- is noticed by the daemon (one notification, not one per poll), found by
-- check-secret-drift (exactly the drifted holder, reported once), fixed by
-- recover-queue-401; sync-queue-keys --dry-run changes nothing; KV usage is
-- judged against the Free plan's limits.
local localenv = require("localenv")
local cli = require("cli")
local crypto = require("runbook.crypto")
local cjson = require("cjson")
local term = require("runbook.term.core")

local function forms(key)
  return { key, crypto.b64(key), crypto.hex(key) }
end

-- wait (bounded) until fn() is truthy; returns its value or nil
local function wait_for(fn, timeout)
  local t_end = term.monotonic() + (timeout or 60)
  repeat
    local v = fn()
    if v then return v end
    term.sleep(0.2)
  until term.monotonic() > t_end
  return nil
end

local function count_prefix(items, prefix)
  local n = 0
  for _, it in ipairs(items or {}) do
    if (it.dedup_key or ""):sub(1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

describe("#hub queue key runbooks", function()
  local L
  local outputs = {}   -- everything the tool printed, searched for keys at the end
  local keys = {}      -- every key value used, ditto

  local function run(args, o)
    local r = L:run(args, o)
    outputs[#outputs + 1] = r.stdout
    outputs[#outputs + 1] = r.stderr
    return r
  end

  local function notes(prefix)
    return count_prefix(L:notifications().items, prefix)
  end

  local function files()
    return { L.dir .. "/scripts/.env.assistant", L.dir .. "/hub-src/.dev.vars", L.dir .. "/daemon/.env" }
  end

  setup(function()
    L = localenv.start({ min_notify = 3600, poll_interval = 0.5 })
    keys[#keys + 1] = L.key
  end)
  teardown(function() if L then L:stop() end end)

  it("every key runbook passes `runbook check`", function()
    local r = run({ "check", "sync-queue-keys", "recover-queue-401", "check-secret-drift", "check-kv-usage" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("4 runbooks, 0 failed", r.stdout)
  end)

  it("sync-queue-keys leaves holders that already agree alone and proves the key by probe", function()
    local before = {}
    for i, f in ipairs(files()) do before[i] = cli.slurp(f) end
    local pid = L:daemon_status().pid
    local r = run({ "run", "sync-queue-keys", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("orchestrator%-hub %(local %.dev%.vars%): already holds sha256:%x+; left alone", r.stdout)
    assert.matches("daemon: already uses sha256:%x+; not restarted", r.stdout)
    assert.matches("ok +with the canonical key: 200", r.stdout)
    assert.is_nil(r.stdout:find("hubctl.lua restart", 1, true))
    for i, f in ipairs(files()) do assert.equals(before[i], cli.slurp(f), f .. " was rewritten") end
    assert.equals(pid, L:daemon_status().pid)
  end)

  it("a drifted hub key: the daemon polls 401 many times but notifies once", function()
    assert.equals(0, notes("daemon-poll"))
    local drifted = L:drift_hub()
    keys[#keys + 1] = drifted
    assert.equals(401, L:queue_status(L.key))
    local start = L:daemon_status().failures
    local s = wait_for(function()
      local st = L:daemon_status()
      return st and st.status == 401 and st.failures >= start + 8 and st
    end, 90)
    assert.is_truthy(s, "the daemon did not poll 401 eight times")
    assert.equals(1, notes("daemon-poll"))
    local item
    for _, it in ipairs(L:notifications().items) do
      if it.dedup_key:match("^daemon%-poll") then item = it end
    end
    assert.matches("/api/queue", item.text)
  end)

  it("check-secret-drift fails naming exactly the hub, and notifies once", function()
    local r = run({ "run", "check-secret-drift" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local list = r.stdout:match("drifted holders: ([^\n]*)")
    assert.equals("orchestrator-hub (local .dev.vars)", list)
    assert.matches("FAIL.*Verdict", r.stdout)
    assert.matches("drifted: orchestrator%-hub %(local %.dev%.vars%) — run `runbook run sync%-queue%-keys", r.stdout)
    -- side by side: the canonical file and the daemon are fine
    assert.matches("canonical %([^\n]*sha256:%x+", r.stdout)
    assert.matches("\n[^\n]*daemon env %([^\n]*sha256:%x+ [^\n]* ok\n", r.stdout)
    assert.matches("\n[^\n]*daemon process %(pid %d+%)[^\n]* ok\n", r.stdout)
    -- each distinct key was probed: the canonical one is refused, the hub's accepted
    assert.matches(crypto.fingerprint(L.key) .. " +%-> HTTP 401", r.stdout)
    assert.matches(crypto.fingerprint(keys[2]) .. " +%-> HTTP 200", r.stdout)
    assert.equals(1, notes("secret-drift:"))
    local text = L:notifications().items
    for _, it in ipairs(text) do
      if it.dedup_key:match("^secret%-drift:") then
        assert.matches("orchestrator%-hub %(local %.dev%.vars%) differ", it.text)
        assert.is_nil(it.text:find("daemon", 1, true))
      end
    end
  end)

  it("a second check-secret-drift with the same drift does not notify again", function()
    local r = run({ "run", "check-secret-drift" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("notification suppressed", r.stdout)
    assert.equals(1, notes("secret-drift:"))
  end)

  it("sync-queue-keys --dry-run shows the writes and makes none", function()
    local before = {}
    for i, f in ipairs(files()) do before[i] = cli.slurp(f) end
    local pid = L:daemon_status().pid
    local r = run({ "run", "sync-queue-keys", "--dry-run" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("write [^\n]*/hub%-src/%.dev%.vars [^\n]*dry%-run", r.stdout)
    assert.matches("hubctl%.lua restart [^\n]*dry%-run", r.stdout)
    for i, f in ipairs(files()) do assert.equals(before[i], cli.slurp(f), f .. " changed") end
    assert.equals(401, L:queue_status(L.key))
    assert.equals(200, L:queue_status(keys[2]))
    assert.equals(pid, L:daemon_status().pid)
  end)

  it("recover-queue-401 confirms the 401, syncs, and every holder agrees again", function()
    local r = run({ "run", "recover-queue-401", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("symptom confirmed: HTTP 401", r.stdout)
    assert.matches("after the sync: HTTP 200", r.stdout)
    assert.matches("skip +Diagnose", r.stdout)
    local canonical = L:canonical_key()
    assert.equals(L.key, canonical)
    assert.equals(canonical, L:hub_key("QUEUE_API_KEY"))
    assert.equals(canonical, L:hub_key("ASSISTANT_API_KEY"))
    assert.equals(canonical, L:daemon_key())
    assert.equals(200, L:queue_status(canonical))
    assert.equals(401, L:queue_status(keys[2]))
    local s = wait_for(function()
      local st = L:daemon_status()
      return st and st.status == 200 and st
    end, 60)
    assert.is_truthy(s, "the daemon's polls did not recover")
    assert.equals(crypto.fingerprint(canonical), s.key_fingerprint)
    -- the hub's restart during the recovery did not notify again either
    assert.equals(1, notes("daemon-poll"))
  end)

  it("check-secret-drift is then ok, and recover-queue-401 finds no symptom", function()
    local r = run({ "run", "check-secret-drift" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("no drift: every holder uses " .. crypto.fingerprint(L.key), r.stdout)
    assert.equals(1, notes("secret-drift:"))
    r = run({ "run", "recover-queue-401", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("no symptom: the queue accepts the canonical key", r.stdout)
    assert.matches("skip +Sync the canonical key", r.stdout)
  end)

  it("a drifted daemon: check-secret-drift names its env and process, a new state notifies, sync restarts it", function()
    local pid = L:daemon_status().pid
    local dk = L:drift_daemon()
    keys[#keys + 1] = dk
    assert.not_equals(pid, L:daemon_status().pid)
    local r = run({ "run", "check-secret-drift" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local list = r.stdout:match("drifted holders: ([^\n]*)")
    assert.matches("^daemon env %([^;]*%); daemon process %(pid %d+%)$", list)
    -- a different drift state is a different report
    assert.equals(2, notes("secret-drift:"))
    r = run({ "run", "sync-queue-keys", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("daemon %([^\n]*write%+restart +daemon env has " .. crypto.fingerprint(dk), r.stdout)
    assert.matches("daemonctl%.lua restart", r.stdout)
    assert.matches("already holds sha256:%x+; left alone", r.stdout)
    assert.equals(L.key, L:daemon_key())
    local s = L:daemon_status()
    assert.equals(crypto.fingerprint(L.key), s.key_fingerprint)
    assert.equals(0, run({ "run", "check-secret-drift" }).code)
  end)

  it("recover-queue-401 names a wrong wrangler account when the sync did not help", function()
    local prod = crypto.random_hex(32)
    keys[#keys + 1] = prod
    local f = assert(io.open(L.dir .. "/prod/.env.assistant", "w"))
    f:write("ASSISTANT_API_KEY=", prod, "\n")
    f:close()
    local r = run({ "run", "recover-queue-401", "--env", "production", "--yes", "-p", "propagation_timeout=1s",
      "-p", "account=ops@example.com" }, { env_add = { WRANGLER_EMAIL = "intruder@example.com" } })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("resolved target: " .. L.url:gsub("%p", "%%%0") .. "/api/queue", r.stdout)
    assert.matches("FAIL +Diagnose", r.stdout)
    assert.matches("wrong account: wrangler is logged in as intruder@example%.com, expected ops@example%.com", r.stdout)
    -- secrets went by stdin, and were listed by name only
    local log = cli.slurp(L.wrangler_log) or ""
    assert.matches("secret put QUEUE_API_KEY %-%-name orchestrator%-hub %-%-env production stdin=%x+", log)
    assert.matches("\nwhoami", "\n" .. log)
    assert.matches("secret list %-%-name orchestrator%-hub %-%-env production %-%-format json", log)
    outputs[#outputs + 1] = log
  end)

  it("check-secret-drift on deployed Workers: names listed, and a queue refusing the canonical key is drift", function()
    -- production's canonical key (set by the previous test) is not what the queue serves
    local r = run({ "run", "check-secret-drift", "--env", "production", "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("orchestrator%-hub %-%-env production +listed +listed", r.stdout)
    local list = r.stdout:match("drifted holders: ([^\n]*)")
    assert.equals("served by " .. L.url .. "/api/queue", list)
    assert.matches("has no notify_url", r.stdout)
  end)

  it("recover-queue-401 names a wrong URL/environment when the Worker there is another one", function()
    local text = cli.slurp(L.project)
    local patched = text:gsub("url = url, protected = true,", 'url = url, protected = true, worker_name = "orchestrator-hub-canary",', 1)
    assert.not_equals(text, patched)
    local path = L.dir .. "/runbook-canary.lua"
    local f = assert(io.open(path, "w"))
    f:write(patched)
    f:close()
    local r = run({ "run", "recover-queue-401", "--env", "production", "--yes", "-p", "propagation_timeout=1s" },
      { env_add = { RUNBOOK_PROJECT = path } })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("wrong URL/environment: [^\n]* serves Worker 'orchestrator%-hub', expected 'orchestrator%-hub%-canary'",
      r.stdout)
  end)

  describe("check-kv-usage", function()
    local function set_usage(t)
      local r = L:request("POST", "/api/admin/kv-usage", { body = cjson.encode(t),
        headers = { ["Content-Type"] = "application/json" } })
      assert.equals(200, r.status, r.body)
    end

    it("79 % is ok and sends nothing", function()
      set_usage({ read = 79000, write = 10, delete = 0, list = 0 })
      local r = run({ "run", "check-kv-usage" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("read +79,000 / 100,000 +79%.0 %%", r.stdout)
      assert.matches("skip +Notify once", r.stdout)
      assert.equals(0, notes("kv-usage:"))
    end)

    it("85 % notifies once, not on every run", function()
      set_usage({ read = 100, write = 850, delete = 0, list = 0 })
      local r = run({ "run", "check-kv-usage" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("write +850 / 1,000 +85%.0 %%  over threshold", r.stdout)
      assert.equals(1, notes("kv-usage:"))
      r = run({ "run", "check-kv-usage" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("notification suppressed", r.stdout)
      assert.equals(1, notes("kv-usage:"))
      -- the threshold is a parameter
      r = run({ "run", "check-kv-usage", "-p", "threshold=90" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
      assert.matches("skip +Notify once", r.stdout)
    end)

    it("101 % fails naming the operation", function()
      set_usage({ read = 100, write = 10, delete = 1010, list = 0 })
      local r = run({ "run", "check-kv-usage" })
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("delete +1,010 / 1,000 +101%.0 %%  LIMIT REACHED", r.stdout)
      assert.matches("delete 101%.0 %%: KV refuses these until 00:00 UTC", r.stdout)
    end)
  end)

  it("no key appears in any output, notification or the journal", function()
    local all = {}
    for _, o in ipairs(outputs) do all[#all + 1] = o end
    all[#all + 1] = cli.slurp(L.journal) or ""
    all[#all + 1] = cli.slurp(L.journal .. "-wal") or ""
    all[#all + 1] = cjson.encode(L:notifications())
    all[#all + 1] = L:run({ "history" }).stdout
    assert.is_true(#keys >= 3)
    for _, k in ipairs(keys) do
      for i, out in ipairs(all) do
        for _, form in ipairs(forms(k)) do
          assert.is_nil(out:find(form, 1, true), "output #" .. i .. " contains a key")
        end
      end
    end
  end)
end)
