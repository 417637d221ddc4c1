-- spec/helpers/hub.lua's guard: the hub a spec starts runs in a process
-- group of its own (Ctrl-C on the spec runner does not reach it), so a
-- runner killed before its teardown would leave wrangler and workerd up.
-- The guard ends the group once its owner is gone. Tried here on a group of
-- sleeps, with a sleep as the owner.
local hub = require("hub")
local proc = require("runbook.proc")
local term = require("runbook.term.core")

-- members that run (an orphan's zombie can wait a while for init here)
local function group_alive(pgid) return #hub.group_members(pgid) > 0 end

local wait_until = require("spec.helpers.cli").wait_until

describe("hub guard", function()
  it("leaves the group alone while the owner lives, and ends all of it once the owner is gone", function()
    local owner = assert(proc.spawn({ argv = { "sleep", "100" } }))
    local group = assert(proc.spawn({ argv = { "sh", "-c", "sleep 100 & sleep 100 & wait" } }))
    local guard = hub.guard(group:pid(), owner:pid())
    finally(function()
      owner:stop(0)
      group:stop(0)
      guard:stop(0)
      os.execute(("kill -KILL -%d 2>/dev/null"):format(group:pid()))
    end)
    term.sleep(1.5) -- the guard has looked at least once
    assert.is_true(group_alive(group:pid()))
    assert.is_true(guard:running())
    owner:stop(0) -- the spec runner, killed
    assert.is_true(wait_until(function() return not group_alive(group:pid()) end, 15), "the group outlived its owner")
    assert.is_true(wait_until(function() return not guard:running() end, 10), "the guard did not end")
  end)
end)
