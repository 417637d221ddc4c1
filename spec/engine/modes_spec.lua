-- Dry-run performs zero writes against a spy server and a recording
-- command; a secret never appears in any byte the tool writes.
local cli = require("cli")
local ts = require("testserver")
local cjson = require("cjson")

describe("modes and secrets", function()
  local srv, dir
  setup(function() srv = ts.start() end)
  teardown(function() if srv then srv.stop() end end)
  before_each(function()
    dir = cli.tmpdir()
    require("runbook.http").request({ method = "POST", url = srv.url .. "/reset" })
  end)
  after_each(function() cli.rmrf(dir) end)

  local function seen()
    local r = require("runbook.http").request({ url = srv.url .. "/requests" })
    return cjson.decode(r.body)
  end

  it("--dry-run reads live, prints every write, and performs none", function()
    local log = dir .. "/record.log"
    local r = cli.run({ "run", "spy", "--dry-run", "-p", "url=" .. srv.url, "-p", "dir=" .. dir,
      "-p", "record=" .. cli.root .. "/spec/fixtures/bin/record", "--journal", dir .. "/j.db" },
      { env_add = { RECORD_LOG = log } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    -- the server saw the GET only
    local s = seen()
    local methods = {}
    for _, e in ipairs(s.log) do if e.path ~= "/reset" then methods[#methods + 1] = e.method end end
    assert.same({ "GET" }, methods)
    -- the recording command ran for the read-only whoami, never for put
    local rec = cli.slurp(log) or ""
    assert.matches("^whoami", rec)
    assert.not_matches("put", rec)
    assert.is_false(cli.exists(dir .. "/written"))
    -- and the operator was told what would have happened
    assert.matches("POST " .. srv.url:gsub("%p", "%%%0") .. "/echo", r.stdout)
    assert.matches("put QUEUE_API_KEY", r.stdout)
    assert.matches("written", r.stdout)
    assert.matches("depends on a simulated write", r.stdout)
  end)

  it("a real run performs the same writes the dry-run listed", function()
    local log = dir .. "/record.log"
    local r = cli.run({ "run", "spy", "-p", "url=" .. srv.url, "-p", "dir=" .. dir,
      "-p", "record=" .. cli.root .. "/spec/fixtures/bin/record", "--journal", dir .. "/j.db" },
      { env_add = { RECORD_LOG = log } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("put QUEUE_API_KEY", cli.slurp(log))
    assert.equals("data", cli.slurp(dir .. "/written"))
    local posts = 0
    for _, e in ipairs(seen().log) do if e.method == "POST" and e.path == "/echo" then posts = posts + 1 end end
    assert.equals(1, posts)
  end)

  it("masks a secret in every channel: terminal, JSON, JUnit, errors, child output, journal", function()
    local c = require("runbook.crypto.core")
    local token = "tk/" .. c.hex(c.random(20)) .. "+=&"
    local forms = { raw = token, b64 = c.b64(token), hex = c.hex(token),
      url = (token:gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end)),
      json = (token:gsub("/", "\\/")) } -- as cjson writes it inside a JSON string
    local j = dir .. "/j.db"
    local outputs = {}
    for _, extra in ipairs({ {}, { "--json", "--junit", dir .. "/junit.xml" } }) do
      local args = { "run", "leaky", "-p", "url=" .. srv.url, "-p", "echo_http=true", "--journal", j }
      for _, a in ipairs(extra) do args[#args + 1] = a end
      local r = cli.run(args, { env_add = { LEAKY_TOKEN = token } })
      assert.equals(1, r.code, r.stderr)
      outputs[#outputs + 1] = r.stdout
      outputs[#outputs + 1] = r.stderr
    end
    -- the secret really went through the channels (masked forms are there)
    local all = table.concat(outputs)
    assert.matches("%[sha256:%x+%]", all)
    assert.matches("out %[sha256:", all)
    assert.matches("err %[sha256:", all)
    -- the history and log commands print from the journal
    local h = cli.run({ "history", "--journal", j })
    local id = h.stdout:match("\n(%d+%-%d+%-%x+)")
    outputs[#outputs + 1] = cli.run({ "log", id, "--journal", j }).stdout
    outputs[#outputs + 1] = cli.slurp(dir .. "/junit.xml")
    outputs[#outputs + 1] = cli.slurp(j) or ""
    outputs[#outputs + 1] = cli.slurp(j .. "-wal") or ""
    for i, out in ipairs(outputs) do
      for name, form in pairs(forms) do
        assert.is_nil(out:find(form, 1, true), ("output #%d contains the secret's %s form"):format(i, name))
      end
    end
  end)

  it("refuses a secret given with -p before anything runs, without echoing it, and names the variable", function()
    local token = "tk-" .. require("runbook.crypto.core").hex(require("runbook.crypto.core").random(12))
    local j = dir .. "/j.db"
    for _, args in ipairs({
      { "run", "leaky", "-p", "token=" .. token, "-p", "url=" .. srv.url, "--journal", j },
      { "run", "leaky", "--json", "-p", "token=" .. token, "--journal", j },
    }) do
      local r = cli.run(args)
      assert.equals(2, r.code, r.stdout .. r.stderr)
      assert.equals("runbook: parameter 'token' is a secret and -p puts it in the process list, shell history "
        .. "and CI logs; set $LEAKY_TOKEN instead\n", r.stderr)
      assert.is_nil((r.stdout .. r.stderr):find(token, 1, true))
    end
    -- nothing ran: the server saw nothing, and no run was journaled
    for _, e in ipairs(seen().log) do assert.equals("/reset", e.path) end
    assert.matches("no runs", cli.run({ "history", "--journal", j }).stdout)
    -- from the variable it is taken, and the run goes on
    local r = cli.run({ "run", "leaky", "-p", "url=" .. srv.url, "--journal", j }, { env_add = { LEAKY_TOKEN = token } })
    assert.equals(1, r.code) -- (leaky's last step fails on purpose, after using the token)
    assert.matches("%[sha256:%x+%]", r.stdout)
  end)
end)
