-- `runbook schedule`: the text an operator pastes into crontab, systemd or
-- launchd to run a runbook every N minutes (seed 000's 30-minute key sync).
local cli = require("cli")

local function realpath(p)
  local r = require("runbook.proc.core").run({ argv = { "realpath", p }, stdout = "capture", timeout = 10 })
  return (r.stdout:gsub("\n$", ""))
end

local BIN = realpath(cli.bin)
local ROOT = realpath(cli.root)

-- a Lua pattern matching s literally
local function lit(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

local function schedule(args)
  local a = { "schedule" }
  for _, x in ipairs(args) do a[#a + 1] = x end
  return cli.run(a, { cwd = ROOT })
end

describe("runbook schedule", function()
  it("prints a cron line running the runbook every 30 minutes from the project's directory", function()
    local r = schedule({ "sync-queue-keys", "--every", "30m" })
    assert.equals(0, r.code, r.stderr)
    assert.equals("", r.stderr)
    local want = "*/30 * * * * cd " .. ROOT .. " && " .. BIN .. " run sync-queue-keys --env local --yes >> "
    assert.matches("\n" .. lit(want) .. "%S+%.log 2>&1\n$", r.stdout)
    assert.matches("^# runbook%.sync%-queue%-keys%.local: every 30m\n", r.stdout)
  end)

  it("prints a systemd service and timer with OnUnitActiveSec", function()
    local r = schedule({ "sync-queue-keys", "--every", "30m", "--format", "systemd", "--env", "production" })
    assert.equals(0, r.code, r.stderr)
    assert.matches("%[Service%]\nType=oneshot\nWorkingDirectory=" .. lit(ROOT) .. "\n", r.stdout)
    assert.matches("\nExecStart=" .. lit(BIN .. " run sync-queue-keys --env production --yes") .. "\n", r.stdout)
    assert.matches("\n%[Timer%]\n", r.stdout)
    assert.matches("\nOnUnitActiveSec=30min\n", r.stdout)
    assert.matches("# runbook%.sync%-queue%-keys%.production%.timer", r.stdout)
  end)

  it("prints a launchd plist with StartInterval 1800 and the argv one string each", function()
    local r = schedule({ "sync-queue-keys", "--every", "30m", "--format", "launchd", "-p", "propagation_timeout=90s" })
    assert.equals(0, r.code, r.stderr)
    assert.matches("<key>StartInterval</key>\n%s*<integer>1800</integer>", r.stdout)
    local args = {}
    local array = r.stdout:match("<key>ProgramArguments</key>%s*<array>(.-)</array>")
    for s in array:gmatch("<string>(.-)</string>") do args[#args + 1] = s end
    assert.same({ BIN, "run", "sync-queue-keys", "--env", "local", "--yes", "-p", "propagation_timeout=90s" }, args)
    assert.matches("<key>WorkingDirectory</key>\n%s*<string>" .. lit(ROOT) .. "</string>", r.stdout)
  end)

  it("hourly intervals become an hour field in cron", function()
    local r = schedule({ "check-secret-drift", "--every", "2h" })
    assert.equals(0, r.code, r.stderr)
    assert.matches("\n0 %*/2 %* %* %* cd ", r.stdout)
  end)

  it("refuses an unknown runbook with one line and exit 2", function()
    local r = schedule({ "no-such-runbook", "--every", "30m" })
    assert.equals(2, r.code)
    assert.equals("", r.stdout)
    assert.matches("^runbook: no runbook named 'no%-such%-runbook'[^\n]*\n$", r.stderr)
  end)

  it("refuses a bad interval with one line and exit 2", function()
    for _, every in ipairs({ "30x", "90s", "0m" }) do
      local r = schedule({ "sync-queue-keys", "--every", every })
      assert.equals(2, r.code, every)
      assert.equals("", r.stdout)
      assert.matches("^runbook: [^\n]+\n$", r.stderr)
    end
    local r = schedule({ "sync-queue-keys", "--every", "7m" })
    assert.equals(2, r.code)
    assert.matches("^runbook: cron cannot express every 7 minutes[^\n]*\n$", r.stderr)
    assert.equals(0, schedule({ "sync-queue-keys", "--every", "7m", "--format", "systemd" }).code)
  end)

  it("refuses parameters the runbook would reject, an unknown environment, and secrets in the schedule", function()
    local r = schedule({ "sync-queue-keys", "--every", "30m", "-p", "nope=1" })
    assert.equals(2, r.code)
    assert.matches("^runbook: unknown parameter 'nope'[^\n]*\n$", r.stderr)
    r = schedule({ "sync-queue-keys", "--every", "30m", "--env", "mars" })
    assert.equals(2, r.code)
    assert.matches("^runbook: unknown environment 'mars'[^\n]*\n$", r.stderr)
    r = schedule({ "leaky", "--every", "30m", "-p", "token=s3cr3t-value" })
    assert.equals(2, r.code)
    assert.matches("^runbook: parameter 'token' is a secret[^\n]*\n$", r.stderr)
    assert.is_nil((r.stdout .. r.stderr):find("s3cr3t-value", 1, true))
  end)

  it("is in the bash completion and the man page", function()
    local comp = cli.run({ "completion" }, { cwd = ROOT })
    assert.equals(0, comp.code)
    assert.matches("schedule", comp.stdout)
    assert.matches("%-%-every", comp.stdout)
    local man = cli.run({ "man" }, { cwd = ROOT })
    assert.equals(0, man.code)
    assert.matches("\n%.SS schedule\n", man.stdout)
  end)
end)
