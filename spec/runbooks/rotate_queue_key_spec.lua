-- rotate-queue-key end to end against the real hub (wrangler dev) and the
-- example daemon, as an operator runs it.
local localenv = require("localenv")
local cli = require("cli")
local crypto = require("runbook.crypto")

local function forms(key)
  return { key, crypto.b64(key), crypto.hex(key) }
end

local function assert_absent(key, outputs)
  for i, out in ipairs(outputs) do
    for _, f in ipairs(forms(key)) do
      assert.is_nil(out:find(f, 1, true), "output #" .. i .. " contains the key")
    end
  end
end

describe("#hub rotate-queue-key", function()
  local L
  setup(function() L = localenv.start() end)
  teardown(function() if L then L:stop() end end)

  it("--dry-run prints every write and changes nothing", function()
    local files = { L.dir .. "/scripts/.env.assistant", L.dir .. "/hub-src/.dev.vars", L.dir .. "/daemon/.env" }
    local before = {}
    for i, f in ipairs(files) do before[i] = cli.slurp(f) end
    local r = L:run({ "run", "rotate-queue-key", "--dry-run" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    for i, f in ipairs(files) do assert.equals(before[i], cli.slurp(f), f .. " changed") end
    assert.equals(200, L:queue_status(L.key))
    assert.matches("write .*/scripts/.env.assistant .*dry%-run", r.stdout)
    assert.matches("hubctl.lua restart .*dry%-run", r.stdout)
    assert.matches("daemonctl.lua restart .*dry%-run", r.stdout)
    assert.is_nil((cli.slurp(L.wrangler_log) or ""):find("secret put", 1, true))
  end)

  it("moves every holder to a new key, restarts the hub and the daemon, and refuses the old key", function()
    local old = L.key
    local r = L:run({ "run", "rotate-queue-key", "--env", "local", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local new = L:canonical_key()
    assert.is_truthy(new and new:match("^%x+$") and #new == 64)
    assert.not_equals(old, new)
    assert.equals(new, L:hub_key("QUEUE_API_KEY"))
    assert.equals(new, L:hub_key("ASSISTANT_API_KEY"))
    assert.equals(new, L:daemon_key())
    assert.equals(401, L:queue_status(old))
    assert.equals(401, L:queue_status(nil))
    assert.equals(200, L:queue_status(new))
    local s = L:daemon_status()
    assert.equals(200, s.status)
    assert.equals(crypto.fingerprint(new), s.key_fingerprint)
    -- the journal shows every step verified
    local id = r.stdout:match("run (%d+%-%d+%-%x+)")
    local log = L:run({ "log", id })
    for i = 1, 8 do assert.matches("%[" .. i .. "%] ok", log.stdout) end
    -- and neither key appears in anything the tool wrote
    local outs = { r.stdout, r.stderr, log.stdout, cli.slurp(L.journal) or "", cli.slurp(L.journal .. "-wal") or "",
      L:run({ "history" }).stdout }
    assert_absent(new, outs)
    assert_absent(old, outs)
    L.key = new
  end)

  it("--offline runs with the hub stopped", function()
    local r = L:run({ "run", "rotate-queue-key", "--offline" },
      { env_add = { RUNBOOK_PROJECT = L.project } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("offline: no writes were made", r.stdout)
  end)

  it("targets both Worker environments through wrangler, value on stdin, never argv", function()
    local r = L:run({ "run", "rotate-queue-key", "--env", "production", "--yes", "-p", "propagation_timeout=1s" })
    -- the stand-in cannot change what the local hub serves, so the probe fails
    assert.equals(1, r.code)
    assert.matches("FAIL.*Probe the queue", r.stdout)
    local log = cli.slurp(L.wrangler_log) or ""
    local puts = {}
    for line in log:gmatch("[^\n]+") do
      if line:match("^secret put") then puts[#puts + 1] = line end
    end
    assert.equals(4, #puts)
    assert.matches("secret put ASSISTANT_API_KEY %-%-name orchestrator%-hub stdin=%x+", log)
    assert.matches("secret put QUEUE_API_KEY %-%-name orchestrator%-hub %-%-env production stdin=%x+", log)
    local key = cli.slurp(L.dir .. "/prod/.env.assistant"):match("ASSISTANT_API_KEY=(%x+)")
    assert_absent(key, { log, r.stdout, r.stderr })
  end)
end)
