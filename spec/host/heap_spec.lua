-- runbook.heap: memory backed in one call before a burst of allocation
-- (kv-audit's scan and every CLI command use it: a page fault costs ~12 µs
-- on the VMs runbook is measured on). What shows is the page faults a
-- process takes, so each case runs in a fresh runbook process.
local heap = require("runbook.heap")
local cli = require("spec.helpers.cli")

-- A script that grows the heap by ~6 MB (1,500 strings of 4 KB, kept) and
-- prints the minor faults that took, optionally after reserving 8 MB.
local GROW = [[
local function minflt()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("^%d+ %b() %S+" .. string.rep(" %S+", 6) .. " (%d+)"))
end
if arg[1] == "reserve" then
  local ok, why = require("runbook.heap").reserve(8 << 20)
  if not ok then print("unsupported: " .. why) return end
end
local before, keep = minflt(), {}
for i = 1, 1500 do keep[i] = string.rep("x", 4000) .. i end
print(minflt() - before)
]]

describe("runbook.heap", function()
  local dir, script
  setup(function()
    dir = cli.tmpdir()
    script = dir .. "/grow.lua"
    local f = assert(io.open(script, "wb"))
    f:write(GROW)
    f:close()
  end)
  teardown(function() cli.rmrf(dir) end)

  local function faults(...)
    local r = cli.run({ "exec", script, ... })
    assert.equals(0, r.code, r.stderr)
    return r.stdout:match("^(%S+)"), r.stdout
  end

  it("backs what the heap grows into: a few faults instead of one per page", function()
    local plain = tonumber((faults()))
    local reserved, out = faults("reserve")
    if reserved == "unsupported:" then
      pending(out) -- a kernel before 5.14, or the ASan build
      return
    end
    reserved = tonumber(reserved)
    -- ~1,500 pages touched: one fault each without the reservation
    assert.is_true(plain > 1000, "faults without reserve: " .. plain)
    assert.is_true(reserved < plain / 4, ("faults: %d reserved vs %d plain"):format(reserved, plain))
  end)

  it("refuses sizes it would not serve from the heap", function()
    assert.has_error(function() heap.reserve(-1) end)
    assert.has_error(function() heap.reserve(17 << 20) end)
    assert.has_error(function() heap.reserve("lots") end)
    assert.is_not_nil(heap.reserve(0)) -- true, or false where it cannot
  end)
end)
