-- What a person (terminal), a pipeline (JSON lines) and a CI server (JUnit)
-- see of a run: a recorded event sequence fed through each renderer.
local output = require("runbook.output")
local cjson = require("cjson")

-- A stream that keeps what was written and how often it was flushed.
local function fake_stream()
  local s = { parts = {}, flushes = 0 }
  function s:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function s:flush() self.flushes = self.flushes + 1 return self end
  function s:text() return table.concat(self.parts) end
  return s
end

local RUN_ID = "20261123-101500-ab12"
local ODD_TITLE = [[Restart the <&>"' daemon]]

-- A dry run of four steps: one verified, one whose write was simulated, one
-- skipped, one failing its verification with a hint; the run is resumable.
local function failed_run()
  return {
    { event = "run_start", t = 1000.0, run_id = RUN_ID, runbook = "rotate-queue-key",
      summary = "Generate a new queue API key", env = "local", target = "http://127.0.0.1:8787",
      mode = "dry-run", params = { limit = 200, token = "(secret)" }, total = 4 },
    { event = "notice", t = 1000.0, level = "warn", message = "took over the lock of run 1" },
    { event = "step_start", t = 1000.0, index = 1, total = 4, title = "Generate a new key" },
    { event = "log", t = 1000.0, index = 1, message = "new key sha256:1a2b3c4d" },
    { event = "verify", t = 1000.0, index = 1, name = "is 64 hex characters", status = "pass" },
    { event = "step_end", t = 1000.0, index = 1, title = "Generate a new key", status = "ok", duration = 0.01 },
    { event = "step_start", t = 1000.0, index = 2, total = 4, title = "Push the key to the hub" },
    { event = "effect", t = 1000.1, index = 2, kind = "http", summary = "POST http://127.0.0.1:8787/api/queue",
      simulated = true },
    { event = "verify", t = 1000.4, index = 2, name = "answers 200", status = "skipped",
      message = "depends on a simulated write (dry-run)" },
    { event = "step_end", t = 1000.4, index = 2, title = "Push the key to the hub", status = "ok", duration = 0.42 },
    { event = "step_start", t = 1000.4, index = 3, total = 4, title = ODD_TITLE },
    { event = "step_end", t = 1000.4, index = 3, title = ODD_TITLE, status = "skipped", duration = 0,
      error = "condition not met" },
    { event = "step_start", t = 1000.4, index = 4, total = 4, title = "Probe with the old key" },
    { event = "log", t = 1000.5, index = 4, message = "bell\7 and bad utf-8 \255 here" },
    { event = "verify", t = 1000.5, index = 4, name = "old key is refused", status = "fail", message = "got 200, want 401" },
    { event = "step_end", t = 1003.1, index = 4, title = "Probe with the old key", status = "failed", duration = 2.7,
      error = "verification failed: old key is refused: got 200, want 401",
      hint = "restart the daemon so it drops the old key" },
    { event = "run_end", t = 1003.1, run_id = RUN_ID, status = "failed", exit_code = 1, duration = 3.1,
      resume = "runbook resume " .. RUN_ID, failed_step = 4,
      error = "verification failed: old key is refused: got 200, want 401",
      hint = "restart the daemon so it drops the old key" },
  }
end

local function ok_run()
  return {
    { event = "run_start", t = 1.0, run_id = "r-ok", runbook = "sync-queue-keys", env = "local",
      target = "http://127.0.0.1:8787", mode = "run", params = {}, total = 2 },
    { event = "step_start", t = 1.0, index = 1, total = 2, title = "Push" },
    { event = "effect", t = 1.0, index = 1, kind = "http", summary = "PUT http://127.0.0.1:8787/k", simulated = false },
    { event = "verify", t = 1.0, index = 1, name = "stored", status = "pass" },
    { event = "step_end", t = 1.5, index = 1, title = "Push", status = "ok", duration = 0.5 },
    { event = "step_start", t = 1.5, index = 2, total = 2, title = "Probe" },
    { event = "verify", t = 1.5, index = 2, name = "200 with the key", status = "pass" },
    { event = "step_end", t = 4.1, index = 2, title = "Probe", status = "ok", duration = 2.6 },
    { event = "run_end", t = 4.1, run_id = "r-ok", status = "ok", exit_code = 0, duration = 3.1, steps = 2 },
  }
end

local function render(events, opts)
  local s = fake_stream()
  opts = opts or {}
  opts.stream = s
  local o = output.new(opts)
  for _, ev in ipairs(events) do o:emit(ev) end
  local ok, err = o:close()
  return s:text(), s, ok, err
end

local function lines(text)
  local t = {}
  for l in text:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local function strip_ansi(s)
  return (s:gsub("\27%[[%d;]*[A-Za-z]", ""))
end

-- What a terminal would finally show: \r returns to column 1 and later
-- characters overwrite earlier ones.
local function screen(s)
  local shown = {}
  for raw in (s .. "\n"):gmatch("([^\n]*)\n") do
    local cells, col = {}, 1
    for _, cp in utf8.codes(raw) do
      if cp == 13 then
        col = 1
      else
        cells[col] = utf8.char(cp)
        col = col + 1
      end
    end
    shown[#shown + 1] = (table.concat(cells):gsub("%s+$", ""))
  end
  return shown
end

local function tmp_path(name)
  local base = os.tmpname()
  os.remove(base)
  return base .. "-" .. name
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function count(hay, needle)
  local n, i = 0, 1
  while true do
    local a, b = hay:find(needle, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

describe("output (terminal)", function()
  it("opens with the runbook, environment and target, mode and run id", function()
    local text = render(failed_run(), { tty = false })
    local first = lines(text)[1]
    for _, want in ipairs({ "rotate-queue-key", "env local", "(http://127.0.0.1:8787)", "dry-run", "run " .. RUN_ID }) do
      assert.truthy(first:find(want, 1, true), want .. " missing from: " .. first)
    end
    assert.truthy(text:find("params: limit=200, token=(secret)", 1, true))
  end)

  it("numbers every step and reports its outcome and time", function()
    local ls = lines(render(failed_run(), { tty = false }))
    local function has(prefix)
      for _, l in ipairs(ls) do if l:sub(1, #prefix) == prefix then return l end end
    end
    assert.truthy(has("[1/4] Generate a new key"))
    assert.equals("[1/4] ok   Generate a new key (0.01 s)", has("[1/4] ok"))
    assert.equals("[2/4] ok   Push the key to the hub (0.42 s)", has("[2/4] ok"))
    assert.equals("[3/4] skip " .. ODD_TITLE .. " (condition not met)", has("[3/4] skip"))
    assert.equals("[4/4] FAIL Probe with the old key (2.7 s)", has("[4/4] FAIL"))
  end)

  it("indents what happened inside a step under its title", function()
    local text = render(failed_run(), { tty = false })
    assert.truthy(text:find("\n      new key sha256:1a2b3c4d\n", 1, true))
    assert.truthy(text:find("\n      -> POST http://127.0.0.1:8787/api/queue (dry-run: not sent)\n", 1, true))
    assert.truthy(text:find("\n      skip answers 200 (not run: depends on a simulated write (dry-run))\n", 1, true))
    assert.truthy(text:find("\nwarning: took over the lock of run 1\n", 1, true))
  end)

  it("on failure shows the failed check, the error, the hint and how to resume", function()
    local text = render(failed_run(), { tty = true, unicode = true, color = false, width = 80 })
    assert.truthy(text:find("      ✗ old key is refused: got 200, want 401\n", 1, true))
    assert.truthy(text:find("      ✓ is 64 hex characters\n", 1, true))
    assert.truthy(text:find("      error: verification failed: old key is refused: got 200, want 401\n", 1, true))
    assert.truthy(text:find("      hint: restart the daemon so it drops the old key\n", 1, true))
    assert.truthy(text:find("\nFAILED at step 4/4: Probe with the old key\n", 1, true))
    assert.truthy(text:find("\n  resume with: runbook resume " .. RUN_ID .. "\n", 1, true))
    -- the error is shown once, under its step, not again in the summary
    assert.equals(1, count(text, "error: verification failed"))
  end)

  it("uses words, not symbols, when not on a UTF-8 terminal", function()
    local text = render(failed_run(), { tty = false })
    assert.falsy(text:find("✓", 1, true))
    assert.falsy(text:find("✗", 1, true))
    assert.falsy(text:find("→", 1, true))
    assert.truthy(text:find("      FAIL old key is refused: got 200, want 401\n", 1, true))
    assert.truthy(text:find("      ok   is 64 hex characters\n", 1, true))
  end)

  it("writes no ANSI codes without colour, and colour changes nothing but codes", function()
    local plain = render(failed_run(), { tty = true, unicode = true, color = false })
    assert.falsy(plain:find("\27", 1, true))
    -- everything automatic: a stream that is not a terminal gets no codes, no symbols
    local auto = render(failed_run(), {})
    assert.falsy(auto:find("\27", 1, true))
    assert.falsy(auto:find("✗", 1, true))
    local coloured = render(failed_run(), { tty = true, unicode = true, color = true })
    assert.truthy(coloured:find("\27[", 1, true))
    assert.equals(plain, strip_ansi(coloured))
  end)

  it("keeps each line valid UTF-8 even when a command printed bad bytes", function()
    local text = render(failed_run(), { tty = false })
    assert.truthy(utf8.len(text))
  end)

  it("summarises a successful run with its step count and time", function()
    local text = render(ok_run(), { tty = false })
    local ls = lines(text)
    assert.equals("done: 2 steps ok in 3.1 s", ls[#ls])
    assert.falsy(text:find("resume", 1, true))
    assert.truthy(text:find("live", 1, true))
  end)

  it("says a dry run changed nothing and counts skipped steps", function()
    local evs = failed_run()
    evs[#evs] = { event = "run_end", t = 1003.1, run_id = RUN_ID, status = "ok", exit_code = 0, duration = 3.1, steps = 4 }
    local ls = lines(render(evs, { tty = false }))
    assert.equals("done: 4 steps ok (1 skipped) in 3.1 s (dry-run: no writes were made)", ls[#ls])
  end)

  it("reports an interrupted run with its resume command", function()
    local evs = {
      { event = "run_start", t = 0, run_id = "r1", runbook = "migrate", env = "local", mode = "run", total = 3 },
      { event = "step_start", t = 0, index = 2, total = 3, title = "Copy tasks" },
      { event = "step_end", t = 5, index = 2, title = "Copy tasks", status = "interrupted", duration = 5,
        error = "interrupted by SIGINT" },
      { event = "run_end", t = 5, run_id = "r1", status = "interrupted", exit_code = 4, duration = 5,
        resume = "runbook resume r1 --journal /tmp/j.db", failed_step = 2 },
    }
    local text = render(evs, { tty = false })
    assert.truthy(text:find("[2/3] STOP Copy tasks (5.0 s)\n      error: interrupted by SIGINT\n", 1, true))
    assert.truthy(text:find("\nINTERRUPTED at step 2/3: Copy tasks\n  resume with: runbook resume r1 --journal /tmp/j.db\n",
      1, true))
  end)

  it("explains a run refused before it started", function()
    local text = render({ { event = "run_end", t = 0, status = "refused", exit_code = 2, runbook = "x",
      error = "invalid parameter limit: must be at least 1", duration = 0 } }, { tty = false })
    assert.equals("not started: invalid parameter limit: must be at least 1\n", text)
  end)

  it("indents the continuation lines of a multi-line error under its first", function()
    local evs = {
      { event = "run_start", t = 0, run_id = "r", runbook = "x", env = "local", mode = "run", total = 1 },
      { event = "step_start", t = 0, index = 1, total = 1, title = "Boom" },
      { event = "step_end", t = 0, index = 1, title = "Boom", status = "failed", duration = 0,
        error = "first line\nsecond line" },
    }
    local text = render(evs, { tty = false })
    assert.truthy(text:find("      error: first line\n             second line\n", 1, true))
  end)

  it("rejects an unknown format and an event without a name", function()
    assert.has_error(function() output.new({ format = "xml", stream = fake_stream() }) end)
    local o = output.new({ stream = fake_stream(), tty = false })
    assert.has_error(function() o:emit({ t = 1 }) end)
  end)
end)

describe("output (progress)", function()
  local function progress_run(n, step_t, total)
    local evs = {
      { event = "run_start", t = 0, run_id = "r", runbook = "migrate", env = "local", mode = "run", total = 1 },
      { event = "step_start", t = 0, index = 1, total = 1, title = "Copy tasks" },
    }
    for i = 1, n do
      evs[#evs + 1] = { event = "progress", t = i * step_t, index = 1, done = i, total = total, label = "tasks" }
    end
    evs[#evs + 1] = { event = "step_end", t = n * step_t, index = 1, title = "Copy tasks", status = "ok",
      duration = n * step_t }
    return evs
  end

  it("off a tty prints a few plain lines, not one per event, and the end", function()
    local text = render(progress_run(1000, 0.001, 1000), { tty = false })
    local n = count(text, "progress ")
    assert.is_true(n >= 10 and n <= 12, "progress lines: " .. n)
    assert.truthy(text:find("progress 1000/1000 (100 %)", 1, true))
    assert.falsy(text:find("\r", 1, true))
  end)

  it("off a tty without a total prints a line every 5 s at most", function()
    local text = render(progress_run(20, 1, nil), { tty = false })
    local n = count(text, "progress ")
    assert.is_true(n >= 3 and n <= 5, "progress lines: " .. n)
    assert.truthy(text:find("progress 1 done", 1, true))
  end)

  it("on a tty redraws one line in place, within the width, and clears it before the next line", function()
    local width = 60
    local text = render(progress_run(500, 0.05, 500), { tty = true, unicode = true, color = false, width = width })
    assert.truthy(text:find("\r", 1, true))
    for seg in text:gmatch("[^\r\n]+") do
      assert.is_true(utf8.len(seg) < width, "wider than the terminal: " .. seg)
    end
    local shown = screen(text)
    local i
    for k, l in ipairs(shown) do if l:find("^%[1/1%] ok") then i = k end end
    assert.truthy(i, "no step_end line")
    assert.equals("[1/1] ok   Copy tasks (25.0 s)", shown[i])
    -- the last bar drawn was wiped, not left on screen above the summary
    for _, l in ipairs(shown) do assert.falsy(l:find("500/500", 1, true)) end
    -- rate and ETA are shown while it runs
    assert.truthy(text:find("20/s", 1, true))
    assert.truthy(text:find("ETA ", 1, true))
  end)
end)

describe("output (json)", function()
  it("writes one decodable JSON object per event, each with its event name, flushed", function()
    local evs = failed_run()
    local text, s = render(evs, { format = "json" })
    local ls = lines(text)
    assert.equals(#evs, #ls)
    for i, l in ipairs(ls) do
      local ok, obj = pcall(cjson.decode, l)
      assert.is_true(ok, "not JSON: " .. l)
      assert.equals(evs[i].event, obj.event)
    end
    assert.is_true(s.flushes >= #evs)
    assert.falsy(text:find("\27", 1, true))
  end)

  it("puts event and t first, keeps maps as objects even when empty, and fixes bad UTF-8", function()
    local text = render(ok_run(), { format = "json" })
    local first = lines(text)[1]
    assert.truthy(first:find('^{"event":"run_start","t":1'))
    assert.truthy(first:find('"params":{}', 1, true))
    local bad = lines(render(failed_run(), { format = "json" }))[14]
    local obj = cjson.decode(bad)
    assert.equals("log", obj.event)
    assert.truthy(obj.message:find("bell\7 and bad utf-8 \239\191\189 here", 1, true))
  end)

  it("encodes values stably", function()
    assert.equals('{"event":"x","t":1.5,"a":[1,2],"b":{"c":true},"z":null}',
      output.json({ z = math.huge, b = { c = true }, a = { 1, 2 }, t = 1.5, event = "x" }))
    assert.equals('"tab\\tnl\\nq\\"\\u0001"', output.json('tab\tnl\nq"\1'))
  end)
end)

describe("output (junit)", function()
  it("writes one suite with a case per step and the right counts", function()
    local path = tmp_path("junit.xml")
    local text, _, ok = render(failed_run(), { junit = path, tty = false })
    assert.is_true(ok)
    assert.truthy(text:find("FAILED", 1, true)) -- the terminal still renders
    local x = read(path)
    os.remove(path)
    assert.is_nil(io.open(path .. ".tmp", "rb"))
    assert.equals(1, count(x, "<testsuite "))
    assert.truthy(x:find('<testsuite name="rotate%-queue%-key" tests="4" failures="1" errors="0" skipped="1"'))
    assert.equals(4, count(x, "<testcase "))
    assert.truthy(x:find('<testcase classname="rotate-queue-key" name="01 Generate a new key" time="0.010"', 1, true))
    assert.equals(1, count(x, "<failure "))
    assert.equals(1, count(x, "<skipped"))
    assert.truthy(x:find("hint: restart the daemon so it drops the old key", 1, true))
    assert.truthy(x:find("PASS is 64 hex characters", 1, true))
  end)

  it("escapes markup and drops control characters XML cannot hold", function()
    local path = tmp_path("junit-esc.xml")
    render(failed_run(), { junit = path, format = "json" })
    local x = read(path)
    os.remove(path)
    assert.truthy(x:find('name="03 Restart the &lt;&amp;&gt;&quot;&apos; daemon"', 1, true))
    assert.falsy(x:find(ODD_TITLE, 1, true))
    assert.falsy(x:find("\7", 1, true))
    assert.truthy(utf8.len(x))
    -- every & starts an entity
    for amp in x:gmatch("&[^;]*;?") do
      assert.truthy(amp:find("^&[#%w]+;$"), "bare ampersand: " .. amp)
    end
  end)

  it("records a run refused before it started as a failure", function()
    local path = tmp_path("junit-refused.xml")
    render({ { event = "run_end", t = 0, status = "refused", exit_code = 2, runbook = "x",
      error = "unknown environment 'prod'", duration = 0 } }, { junit = path, tty = false })
    local x = read(path)
    os.remove(path)
    assert.truthy(x:find('tests="1" failures="1"', 1, true))
    assert.truthy(x:find("unknown environment &apos;prod&apos;", 1, true))
  end)

  it("reports, and does not raise, when the report cannot be written", function()
    local text, _, ok, err = render(ok_run(), { junit = "/nonexistent-dir/junit.xml", tty = false })
    assert.is_nil(ok)
    assert.truthy(err:find("/nonexistent-dir/junit.xml", 1, true))
    assert.truthy(text:find("warning: could not write the JUnit report", 1, true))
    -- with --json the warning is one more JSON line, so the stream stays parseable
    local json = lines((render(ok_run(), { junit = "/nonexistent-dir/junit.xml", format = "json" })))
    local last = cjson.decode(json[#json])
    assert.equals("notice", last.event)
    assert.equals("warn", last.level)
  end)
end)
