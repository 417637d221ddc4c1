-- The entry point: --version and exec behave as documented.
local bin = os.getenv("RUNBOOK_BIN") or "./runbook"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  return out
end

describe("runbook entry point", function()
  it("prints its version", function()
    local out = sh(bin .. " --version")
    assert.matches("^runbook %d+%.%d+%.%d+ %(Lua 5%.4%)\nexit=0\n$", out)
  end)

  it("exec runs a file with its arguments and returns its exit code", function()
    local f = os.tmpname()
    local h = io.open(f, "w")
    h:write("print(arg[0] ~= nil, ...) return 3")
    h:close()
    local out = sh(bin .. " exec " .. f .. " a b")
    os.remove(f)
    assert.equals("true\ta\tb\nexit=3\n", out)
  end)

  it("exec reports a missing file as a one-line usage error", function()
    local out = sh(bin .. " exec /nonexistent/x.lua")
    assert.matches("^runbook exec: cannot open /nonexistent/x.lua[^\n]*\nexit=2\n$", out)
  end)
end)
