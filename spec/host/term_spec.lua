-- term: the terminal and the clocks (runbook.term.core and its face
-- runbook.term). CI has no terminal, so the terminal-less behaviour is
-- checked in a child whose stdio are pipes and which has no controlling
-- tty (setsid), and the terminal behaviour on a pseudo-terminal made by
-- script(1) (spec/fixtures/term_pty.sh).
local core = require("runbook.term.core")
local term = require("runbook.term")
local proc = require("runbook.proc")
local fs = require("runbook.fs.core")

local BIN = os.getenv("RUNBOOK_BIN") or "./runbook"
local FIX = "spec/fixtures/"
local ROOT = assert(fs.getcwd())

local function kv(out)
  local t = {}
  for k, v in out:gsub("\r", ""):gmatch("([%w_]+)=([^\n ]*)") do t[k] = v end
  return t
end

-- term_info.lua in a child with no terminal at all.
local function info(env_add)
  local setsid = assert(proc.which("setsid"), "setsid (util-linux) is needed")
  local r = assert(proc.run({ argv = { setsid, "-w", BIN, "exec", FIX .. "term_info.lua" },
    env_add = env_add, timeout = 60 }))
  assert(r.code == 0, r.stderr)
  return kv(r.stdout)
end

describe("term without a terminal", function()
  it("isatty is false for pipes, width and colour are off, prompt_secret says ENOTTY", function()
    local t = info({ NO_COLOR = false, COLUMNS = false })
    assert.equals("false", t.isatty0)
    assert.equals("false", t.isatty1)
    assert.equals("nil", t.width)
    assert.equals("false", t.color)
    assert.equals("nil,ENOTTY", t.prompt)
  end)

  it("width honours a positive integer $COLUMNS, and ignores anything else", function()
    assert.equals("123", info({ COLUMNS = "123" }).width)
    assert.equals("nil", info({ COLUMNS = "wide" }).width)
    assert.equals("nil", info({ COLUMNS = "0" }).width)
  end)

  it("isatty and width accept an fd or a Lua file, and are false / nil for a regular file", function()
    local f = assert(io.open(os.tmpname(), "w"))
    assert.is_false(core.isatty(f))
    assert.is_nil(core.width(f))
    f:close()
    local ok, err = pcall(core.isatty, f)
    assert.is_false(ok)
    assert.matches("closed file", err)
    assert.has_error(function() core.isatty("stdout") end)
    assert.has_error(function() core.isatty(-1) end)
    local dn = assert(io.open("/dev/null"))
    assert.is_false(core.isatty(dn))
    dn:close()
  end)
end)

describe("term on a pseudo-terminal", function()
  local script = proc.which("script")
  local dir

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(fs.mkdir_p(dir, tonumber("700", 8)))
  end)
  after_each(function()
    proc.run({ argv = { "rm", "-rf", dir }, timeout = 30 })
  end)

  -- Type `keys` at the prompt of term_prompt.lua; returns the session's
  -- key=value lines and its whole text.
  local function session(keys, mode, env_add)
    os.remove(dir .. "/done") -- left by an earlier session in this test
    os.remove(dir .. "/ts")
    assert(fs.write_atomic(dir .. "/input", keys))
    local env = { TERM = "xterm", NO_COLOR = false }
    for k, v in pairs(env_add or {}) do env[k] = v end
    local r = assert(proc.run({ argv = { "sh", ROOT .. "/" .. FIX .. "term_pty.sh", dir, BIN,
      ROOT .. "/" .. FIX .. "term_prompt.lua", mode or "" }, env_add = env, timeout = 60 }))
    assert(r.code == 0, r.stderr)
    return kv(r.stdout), r.stdout
  end

  local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

  if not script then
    pending("script(1) (util-linux) is not installed")
    return
  end

  it("isatty is true and colour is on, unless NO_COLOR or TERM=dumb", function()
    local t = session("x\n")
    assert.equals("true", t.isatty)
    assert.equals("true", t.color)
    assert.equals("false", session("x\n", nil, { NO_COLOR = "1" }).color)
    assert.equals("true", session("x\n", nil, { NO_COLOR = "" }).color)
    assert.equals("false", session("x\n", nil, { TERM = "dumb" }).color)
  end)

  it("prompt_secret reads the line without echoing it and restores the terminal", function()
    local t, text = session("s3cr3t-value\n")
    assert.equals(hex("s3cr3t-value"), t.got)
    assert.equals("nil", t.code)
    assert.not_matches("s3cr3t", text, 1, true)
    assert.is_truthy(t.before)
    assert.equals(t.before, t.after)
    assert.equals("0", t.status)
  end)

  it("prompt_secret edits the line: erase (also a whole UTF-8 character) and kill", function()
    assert.equals(hex("ac"), session("ab\127c\n").got)
    assert.equals(hex("ac"), session("ab\8c\r").got)
    assert.equals(hex("x"), session("\195\169\127x\n").got)
    assert.equals(hex("ok"), session("wrong\21ok\n").got)
    assert.equals(hex(""), session("\n").got)
  end)

  it("prompt_secret returns EOF on ^D at the start of the line", function()
    local t = session("\4")
    assert.equals("nil", t.got)
    assert.equals("EOF", t.code)
    assert.equals(t.before, t.after)
  end)

  it("^C at the prompt is SIGINT: EINTR and a pending signal when trapped, else the process ends", function()
    local t = session("\3", "trap")
    assert.equals("nil", t.got)
    assert.equals("EINTR", t.code)
    assert.equals("INT", t.pending)
    assert.equals(t.before, t.after)
    t = session("\3")
    assert.is_nil(t.got)
    assert.equals("130", t.status)
    assert.equals(t.before, t.after) -- restored before the signal ended it
  end)
end)

describe("term clocks", function()
  it("now is wall-clock seconds with a fraction", function()
    local n = core.now()
    assert.equals("float", math.type(n))
    assert.is_true(math.abs(n - os.time()) < 5)
  end)

  it("monotonic never goes back and sleep waits at least as long as asked", function()
    local a = core.monotonic()
    assert.is_true(core.sleep(0.05))
    local b = core.monotonic()
    assert.is_true(b - a >= 0.05, ("slept %.3f s"):format(b - a))
    assert.is_true(core.sleep(0))
  end)

  it("sleep raises on a negative, NaN or infinite duration", function()
    assert.has_error(function() core.sleep(-1) end)
    assert.has_error(function() core.sleep(0 / 0) end)
    assert.has_error(function() core.sleep(math.huge) end)
    assert.has_error(function() core.sleep("soon") end)
  end)

  it("the face re-exports the core", function()
    for _, n in ipairs({ "isatty", "prompt_secret", "now", "monotonic", "sleep" }) do
      assert.equals(core[n], term[n], n)
    end
  end)
end)
