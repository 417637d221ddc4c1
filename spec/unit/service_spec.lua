-- stdlib.service: a supervisor started for a session (the specs, `make
-- demo`) ends with the process that started it, taking its child along, so
-- a killed test run does not leave the hub or the daemon running.
local proc = require("runbook.proc")
local service = require("stdlib.service")
local term = require("runbook.term.core")
local BIN = os.getenv("RUNBOOK_BIN") or "./runbook"

local wait_until = require("spec.helpers.cli").wait_until

describe("service.supervise with an owner", function()
  it("keeps its child running while the owner lives, and stops both once the owner is gone", function()
    local dir = os.tmpname()
    os.remove(dir)
    local owner = assert(proc.spawn({ argv = { "sleep", "100" } }))
    local sup = assert(proc.spawn({ argv = { BIN, "exec", "spec/fixtures/supervise_sleep.lua", dir },
      env_add = { RUNBOOK_SUPERVISOR_OWNER = tostring(owner:pid()) } }))
    finally(function()
      owner:stop(0)
      sup:stop(1)
      os.execute("rm -rf '" .. dir .. "'")
    end)
    assert.is_true(wait_until(function() return service.status(dir).child ~= nil end, 20), "no child started")
    local child = service.status(dir).child.pid
    term.sleep(0.3)
    assert.is_true(sup:running())
    assert.is_true(proc.alive(child))
    owner:stop(0) -- the owner dies (and is reaped)
    assert.is_true(wait_until(function() return not sup:running() end, 20), "the supervisor outlived its owner")
    assert.equals(0, sup:wait(5).code)
    assert.is_false(proc.alive(child))
    assert.is_nil(service.status(dir).supervisor)
  end)

  it("takes the owner only from a positive integer in RUNBOOK_SUPERVISOR_OWNER", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write('print(tostring(require("stdlib.service").owner_from_env()))')
    f:close()
    local seen = {}
    for _, v in ipairs({ "4242", "abc", "0", "-5", "12x", "1.5", "" }) do
      local r = assert(proc.run({ argv = { BIN, "exec", script }, env_add = { RUNBOOK_SUPERVISOR_OWNER = v } }))
      seen[#seen + 1] = (r.stdout:gsub("\n$", ""))
    end
    os.remove(script)
    assert.same({ "4242", "nil", "nil", "nil", "nil", "nil", "nil" }, seen)
  end)
end)
