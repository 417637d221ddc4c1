-- apply-d1-migrations and release (seed 004's "local unless --remote" and
-- its canary/default confusion) end to end: the local hub under wrangler
-- dev for -p where=local, the recording stand-in wrangler for the deployed
-- `production` environment. What an operator would notice: a run without
-- `where` refused before anything happens; LOCAL or REMOTE stated with what
-- it resolves to; a dry-run that prints the exact wrangler argv and changes
-- nothing; the script name asked for before a remote deploy; a URL that
-- serves another script caught; a local release restarting the hub.
local localenv = require("localenv")
local cli = require("cli")
local crypto = require("runbook.crypto")

local function out(r) return r.stdout .. r.stderr end

describe("#hub apply-d1-migrations and release", function()
  local L
  local n = 0

  -- a fresh stand-in state and log per remote run: the remote D1 starts
  -- with every migration pending, and the log holds only this run's argv
  local function remote(args, env)
    n = n + 1
    local log, st = L.dir .. "/wrangler-" .. n .. ".log", L.dir .. "/wrangler-state-" .. n
    local e = { WRANGLER_LOG = log, WRANGLER_STATE = st, WRANGLER_MIGRATIONS_DIR = L.dir .. "/hub-src/migrations" }
    for k, v in pairs(env or {}) do e[k] = v end
    local r = L:run(args, { env_add = e })
    r.wrangler = cli.slurp(log) or ""
    return r
  end

  local function migration(name)
    assert(require("runbook.fs").write_atomic(L.dir .. "/hub-src/migrations/" .. name,
      "CREATE TABLE IF NOT EXISTS " .. name:match("^%d+_(.-)%.sql$") .. " (id INTEGER PRIMARY KEY);\n"))
  end

  -- the hub's WORKER_NAME (what /api/health reports), then a real restart
  local function serve_as(worker)
    assert(require("stdlib.dotenv").update(L.dir .. "/hub-src/.dev.vars", { WORKER_NAME = worker }))
    local r = require("runbook.proc").run({ argv = { cli.bin, "exec", cli.root .. "/examples/hub/hubctl.lua",
      "restart", L.dir .. "/hubstate" }, timeout = 180 })
    assert(r.code == 0, "hub restart failed: " .. tostring(r.stderr))
    assert.equals(worker, L:request("GET", "/api/health").json.worker)
  end

  local function hub_pid()
    return require("cjson").decode(cli.slurp(L.dir .. "/hubstate/child.json")).pid
  end

  local function assert_no_key(r)
    local texts = { r.stdout, r.stderr, cli.slurp(L.journal) or "", cli.slurp(L.journal .. "-wal") or "" }
    for i, text in ipairs(texts) do
      for _, f in ipairs({ L.key, crypto.b64(L.key), crypto.hex(L.key) }) do
        assert.is_nil(text:find(f, 1, true), "output #" .. i .. " holds the queue key")
      end
    end
  end

  setup(function()
    L = localenv.start({ daemon = false })
    migration("0099_release_probe.sql") -- one the hub has not applied
  end)
  teardown(function() if L then L:stop() end end)

  it("refuses a run without where, naming it, before anything runs", function()
    for _, args in ipairs({ { "run", "apply-d1-migrations" }, { "run", "release" },
      { "run", "release", "--env", "production", "--yes" } }) do
      local r = remote(args)
      assert.equals(2, r.code, out(r))
      assert.matches("missing parameter 'where'", out(r))
      assert.matches("pass %-p where=", out(r))
      assert.is_nil(r.stdout:find("[1/", 1, true), "a step ran")
      assert.equals("", r.wrangler)
    end
    assert.matches("0099_release_probe.sql", L:run({ "run", "apply-d1-migrations", "--dry-run",
      "-p", "where=local" }).stdout)
  end)

  it("apply-d1-migrations --dry-run states LOCAL, prints the wrangler argv and changes nothing", function()
    for _ = 1, 2 do -- the second run still finds it pending
      local r = L:run({ "run", "apply-d1-migrations", "--dry-run", "-p", "where=local" })
      assert.equals(0, r.code, out(r))
      assert.matches("LOCAL %(wrangler dev state in " .. L.dir:gsub("%p", "%%%0") .. "/hubstate/wrangler", r.stdout)
      assert.matches("pending: 0099_release_probe.sql", r.stdout)
      assert.matches("%-> node %S+/wrangler%.js d1 migrations apply DB %-%-local %-%-persist%-to " ..
        L.dir:gsub("%p", "%%%0") .. "/hubstate/wrangler < %(2 bytes on stdin%) %(dry%-run: not run%)", r.stdout)
    end
  end)

  it("applies the pending migration locally and verifies none is pending", function()
    local r = L:run({ "run", "apply-d1-migrations", "-p", "where=local" })
    assert.equals(0, r.code, out(r))
    assert.matches("LOCAL %(", r.stdout)
    assert.matches("pending: 0099_release_probe.sql", r.stdout)
    assert.matches("ok   no migration is pending", r.stdout)
    local again = L:run({ "run", "apply-d1-migrations", "-p", "where=local" })
    assert.equals(0, again.code, out(again))
    assert.matches("none pending", again.stdout)
    assert.matches("Apply them %(condition not met%)", again.stdout)
  end)

  it("refuses a stated where the environment contradicts, before any wrangler write", function()
    local r = remote({ "run", "apply-d1-migrations", "-p", "where=remote" })
    assert.equals(1, r.code, out(r))
    assert.matches("environment 'local' is the hub on this machine", r.stdout)
    local p = remote({ "run", "apply-d1-migrations", "--env", "production", "--yes", "-p", "where=local" })
    assert.equals(1, p.code, out(p))
    assert.matches("environment 'production' has no hub on this machine", p.stdout)
    assert.equals("", r.wrangler .. p.wrangler)
  end)

  it("applies REMOTE through wrangler --remote with the environment's --env", function()
    local r = remote({ "run", "apply-d1-migrations", "--env", "production", "--yes", "-p", "where=remote",
      "-p", "wrangler_env=production" })
    assert.equals(0, r.code, out(r))
    assert.matches("REMOTE %(account ops@example%.com; D1 database DB %-%-remote; wrangler %-%-env production%)", r.stdout)
    assert.matches("pending: 0001_queue_d1_store.sql", r.stdout)
    assert.matches("ok   no migration is pending", r.stdout)
    assert.matches("\nd1 migrations apply DB %-%-remote %-%-env production\n", "\n" .. r.wrangler)
    assert.is_nil(r.wrangler:find("--local", 1, true))
  end)

  it("asks wrangler once more when a migrations list fails, and names wrangler's reason without colour codes", function()
    local args = { "run", "apply-d1-migrations", "--env", "production", "--yes", "-p", "where=remote",
      "-p", "wrangler_env=production" }
    local once = remote(args, { WRANGLER_LIST_FAILS = "1" })
    assert.equals(0, once.code, out(once))
    assert.matches("wrangler d1 migrations list failed %(exit 1%): The expression evaluated to a falsy value: " ..
      "assert%(this%.#proxyClient%); asking once more", once.stdout)
    assert.matches("pending: 0001_queue_d1_store.sql", once.stdout)
    assert.matches("\nd1 migrations apply DB %-%-remote %-%-env production\n", "\n" .. once.wrangler)
    -- failing again, the step fails on the second answer and applies nothing
    local twice = remote(args, { WRANGLER_LIST_FAILS = "5" })
    assert.equals(1, twice.code, out(twice))
    assert.matches("FAIL List the pending migrations[^\n]*\n%s*error: wrangler d1 migrations list failed %(exit 1%): The expression evaluated to a " ..
      "falsy value: assert%(this%.#proxyClient%)", twice.stdout)
    local _, lists = twice.wrangler:gsub("d1 migrations list", "")
    assert.equals(2, lists, twice.wrangler)
    assert.is_nil(twice.wrangler:find("migrations apply", 1, true))
    for _, r in ipairs({ once, twice }) do
      assert.is_nil(out(r):find("\27[", 1, true), "a terminal colour code reached the output")
    end
  end)

  it("migrate-queue-kv-to-d1 on a deployed environment names its D1 by wrangler env, or stops first", function()
    -- runbook.lua's production names no wrangler_env: --remote alone would
    -- migrate the top-level Worker's database, maybe not this hub's
    local r = remote({ "run", "migrate-queue-kv-to-d1", "--env", "production", "--yes" })
    assert.equals(1, r.code, out(r))
    assert.matches("FAIL Show the target", r.stdout)
    assert.matches("environment 'production' names no wrangler_env in runbook.lua", r.stdout)
    assert.matches("pass %-p wrangler_env=NAME", r.stdout)
    assert.is_nil(r.stdout:find("[2/7]", 1, true), "a step after the first ran")
    assert.is_nil(r.stdout:find("KV:", 1, true), "the hub was asked for counts")
    assert.equals("", r.wrangler)
    -- stated, it is what every D1 line and wrangler argv says
    local o = remote({ "run", "migrate-queue-kv-to-d1", "--env", "production", "--offline",
      "-p", "wrangler_env=production" })
    assert.equals(0, o.code, out(o))
    assert.matches("d1:       REMOTE %(D1 database DB %-%-remote; wrangler %-%-env production%)", o.stdout)
    assert.matches("REMOTE: no migrations pending", o.stdout)
  end)

  it("release on production without --yes and no terminal stops before any wrangler write", function()
    local r = remote({ "run", "release", "--env", "production", "-p", "where=remote", "-p", "wrangler_env=production" })
    assert.equals(5, r.code, out(r))
    assert.matches("re%-run with %-%-yes", out(r))
    assert.is_nil(r.wrangler:find("deploy", 1, true))
    assert.is_nil(r.wrangler:find("apply", 1, true))
  end)

  it("release asks which wrangler env when production lists both the default and --env production", function()
    local r = remote({ "run", "release", "--env", "production", "--yes", "-p", "where=remote" })
    assert.equals(1, r.code, out(r))
    assert.matches("does not say which wrangler env to deploy %(its workers name top%-level %(no %-%-env%) and " ..
      "%-%-env production%)", r.stdout)
    assert.is_nil(r.wrangler:find("deploy", 1, true))
    assert.is_nil(r.wrangler:find("apply", 1, true))
  end)

  it("release REMOTE catches a URL that serves another script (the canary/default mix-up)", function()
    -- the hub answers as orchestrator-hub; the deploy goes to orchestrator-hub-production
    local r = remote({ "run", "release", "--env", "production", "--yes", "-p", "where=remote",
      "-p", "wrangler_env=production" })
    assert.equals(1, r.code, out(r))
    assert.matches("script:   orchestrator%-hub%-production", r.stdout)
    assert.matches("serves orchestrator%-hub, not orchestrator%-hub%-production", r.stdout)
    assert.matches("\ndeploy %-%-env production\n", "\n" .. r.wrangler)
  end)

  it("release REMOTE refuses a workers.dev URL of another script before anything changes", function()
    local r = remote({ "run", "release", "--env", "production", "--yes", "-p", "where=remote",
      "-p", "wrangler_env=production", "-p", "url=https://orchestrator-hub.ops-team.workers.dev" })
    assert.equals(1, r.code, out(r))
    assert.matches("https://orchestrator%-hub%.ops%-team%.workers%.dev is script orchestrator%-hub's URL, " ..
      "not orchestrator%-hub%-production's", r.stdout)
    assert.equals("whoami\n", r.wrangler) -- no migration, no deploy
  end)

  it("release REMOTE fails when wrangler deployed another script than the one confirmed", function()
    serve_as("orchestrator-hub-production")
    local r = remote({ "run", "release", "--env", "production", "--yes", "-p", "where=remote",
      "-p", "wrangler_env=production" }, { WRANGLER_DEPLOYED = "orchestrator-hub-canary" })
    assert.equals(1, r.code, out(r))
    assert.matches("FAIL the confirmed script was deployed: wrangler deployed orchestrator%-hub%-canary, " ..
      "not the confirmed orchestrator%-hub%-production", r.stdout)
  end)

  it("release REMOTE: REMOTE and the script stated and confirmed, D1 --remote, deploy --env production, healthy", function()
    serve_as("orchestrator-hub-production")
    local r = remote({ "run", "release", "--env", "production", "--yes", "-p", "where=remote",
      "-p", "wrangler_env=production" })
    assert.equals(0, r.code, out(r))
    assert.matches("where:    REMOTE %(account ops@example%.com; D1 database DB %-%-remote; wrangler %-%-env production%)",
      r.stdout)
    assert.matches("script:   orchestrator%-hub%-production", r.stdout)
    assert.matches("deploy:   wrangler deploy %-%-env production", r.stdout)
    assert.matches("confirmed by %-%-yes: Deploy Worker script orchestrator%-hub%-production to " ..
      L.url:gsub("%p", "%%%0"), r.stdout)
    assert.matches("wrangler: script orchestrator%-hub%-production, URL %(not printed%), " ..
      "version 0f3c2a9e%-5b1d%-4e7a%-9c6b%-2d8e1f4a7b3c", r.stdout)
    assert.matches("ok   the confirmed script was deployed", r.stdout)
    assert.matches("the Worker reports: worker orchestrator%-hub%-production", r.stdout)
    assert.matches("ok   the health names the released script", r.stdout)
    assert.matches("ok   queue peek with key +200", r.stdout)
    -- the order an operator relies on: account, list, apply, deploy
    local lines = {}
    for line in r.wrangler:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.same({ "whoami", "d1 migrations list DB --remote --env production",
      "d1 migrations apply DB --remote --env production", "d1 migrations list DB --remote --env production",
      "deploy --env production" }, lines)
    assert_no_key(r)
  end)

  it("release on a terminal deploys only once the script name is typed back", function()
    local function on_pty(answers)
      n = n + 1
      local d = cli.tmpdir()
      assert(require("runbook.fs").write_atomic(d .. "/input", answers))
      local function q(v) return "'" .. v .. "'" end
      local log = L.dir .. "/wrangler-" .. n .. ".log"
      local cmd = table.concat({ "env -u CI NO_COLOR=1", "RUNBOOK_PROJECT=" .. q(L.project),
        "RUNBOOK_JOURNAL=" .. q(L.journal), "WRANGLER_LOG=" .. q(log),
        "WRANGLER_STATE=" .. q(L.dir .. "/wrangler-state-" .. n),
        "WRANGLER_MIGRATIONS_DIR=" .. q(L.dir .. "/hub-src/migrations"), q(cli.bin),
        "run release --env production -p where=remote -p wrangler_env=production" }, " ")
      local r = assert(require("runbook.proc").run({ argv = { "sh", cli.root .. "/spec/fixtures/pty_type.sh", d,
        "Type 'production' to continue: ", cmd }, timeout = 180 }))
      assert.equals(0, r.code)
      local screen = cli.slurp(d .. "/ts") or ""
      cli.rmrf(d)
      return screen, cli.slurp(log) or ""
    end
    -- the environment confirmed, then the default script's name typed: refused
    local screen, log = on_pty("production\norchestrator-hub\n")
    assert.matches("script:   orchestrator%-hub%-production", screen)
    assert.matches("Type 'orchestrator%-hub%-production' to continue: ", screen)
    assert.matches("script orchestrator%-hub%-production not confirmed, nothing changed: not confirmed " ..
      "%(expected 'orchestrator%-hub%-production'%)", screen)
    assert.matches("REFUSED", screen)
    assert.matches("status=5", screen) -- refused, as a declined gate: not a failure
    assert.equals("whoami\n", log)
    -- the right name: it goes ahead
    screen, log = on_pty("production\norchestrator-hub-production\n")
    assert.matches("status=0", screen)
    assert.matches("\nd1 migrations apply DB %-%-remote %-%-env production\n", "\n" .. log)
    assert.matches("\ndeploy %-%-env production\n", "\n" .. log)
  end)

  it("release --dry-run REMOTE prints the deploy and changes nothing", function()
    local r = remote({ "run", "release", "--env", "production", "--dry-run", "-p", "where=remote",
      "-p", "wrangler_env=production" })
    assert.equals(0, r.code, out(r))
    assert.matches("would ask: Deploy Worker script orchestrator%-hub%-production", r.stdout)
    assert.matches("%-> %S+/wrangler deploy %-%-env production %(dry%-run: not run%)", r.stdout)
    assert.is_nil(r.wrangler:find("\ndeploy", 1, true))
    assert.is_nil(r.wrangler:find("apply", 1, true))
  end)

  it("release --env local applies the hub's new migration, restarts the hub and verifies its health", function()
    migration("0100_release_local.sql")
    -- the remote test left the hub answering as orchestrator-hub-production;
    -- the release's restart is what makes it read this
    assert(require("stdlib.dotenv").update(L.dir .. "/hub-src/.dev.vars", { WORKER_NAME = "orchestrator-hub" }))
    local pid = hub_pid()
    local r = L:run({ "run", "release", "-p", "where=local" })
    assert.equals(0, r.code, out(r))
    assert.matches("where:    LOCAL %(wrangler dev state in", r.stdout)
    assert.matches("script:   orchestrator%-hub\n", r.stdout)
    assert.matches("LOCAL: pending: 0100_release_local.sql", r.stdout)
    assert.matches("hub restarted: pid %d+", r.stdout)
    assert.matches("ok   the confirmed script was deployed", r.stdout)
    assert.matches("the Worker reports: worker orchestrator%-hub\n", r.stdout)
    assert.matches("ok   health answers status ok", r.stdout)
    assert.is_nil(r.stdout:find("Type '", 1, true)) -- nothing asked locally
    assert.are_not.equal(pid, hub_pid())
    assert.equals("orchestrator-hub", L:request("GET", "/api/health").json.worker)
    assert_no_key(r)
  end)
end)
