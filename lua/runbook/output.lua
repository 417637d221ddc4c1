-- output.lua — renders the engine's events (docs/ENGINE.md, "Events") for
-- the people and machines watching a run:
--   terminal  a header, each step with its log, effects and verifications,
--             a summary and the resume command; a progress bar on a tty,
--             sparse progress lines otherwise (CI logs stay short)
--   json      one JSON object per event per line, flushed, keys in a stable
--             order (`event`, `t`, then sorted), so `--json | jq` streams
--   junit     (either format, when `junit = path`) one testsuite per run,
--             one testcase per step, written atomically at close()
-- Colour only adds ANSI codes; the text is the same with or without it.

local M = {}

local Output = {}
Output.__index = Output

-- ---------------------------------------------------------------- text

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- Valid UTF-8 (strict: no surrogates, nothing above U+10FFFF) with each bad
-- byte replaced by U+FFFD. Child processes print whatever they like; jq and
-- XML parsers reject the whole document for one bad byte.
local function clean_utf8(s)
  if utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local _, j = s:find("^" .. utf8.charpattern, i)
    local ch = j and s:sub(i, j)
    if ch and utf8.len(ch) == 1 then
      out[#out + 1] = ch
      i = j + 1
    else
      out[#out + 1] = REPLACEMENT
      i = i + 1
    end
  end
  return table.concat(out)
end

local function str(v)
  if v == nil then return "" end
  return clean_utf8(tostring(v))
end

---Seconds as a person reads them: 0.42 s, 3.1 s, 2 min 05 s, 1 h 02 min.
local function fmt_duration(s)
  s = tonumber(s) or 0
  if s < 1 then return ("%.2f s"):format(s) end
  if s < 60 then return ("%.1f s"):format(s) end
  if s < 3600 then return ("%d min %02d s"):format(s // 60, math.floor(s % 60)) end
  return ("%d h %02d min"):format(s // 3600, math.floor(s % 3600 // 60))
end

local function fmt_eta(s)
  if s < 1 then return "<1 s" end
  s = math.ceil(s)
  if s < 60 then return ("%d s"):format(s) end
  return fmt_duration(s)
end

local function fmt_rate(r)
  if r >= 100 then return ("%d/s"):format(math.floor(r + 0.5)) end
  if r >= 10 then return ("%.0f/s"):format(r) end
  return ("%.1f/s"):format(r)
end

local function now()
  local ok, term = pcall(require, "runbook.term.core")
  if ok and type(term) == "table" and term.now then return term.now() end
  return os.time()
end

-- Display columns of a string (a code point is one column here: the
-- symbols we print are all single-width).
local function columns(s)
  return utf8.len(s) or #s
end

local function truncate(s, cols)
  if columns(s) <= cols then return s end
  local cut = utf8.offset(s, cols + 1)
  return cut and s:sub(1, cut - 1) or s
end

-- ---------------------------------------------------------------- JSON

local JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\b"] = "\\b", ["\f"] = "\\f" }

local function json_string(s)
  return '"' .. clean_utf8(s):gsub('[%c"\\]', function(c)
    return JSON_ESC[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function json_number(v)
  if v ~= v or v == math.huge or v == -math.huge then return "null" end
  if math.type(v) == "integer" then return ("%d"):format(v) end
  return ("%.15g"):format(v)
end

-- `event` and `t` first, then the rest sorted: the same event always reads
-- the same, whatever order the table was built in.
local function key_order(a, b)
  local ra = a == "event" and 0 or a == "t" and 1 or 2
  local rb = b == "event" and 0 or b == "t" and 1 or 2
  if ra ~= rb then return ra < rb end
  return a < b
end

local json_value

local function json_table(v, depth)
  if depth > 32 then return "null" end
  local n, count = #v, 0
  for _ in pairs(v) do count = count + 1 end
  if n > 0 and count == n then
    local parts = {}
    for i = 1, n do parts[i] = json_value(v[i], depth + 1) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  -- an empty table is an object: the engine's tables (params) are maps
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys, key_order)
  local parts = {}
  for i, k in ipairs(keys) do
    local val = v[k]
    if val == nil then val = v[tonumber(k)] end
    parts[i] = json_string(k) .. ":" .. json_value(val, depth + 1)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

json_value = function(v, depth)
  local t = type(v)
  if t == "string" then return json_string(v) end
  if t == "number" then return json_number(v) end
  if t == "boolean" then return tostring(v) end
  if t == "table" then return json_table(v, depth) end
  return "null"
end

---Encode a value as one line of JSON (stable key order, valid UTF-8).
---@param v any
---@return string
function M.json(v)
  return json_value(v, 0)
end

-- ---------------------------------------------------------------- XML

local XML_ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }

---Escape text for an XML attribute or element; control characters XML 1.0
---forbids are dropped and bad UTF-8 replaced.
---@param s any
---@return string
function M.xml_escape(s)
  s = str(s):gsub("[%z\1-\8\11\12\14-\31]", "")
  -- U+FFFE and U+FFFF are not XML characters either
  s = s:gsub("\239\191[\190\191]", "")
  return (s:gsub("[&<>\"']", XML_ESC))
end
local xml = M.xml_escape

-- In an attribute a newline would be read back as a space: keep it.
local function xml_attr(s)
  return (xml(s):gsub("[\n\r\t]", { ["\n"] = "&#10;", ["\r"] = "&#13;", ["\t"] = "&#9;" }))
end

-- ---------------------------------------------------------------- terminal

local SYMBOLS = {
  unicode = { pass = "✓ ", fail = "✗ ", skip = "- ", arrow = "→ ", sep = " · ", full = "█", empty = "░" },
  ascii = { pass = "ok   ", fail = "FAIL ", skip = "skip ", arrow = "-> ", sep = " | ", full = "#", empty = "." },
}

local STEP_WORD = { ok = "ok", failed = "FAIL", skipped = "skip", interrupted = "STOP" }
local STEP_COLOR = { ok = "green", failed = "red", skipped = "yellow", interrupted = "red" }

local ANSI = { reset = "\27[0m", bold = "\27[1m", dim = "\27[2m", red = "\27[31m", green = "\27[32m",
  yellow = "\27[33m", cyan = "\27[36m", boldred = "\27[1;31m", boldgreen = "\27[1;32m" }

local MODE_TEXT = { run = "live", ["dry-run"] = "dry-run", offline = "offline" }
local NOT_DONE = { http = "not sent", run = "not run", write_file = "not written", sql = "not executed" }

function Output:_paint(color, text)
  if not self.color or not color or text == "" then return text end
  return ANSI[color] .. text .. ANSI.reset
end

function Output:_write(...)
  self.stream:write(...)
  if self.stream.flush then self.stream:flush() end
end

-- Every line goes through here so a progress bar being redrawn on a tty is
-- wiped first instead of being left half-overwritten.
function Output:_line(text)
  self:_clear_progress()
  self:_write(text, "\n")
end

function Output:_clear_progress()
  if self._bar_cols then
    self:_write("\r", (" "):rep(self._bar_cols), "\r")
    self._bar_cols = nil
  end
end

-- Lines under a step line up with its title; run-level lines are not indented.
function Output:_indent(index)
  local total = self._total or 0
  if not index then return "" end
  return (" "):rep(math.max(6, #("[" .. tostring(total) .. "/" .. tostring(total) .. "] ")))
end

function Output:_tag(index)
  local total = self._total or 0
  local w = #tostring(total)
  return ("[%" .. w .. "s/%s]"):format(tostring(index or "?"), tostring(total))
end

-- Several lines under one label ("error: ...") keep their own indentation.
function Output:_block(index, label, text, color)
  local ind = self:_indent(index)
  local first = true
  for line in (str(text) .. "\n"):gmatch("([^\n]*)\n") do
    if first then
      self:_line(ind .. self:_paint(color, label) .. line)
      first = false
    else
      self:_line(ind .. (" "):rep(columns(label)) .. line)
    end
  end
end

local function fmt_value(v)
  if type(v) == "table" then return M.json(v) end
  return str(v)
end

local T = {}

function T.run_start(self, ev)
  self._total = ev.total
  self._mode = ev.mode
  local s = self.sym
  local parts = { "runbook " .. self:_paint("bold", str(ev.runbook)) }
  local env = "env " .. str(ev.env)
  if ev.target and ev.target ~= "" then
    -- the engine says "(no URL)" when there is none: do not wrap it twice
    local target = str(ev.target)
    env = env .. (target:match("^%(.*%)$") and " " .. target or " (" .. target .. ")")
  end
  parts[#parts + 1] = env
  local mode = MODE_TEXT[ev.mode] or str(ev.mode)
  parts[#parts + 1] = ev.mode == "run" and mode or self:_paint("yellow", mode)
  parts[#parts + 1] = "run " .. str(ev.run_id)
  if ev.resumed_from then parts[#parts + 1] = "resumed" end
  self:_line(table.concat(parts, s.sep))
  if ev.summary and ev.summary ~= "" then self:_line("  " .. str(ev.summary)) end
  if type(ev.params) == "table" and next(ev.params) then
    local keys = {}
    for k in pairs(ev.params) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local kv = {}
    for i, k in ipairs(keys) do kv[i] = k .. "=" .. fmt_value(ev.params[k]) end
    self:_line("  params: " .. table.concat(kv, ", "))
  end
  self:_line("")
end

function T.notice(self, ev)
  if ev.level == "warn" then
    self:_line(self:_paint("yellow", "warning: ") .. str(ev.message))
  else
    self:_line("note: " .. str(ev.message))
  end
end

function T.step_start(self, ev)
  if ev.total then self._total = ev.total end
  self._titles[ev.index or 0] = ev.title
  self:_line(self:_tag(ev.index) .. " " .. self:_paint("bold", str(ev.title)))
end

function T.log(self, ev)
  local text = str(ev.message)
  if ev.stream == "stderr" then
    self:_block(ev.index, "", self:_paint("dim", text))
  else
    self:_block(ev.index, "", text)
  end
end

function T.effect(self, ev)
  local text = self.sym.arrow .. str(ev.summary)
  if ev.simulated then
    local mode = self._mode and self._mode ~= "run" and self._mode or "simulated"
    text = text .. self:_paint("yellow", (" (%s: %s)"):format(mode, NOT_DONE[ev.kind] or "not done"))
  end
  self:_line(self:_indent(ev.index) .. text)
end

function T.verify(self, ev)
  local s, ind = self.sym, self:_indent(ev.index)
  local name = str(ev.name)
  if ev.status == "pass" then
    self:_line(ind .. self:_paint("green", s.pass) .. name)
  elseif ev.status == "fail" then
    local msg = ev.message and ev.message ~= "" and (": " .. str(ev.message)) or ""
    self:_line(ind .. self:_paint("red", s.fail) .. name .. msg)
  else
    local msg = ev.message and ev.message ~= "" and (" (not run: " .. str(ev.message) .. ")") or " (not run)"
    self:_line(ind .. self:_paint("yellow", s.skip) .. name .. self:_paint("dim", msg))
  end
end

function T.step_end(self, ev)
  self._progress = nil
  local status = ev.status or "?"
  self._counts[status] = (self._counts[status] or 0) + 1
  local word = ("%-4s"):format(STEP_WORD[status] or status)
  local line = self:_tag(ev.index) .. " " .. self:_paint(STEP_COLOR[status], word) .. " " .. str(ev.title)
  if status == "skipped" then
    if ev.error and ev.error ~= "" then line = line .. self:_paint("dim", " (" .. str(ev.error) .. ")") end
    self:_line(line)
    return
  end
  if ev.duration then line = line .. self:_paint("dim", " (" .. fmt_duration(ev.duration) .. ")") end
  self:_line(line)
  if status ~= "ok" then
    if ev.error and ev.error ~= "" then self:_block(ev.index, "error: ", ev.error, "red") end
    if ev.hint and ev.hint ~= "" then self:_block(ev.index, "hint: ", ev.hint, "cyan") end
  end
end

function T.run_end(self, ev)
  if self._started then self:_line("") end
  local status = ev.status
  local at = ""
  if ev.failed_step then
    local title = self._titles[ev.failed_step]
    at = (" at step %s/%s"):format(tostring(ev.failed_step), tostring(self._total or "?"))
    if title then at = at .. ": " .. str(title) end
  end
  if status == "ok" then
    local n = ev.steps or self._total or 0
    local text = ("done: %d step%s ok"):format(n, n == 1 and "" or "s")
    local skipped = self._counts.skipped or 0
    if skipped > 0 then text = text .. (" (%d skipped)"):format(skipped) end
    text = text .. " in " .. fmt_duration(ev.duration)
    if self._mode == "dry-run" or self._mode == "offline" then
      text = text .. (" (%s: no writes were made)"):format(self._mode)
    end
    self:_line(self:_paint("boldgreen", text))
  elseif status == "refused" and not self._started then
    -- refused before anything began: bad parameter, environment, lock
    self:_block(nil, "not started: ", ev.error or "refused", "boldred")
  else
    local word = ({ failed = "FAILED", interrupted = "INTERRUPTED", refused = "REFUSED" })[status]
      or str(status):upper()
    self:_line(self:_paint("boldred", word .. at))
    -- the step's own error was shown under it; repeat only what was not
    if ev.error and ev.error ~= "" and not ev.failed_step then
      self:_block(nil, "error: ", ev.error, "red")
    end
  end
  if ev.resume and status ~= "ok" then
    self:_line("  resume with: " .. self:_paint("bold", str(ev.resume)))
  end
end

-- Progress: redrawn in place on a tty (at most ~10 times a second); on
-- anything else a plain line when another 10 % is done or 5 s have passed,
-- and at the end.
function T.progress(self, ev)
  local t = tonumber(ev.t) or now()
  local done, total = tonumber(ev.done) or 0, tonumber(ev.total)
  local p = self._progress
  -- a new step, or the same step starting another loop, starts afresh
  if not p or p.index ~= ev.index or p.total ~= total or done < p.last_done then
    p = { index = ev.index, t0 = t, done0 = done, bucket = -1, total = total }
    self._progress = p
  end
  p.last_done = done
  local final = total and done >= total
  local rate
  if t > p.t0 and done > p.done0 then rate = (done - p.done0) / (t - p.t0) end
  local eta
  if rate and total and not final then eta = (total - done) / rate end
  local pct = total and total > 0 and math.min(100, math.floor(done * 100 / total)) or nil

  local extras = {}
  if ev.label and ev.label ~= "" then extras[#extras + 1] = str(ev.label) end
  if rate then extras[#extras + 1] = fmt_rate(rate) end
  if eta then extras[#extras + 1] = "ETA " .. fmt_eta(eta) end
  local count = total and ("%d/%d"):format(math.floor(done), math.floor(total)) or ("%d done"):format(math.floor(done))
  local ind = self:_indent(ev.index)

  if self.tty then
    if p.last_t and t - p.last_t < 0.1 and not final and p.last_pct == pct then return end
    p.last_t, p.last_pct = t, pct
    local tail = " " .. count .. (pct and ("  %3d%%"):format(pct) or "")
    if #extras > 0 then tail = tail .. "  " .. table.concat(extras, self.sym.sep) end
    local bar_plain, bar_painted = "", ""
    if pct then
      -- sized once per loop, leaving room for the counts, rate and ETA, so
      -- the bar does not jump as the numbers change
      p.bar = p.bar or math.max(10, math.min(40, self.width - 1 - columns(ind) - 2 - 44))
      local bar = p.bar
      local full = math.floor(bar * pct / 100)
      bar_plain = "[" .. self.sym.full:rep(full) .. self.sym.empty:rep(bar - full) .. "]"
      bar_painted = "[" .. self:_paint("green", self.sym.full:rep(full)) .. self.sym.empty:rep(bar - full) .. "]"
    else
      tail = tail:sub(2)
    end
    -- never wider than the terminal: a wrapped line cannot be redrawn with \r
    local line = ind .. bar_plain .. tail
    if columns(line) > self.width - 1 then
      line = truncate(line, self.width - 1)
    else
      line = ind .. bar_painted .. tail
    end
    local cols = columns((line:gsub("\27%[[%d;]*m", "")))
    local pad = self._bar_cols and self._bar_cols > cols and (" "):rep(self._bar_cols - cols) or ""
    self:_write("\r", line, pad)
    self._bar_cols = math.max(cols, self._bar_cols or 0)
    return
  end

  local bucket = pct and pct // 10 or nil
  local due = not p.last_t or (t - p.last_t >= 5) or (bucket and bucket > p.bucket)
  if final then due = not p.final_shown end
  if not due then return end
  p.last_t = t
  if bucket then p.bucket = bucket end
  if final then p.final_shown = true end
  local text = ind .. "progress " .. count .. (pct and (" (%d %%)"):format(pct) or "")
  if #extras > 0 then text = text .. ", " .. table.concat(extras, ", ") end
  self:_line(text)
end

-- ---------------------------------------------------------------- JUnit

local function collect(self, ev)
  local runs = self._runs
  local run = runs[#runs]
  local e = ev.event
  if e == "run_start" then
    run = { runbook = ev.runbook, run_id = ev.run_id, env = ev.env, target = ev.target, mode = ev.mode,
      t = ev.t, cases = {}, by_index = {}, steps = ev.steps, resumed = ev.resumed_from ~= nil }
    runs[#runs + 1] = run
    return
  end
  if e == "run_end" and (not run or run.ended) then
    -- refused before it started: still a run CI should see failing
    run = { runbook = ev.runbook, run_id = ev.run_id, t = ev.t, cases = {}, by_index = {} }
    runs[#runs + 1] = run
  end
  if not run then return end
  local case = ev.index and run.by_index[ev.index]
  if e == "step_start" then
    case = { index = ev.index, title = ev.title, out = {}, failed_checks = {}, t = ev.t }
    run.by_index[ev.index] = case
    run.cases[#run.cases + 1] = case
  elseif e == "log" and case then
    case.out[#case.out + 1] = str(ev.message)
  elseif e == "effect" and case then
    case.out[#case.out + 1] = "-> " .. str(ev.summary) .. (ev.simulated and " (simulated: not done)" or "")
  elseif e == "verify" and case then
    local line
    if ev.status == "pass" then
      line = "PASS " .. str(ev.name)
    elseif ev.status == "fail" then
      line = "FAIL " .. str(ev.name) .. (ev.message and (": " .. str(ev.message)) or "")
      case.failed_checks[#case.failed_checks + 1] = str(ev.name) .. (ev.message and (": " .. str(ev.message)) or "")
    else
      line = "SKIP " .. str(ev.name) .. (ev.message and (" (not run: " .. str(ev.message) .. ")") or "")
    end
    case.out[#case.out + 1] = line
  elseif e == "step_end" and case then
    case.status, case.duration, case.error, case.hint = ev.status, ev.duration, ev.error, ev.hint
    case.title = ev.title or case.title
  elseif e == "run_end" then
    run.ended, run.status, run.duration, run.error = true, ev.status, ev.duration, ev.error
    run.runbook = run.runbook or ev.runbook
    if ev.status == "refused" and not ev.failed_step then
      run.cases[#run.cases + 1] = { title = "run refused", status = "failed", error = ev.error or "refused",
        out = {}, failed_checks = {}, duration = 0, unnumbered = true }
    end
    -- every step of the runbook is a testcase, also the ones this attempt
    -- never reached (after a failure) or did not need (done before a resume)
    local first = math.huge
    for idx in pairs(run.by_index) do first = math.min(first, idx) end
    for i, title in ipairs(run.steps or {}) do
      if not run.by_index[i] then
        local why = (run.resumed and i < first) and "done in an earlier attempt of this run"
          or ("not reached: the run stopped " .. (ev.failed_step and ("at step " .. ev.failed_step) or "before it"))
        local c = { index = i, title = title, status = "skipped", error = why, out = {}, failed_checks = {}, duration = 0 }
        run.by_index[i] = c
        run.cases[#run.cases + 1] = c
      end
    end
    table.sort(run.cases, function(a, b) return (a.index or 0) < (b.index or 0) end)
  end
end

local function junit_xml(runs)
  local out = { '<?xml version="1.0" encoding="UTF-8"?>' }
  local all = { tests = 0, failures = 0, errors = 0, skipped = 0, time = 0 }
  local suites = {}
  for _, run in ipairs(runs) do
    local n = { tests = 0, failures = 0, errors = 0, skipped = 0 }
    local cases = {}
    local name = str(run.runbook or "runbook")
    for _, c in ipairs(run.cases) do
      n.tests = n.tests + 1
      local cname = c.unnumbered and c.title or ("%02d %s"):format(c.index or 0, str(c.title))
      local head = ('    <testcase classname="%s" name="%s" time="%.3f"'):format(
        xml_attr(name), xml_attr(cname), tonumber(c.duration) or 0)
      local body = {}
      if c.status == "failed" or c.status == nil then
        n.failures = n.failures + 1
        local detail = {}
        detail[#detail + 1] = "error: " .. str(c.error or "did not finish")
        if c.hint then detail[#detail + 1] = "hint: " .. str(c.hint) end
        for _, f in ipairs(c.failed_checks) do
          -- the engine's error usually names the first failed check already
          if not str(c.error):find(f, 1, true) then detail[#detail + 1] = "verification failed: " .. f end
        end
        body[#body + 1] = ('      <failure message="%s" type="%s">%s</failure>'):format(
          xml_attr(c.error or "did not finish"), c.status and "failed" or "unfinished", xml(table.concat(detail, "\n")))
      elseif c.status == "interrupted" then
        n.errors = n.errors + 1
        body[#body + 1] = ('      <error message="%s" type="interrupted">%s</error>'):format(
          xml_attr(c.error or "interrupted"), xml(c.error or "interrupted"))
      elseif c.status == "skipped" then
        n.skipped = n.skipped + 1
        body[#body + 1] = c.error and ('      <skipped message="%s"/>'):format(xml_attr(c.error)) or "      <skipped/>"
      end
      if #c.out > 0 then
        body[#body + 1] = "      <system-out>" .. xml(table.concat(c.out, "\n")) .. "</system-out>"
      end
      if #body == 0 then
        cases[#cases + 1] = head .. "/>"
      else
        cases[#cases + 1] = head .. ">\n" .. table.concat(body, "\n") .. "\n    </testcase>"
      end
    end
    local stamp = run.t and os.date("!%Y-%m-%dT%H:%M:%S", math.floor(run.t)) or os.date("!%Y-%m-%dT%H:%M:%S")
    local suite = { ('  <testsuite name="%s" tests="%d" failures="%d" errors="%d" skipped="%d" time="%.3f" timestamp="%s">')
      :format(xml_attr(name), n.tests, n.failures, n.errors, n.skipped, tonumber(run.duration) or 0, stamp) }
    suite[#suite + 1] = "    <properties>"
    for _, k in ipairs({ "run_id", "env", "target", "mode", "status" }) do
      if run[k] then
        suite[#suite + 1] = ('      <property name="%s" value="%s"/>'):format(k, xml_attr(run[k]))
      end
    end
    suite[#suite + 1] = "    </properties>"
    for _, c in ipairs(cases) do suite[#suite + 1] = c end
    suite[#suite + 1] = "  </testsuite>"
    suites[#suites + 1] = table.concat(suite, "\n")
    for k in pairs(n) do all[k] = all[k] + n[k] end
    all.time = all.time + (tonumber(run.duration) or 0)
  end
  out[#out + 1] = ('<testsuites name="runbook" tests="%d" failures="%d" errors="%d" skipped="%d" time="%.3f">')
    :format(all.tests, all.failures, all.errors, all.skipped, all.time)
  for _, s in ipairs(suites) do out[#out + 1] = s end
  out[#out + 1] = "</testsuites>\n"
  return table.concat(out, "\n")
end

-- ---------------------------------------------------------------- public

local function term_face()
  for _, name in ipairs({ "runbook.term", "runbook.term.core" }) do
    local ok, term = pcall(require, name)
    if ok and type(term) == "table" then return term end
  end
end

-- Only a real Lua file can be a terminal; a table with :write never is.
local function detect_tty(stream)
  if io.type(stream) ~= "file" then return false end
  local term = term_face()
  if not term or type(term.isatty) ~= "function" then return false end
  local ok, res = pcall(term.isatty, stream)
  return ok and res == true
end

local function detect_width(stream)
  local term = term_face()
  if term and type(term.width) == "function" then
    local ok, w = pcall(term.width, stream)
    if ok and tonumber(w) and tonumber(w) > 0 then return math.floor(tonumber(w)) end
  end
  local cols = tonumber(os.getenv("COLUMNS"))
  if cols and cols > 0 then return math.floor(cols) end
  return 80
end

local function utf8_locale()
  local loc = os.getenv("LC_ALL")
  if not loc or loc == "" then loc = os.getenv("LC_CTYPE") end
  if not loc or loc == "" then loc = os.getenv("LANG") end
  loc = (loc or ""):lower()
  return loc:find("utf%-?8") ~= nil
end

---Create a renderer.
---@param o table|nil { format = "terminal"|"json", stream = file-like (default io.stdout),
---  color = bool|nil (nil: NO_COLOR unset and a tty), tty = bool|nil (nil: detect),
---  unicode = bool|nil (nil: a tty with a UTF-8 locale), width = integer|nil, junit = path|nil }
---@return table renderer with :emit(ev) and :close()
function M.new(o)
  o = o or {}
  local format = o.format or "terminal"
  if format ~= "terminal" and format ~= "json" then
    error(("output.new: unknown format '%s' (terminal or json)"):format(tostring(format)), 2)
  end
  local stream = o.stream or io.stdout
  if type(stream) ~= "table" and type(stream) ~= "userdata" then
    error("output.new: stream must have a :write method", 2)
  end
  local tty = o.tty
  if tty == nil then tty = detect_tty(stream) end
  local color = o.color
  if color == nil then
    local no_color = os.getenv("NO_COLOR")
    color = tty and (no_color == nil or no_color == "") and os.getenv("TERM") ~= "dumb"
  end
  local unicode = o.unicode
  if unicode == nil then unicode = tty and utf8_locale() end
  local self = setmetatable({
    format = format, stream = stream, tty = tty and true or false, color = color and true or false,
    unicode = unicode and true or false, width = o.width or (tty and detect_width(stream) or 80),
    junit = o.junit, sym = unicode and SYMBOLS.unicode or SYMBOLS.ascii,
    _titles = {}, _counts = {}, _runs = {}, _total = nil, _closed = false,
  }, Output)
  return self
end

---Render one engine event.
---@param ev table an event from docs/ENGINE.md (`event` names it)
function Output:emit(ev)
  if type(ev) ~= "table" or type(ev.event) ~= "string" then
    error("output:emit: an event table with an `event` field is required", 2)
  end
  if self.junit then collect(self, ev) end
  if self.format == "json" then
    self:_write(M.json(ev), "\n")
    return
  end
  if ev.event == "run_start" then
    self._started = true
    self._titles, self._counts = {}, {}
  end
  local render = T[ev.event]
  if render then render(self, ev) end
  if ev.event == "run_end" then self._started = false end
end

---Finish: clear a progress bar, flush, and write the JUnit file if asked
---(to path..".tmp", then renamed over path).
---@return boolean|nil ok, string|nil err
function Output:close()
  if self._closed then return true end
  self._closed = true
  if self.format == "terminal" then self:_clear_progress() end
  local ok, err = true, nil
  if self.junit then
    local path = self.junit
    local tmp = path .. ".tmp"
    local f, oerr = io.open(tmp, "wb")
    if not f then
      ok, err = nil, oerr
    else
      local wok, werr = f:write(junit_xml(self._runs))
      local cok, cerr = f:close()
      if not wok or not cok then
        os.remove(tmp)
        ok, err = nil, werr or cerr
      else
        local rok, rerr = os.rename(tmp, path)
        if not rok then
          os.remove(tmp)
          ok, err = nil, rerr
        end
      end
    end
    if not ok then
      err = ("could not write the JUnit report %s: %s"):format(path, tostring(err))
      -- said where the operator looks (as a notice, so --json stays JSON),
      -- not only returned to a caller that may not check
      local junit = self.junit
      self.junit = nil
      self:emit({ event = "notice", t = now(), level = "warn", message = err })
      self.junit = junit
    end
  end
  if self.stream.flush then self.stream:flush() end
  return ok, err
end

M.format_duration = fmt_duration

return M
