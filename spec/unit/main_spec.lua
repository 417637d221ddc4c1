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

-- `runbook show`/`list`/... build a parser with only their own command (it
-- starts faster); what an operator sees must not depend on that.
describe("the command line parser built for one command", function()
  local cli = require("runbook.cli")
  local SAMPLES = {
    list = { { "list" } },
    show = { { "show", "rotate-queue-key" }, { "show", "x", "--markdown" } },
    run = { { "run", "x", "-p", "a=1", "-p", "b=2", "--env", "production", "--dry-run", "--from", "3", "--resume" } },
    resume = { { "resume", "abc", "--yes", "--json", "--junit", "r.xml" } },
    history = { { "history" }, { "history", "x", "-n", "5", "--json" } },
    log = { { "log", "abc", "--journal", "j.db" } },
    check = { { "check", "a", "b", "--no-run" } },
    new = { { "new", "my-book" } },
    schedule = { { "schedule", "x", "--every", "30m", "--format", "systemd", "-p", "a=1" } },
    exec = { { "exec", "f.lua", "a" } },
  }

  it("gives every command the same help and the same parse as the full parser", function()
    local full = cli.build_parser()
    local n = 0
    for _, c in ipairs(full._commands) do
      local name = c._name
      local one = cli.build_parser(name)
      local mine
      for _, oc in ipairs(one._commands) do if oc._name == name then mine = oc end end
      if name ~= "completion" and name ~= "man" then assert.equals(1, #one._commands, name) end
      assert.equals(c:get_help(), mine:get_help(), name)
      for _, argv in ipairs(SAMPLES[name] or {}) do
        assert.same(full:parse(argv), one:parse(argv), table.concat(argv, " "))
        n = n + 1
      end
      -- and the same refusal for a bad word
      local ok1, e1 = full:pparse({ name, "--no-such-flag" })
      local ok2, e2 = one:pparse({ name, "--no-such-flag" })
      assert.equals(ok1, ok2, name)
      assert.equals(e1, e2, name)
    end
    assert.is_true(n >= 12)
  end)

  it("keeps every command for --help, completion and man, and for an unknown word", function()
    local full = #cli.build_parser()._commands
    assert.is_true(full >= 12)
    for _, w in ipairs({ "completion", "man", "shw", "--help", "-h" }) do
      assert.equals(full, #cli.build_parser(w)._commands, w)
    end
    local out = sh(bin .. " completion")
    for _, c in ipairs({ "list", "show", "run", "resume", "history", "schedule" }) do
      assert.matches("%f[%w]" .. c .. "%f[^%w]", out)
    end
    assert.matches("Did you mean 'show'%?", sh(bin .. " shw x"))
  end)
end)
