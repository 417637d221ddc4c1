-- context.lua — `ctx`, what a step sees: shared values, secrets, logging,
-- checkpoints, and every effect (HTTP, child processes, files, polls). Each
-- effect is classified read or write; the mode decides what happens to it:
--   run      everything happens
--   dry-run  writes are printed and simulated, reads happen live
--   offline  nothing leaves the process: reads return fixtures, writes are
--            simulated; local file reads still happen (they send nothing)

local redact = require("runbook.redact")

local Ctx = {}
Ctx.__index = Ctx

local function now() return require("runbook.term.core").now() end

local function raise(kind, msg)
  error({ runbook_error = true, kind = kind, message = redact.mask(msg) }, 0)
end

---@return table ctx
function Ctx.new(o)
  local self = setmetatable({
    def = o.def, env = o.env, mode = o.mode, params = o.params, run_id = o.run_id,
    project = o.project, dry_run = o.mode == "dry-run", offline = o.mode == "offline",
    _J = o.journal, _emit = o.emit, _yes = o.yes, _interactive = o.interactive, _ask = o.ask,
    _values = o.values or {}, _secret_keys = o.secret_keys or {}, _dirty = {},
    _simulated = 0, _index = 0, _output_lines = {}, _deadline = nil,
  }, Ctx)
  return self
end

-- engine hooks -------------------------------------------------------------

function Ctx:_begin_step(i, step)
  self._index, self._step = i, step
  self._simulated = 0
  self._output_lines = {}
  self._deadline = step.timeout and (now() + step.timeout) or nil
  self._checkpoints = nil
end

function Ctx:_end_step()
  self._deadline = nil
end

function Ctx:_note_output(line)
  local lines = self._output_lines
  if #lines < 200 then lines[#lines + 1] = redact.mask(line) end
end

function Ctx:_output() return table.concat(self._output_lines, "\n") end

function Ctx:_flush_values()
  for k in pairs(self._dirty) do
    self._J:set_value(self.run_id, k, self._values[k])
  end
  self._dirty = {}
end

-- A safe point: where an interrupt (SIGINT/SIGTERM) or the step's timeout
-- stops the step.
function Ctx:_safe_point()
  local sig = require("runbook.proc.core").pending_signal()
  if sig then raise("interrupted", "interrupted by SIG" .. sig) end
  if self._deadline and now() > self._deadline then
    raise("timeout", ("step timed out after %g s (its timeout)"):format(self._step.timeout))
  end
end

-- Sleep in short slices so an interrupt is noticed; false if interrupted.
function Ctx:_sleep(s)
  local term = require("runbook.term.core")
  local proc = require("runbook.proc.core")
  local t_end = term.monotonic() + s
  while true do
    local left = t_end - term.monotonic()
    if left <= 0 then return true end
    term.sleep(math.min(left, 0.2))
    -- leave the flag set for the engine / the next safe point to see
    local sig = proc.pending_signal()
    if sig then
      self._pending_sig = sig
      return false
    end
  end
end

-- The time a call may take: its own timeout, capped by the step's.
function Ctx:_timeout(t)
  if not self._deadline then return t end
  local left = self._deadline - now()
  if left <= 0 then self:_safe_point() end
  return t and math.min(t, left) or left
end

local function emit(self, ev)
  ev.t = now()
  ev.index = self._index
  self._emit(ev)
end

-- values -------------------------------------------------------------------

---A value produced by an earlier step (or this one).
---@param key string
function Ctx:get(key)
  local v = self._values[key]
  if v == nil and self._secret_keys[key] then
    local reload = self.def.reload and self.def.reload[key]
    if not reload then
      raise("failed", ("value '%s' is a secret and secrets are not kept in the journal; %s has no reload.%s to read it again from its canonical place")
        :format(key, self.def.name, key))
    end
    v = reload(self)
    if v == nil then raise("failed", ("reload.%s found nothing"):format(key)) end
    self._values[key] = v
  end
  return v
end

---Set a value for later steps (journaled unless it holds a secret).
function Ctx:set(key, value)
  self._values[key] = value
  self._secret_keys[key] = nil
  self._dirty[key] = true
  return value
end

---Register a secret (masked everywhere from now on); returns it.
function Ctx:secret(value)
  return redact.add(value)
end

---A line of output under the current step.
function Ctx:log(fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or tostring(fmt)
  msg = redact.mask(msg)
  self:_note_output(msg)
  emit(self, { event = "log", message = msg })
end

---Fail the current step with a message.
function Ctx:fail(fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or tostring(fmt)
  raise("failed", msg)
end

---The operator declined a confirmation asked inside a step (ctx:confirm):
---the step and the run end as refused (exit 5), like a declined step gate,
---not as a failure.
function Ctx:refuse(fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or tostring(fmt)
  raise("refused", msg)
end

-- checkpoints --------------------------------------------------------------

---Persist progress inside this step; durable when it returns.
function Ctx:checkpoint(key, value)
  self._J:checkpoint(self.run_id, self._index, key, value)
  self._checkpoints = self._checkpoints or {}
  self._checkpoints[key] = value
  self:_safe_point()
end

---The last checkpointed value for this step (after a resume), or nil.
function Ctx:checkpointed(key)
  if not self._checkpoints then
    self._checkpoints = self._J:checkpoints(self.run_id, self._index)
  end
  return self._checkpoints[key]
end

function Ctx:progress(done, total, label)
  emit(self, { event = "progress", done = done, total = total, label = label })
  self:_safe_point()
end

function Ctx:sleep(s)
  if self.mode ~= "run" then return end
  if not self:_sleep(s) then raise("interrupted", "interrupted by SIG" .. self._pending_sig) end
end

-- effects ------------------------------------------------------------------

-- Mark a write that was not performed; later verifications of this step are
-- listed, not run.
function Ctx:_simulate(kind, summary, result)
  self._simulated = self._simulated + 1
  self._run_simulated = (self._run_simulated or 0) + 1
  emit(self, { event = "effect", kind = kind, summary = redact.mask(summary), simulated = true })
  self:_note_output("would " .. summary)
  return result
end

-- A runbook that says read_only = true never writes: a write it attempts
-- (in any mode) fails the step, so the promise that let it skip the
-- protected-environment confirmation is kept. Notifications (stdlib.notify,
-- `notification = true` on the request) are allowed: they change nothing in
-- the target environment.
function Ctx:_guard_write(summary, notification)
  if self.def.read_only and not notification then
    raise("failed", ("read-only runbook refused a write: %s (remove read_only = true if it must change things)")
      :format(redact.mask(summary)))
  end
end

function Ctx:_effect(kind, summary)
  emit(self, { event = "effect", kind = kind, summary = redact.mask(summary), simulated = false })
  self:_note_output(summary)
end

local function fixture_for(self, key, given)
  if given ~= nil then return given end
  local f = self.def.fixtures
  if f then
    if f[key] ~= nil then return f[key] end
    -- "GET /path" also matches a full URL's path
    local m, url = key:match("^(%S+) (%S+)$")
    if url then
      local path = url:match("^https?://[^/]+(/[^?]*)") or url
      if f[m .. " " .. path] ~= nil then return f[m .. " " .. path] end
    end
  end
  return nil
end

local function resolve_fixture(fx, req)
  if type(fx) == "function" then fx = fx(req) end
  if type(fx) == "table" and fx.json ~= nil and fx.body == nil then
    local cjson = require("cjson")
    local copy = {}
    for k, v in pairs(fx) do copy[k] = v end
    copy.body = cjson.encode(fx.json)
    fx = copy
  end
  return fx
end

local function err_message(e)
  if type(e) == "table" then return e.message end
  return tostring(e)
end

local function is_read_method(m)
  return m == "GET" or m == "HEAD" or m == "OPTIONS"
end

-- Retries: a read (GET/HEAD, or effect = "read") is retried on 429 and
-- 500/502/503/504 — 3 more attempts by default — waiting what Retry-After
-- says (capped at max_wait, 60 s) or an exponential backoff with full
-- jitter (base 0.5 s, at most 8 s). A write is retried only when the call
-- asks (`retry = true` or `{ attempts, base, cap, max_wait }`); `retry =
-- false` turns retries off. After the last attempt the last response is
-- returned (and fails the step if `expect` says so). Transport failures
-- (refused, timeout, TLS) are not retried: they are reported at once.
local RETRY_STATUS = { [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }
local RETRY_DEFAULT = { attempts = 4, base = 0.5, cap = 8, max_wait = 60 }
-- with transport = true: a refused or dropped connection (runbook.http's
-- codes). Not a timeout (the request may still be running there, and each
-- try would wait the whole timeout again), nor TLS, DNS or size failures.
local RETRY_TRANSPORT = { ECONNREFUSED = true, EHTTP = true }

local function retry_policy(opt, read)
  if opt == false or (opt == nil and not read) then return nil end
  local p = {}
  for k, v in pairs(RETRY_DEFAULT) do p[k] = v end
  if type(opt) == "number" then p.attempts = opt + 1 end
  if type(opt) == "table" then for k, v in pairs(opt) do p[k] = v end end
  return p.attempts > 1 and p or nil
end

local function retry_wait(p, attempt, resp)
  local ra = resp.headers and (resp.headers["retry-after"] or resp.headers["Retry-After"])
  local secs = tonumber(ra)
  if secs and secs >= 0 then
    if secs > p.max_wait then return p.max_wait, ("Retry-After %g s, capped at %g s"):format(secs, p.max_wait) end
    return secs, "Retry-After"
  end
  local ceiling = math.min(p.cap, p.base * 2 ^ (attempt - 1))
  return ceiling / 2 + math.random() * ceiling / 2, "backoff"
end

---An HTTP request that may fail softly: resp or nil, msg, code.
function Ctx:try_http(req)
  self:_safe_point()
  req.method = (req.method or "GET"):upper()
  local read = req.effect == "read" or (req.effect == nil and is_read_method(req.method))
  local summary = req.method .. " " .. req.url
  if not read then self:_guard_write(summary, req.notification) end
  if self.offline or (self.dry_run and not read) then
    local fx = fixture_for(self, req.method .. " " .. req.url, req.fixture or (not read and req.simulate) or nil)
    if read and fx == nil then
      raise("failed", ("offline: no fixture for %s; declare fixture = ... on the call or fixtures[\"%s %s\"] in the runbook")
        :format(summary, req.method, req.url:match("^https?://[^/]+(/[^?]*)") or req.url))
    end
    local resp = resolve_fixture(fx, req) or { status = 200, body = "", headers = {} }
    resp.simulated = true
    resp.headers = resp.headers or {}
    resp.body = resp.body or ""
    if read then return resp end
    return self:_simulate("http", summary .. (req.body and (" (" .. #req.body .. " bytes)") or ""), resp)
  end
  local http = require("runbook.http")
  local r = {}
  for k, v in pairs(req) do r[k] = v end
  r.effect, r.fixture, r.simulate, r.retry, r.expect, r.notification = nil, nil, nil, nil, nil, nil
  if not read then self:_effect("http", summary) end
  local policy = retry_policy(req.retry, read)
  local resp, err, code, tries
  for attempt = 1, policy and policy.attempts or 1 do
    tries = attempt
    r.timeout = self:_timeout(req.timeout or 30)
    resp, err, code = http.request(r)
    self:_safe_point()
    local again = policy and (resp and RETRY_STATUS[resp.status] or (not resp and policy.transport
      and RETRY_TRANSPORT[code]))
    if not again or attempt == policy.attempts then break end
    local wait, why = retry_wait(policy, attempt, resp or {})
    self:log("%s: %s; retry %d of %d in %.1f s (%s)", summary, resp and ("HTTP " .. resp.status) or redact.mask(err),
      attempt, policy.attempts - 1, wait, why)
    if not self:_sleep(wait) then self:_safe_point() end
  end
  if not resp then
    return nil, redact.mask(err) .. (tries > 1 and (" (%d attempts)"):format(tries) or ""), code
  end
  resp.attempts = tries
  return resp
end

---An HTTP request; a transport failure fails the step, and so does a status
---other than `req.expect` (a status or a list) when one is given.
function Ctx:http(req)
  local resp, err = self:try_http(req)
  if not resp then raise("failed", err) end
  local want = req.expect
  if want and not resp.simulated then
    local ok = false
    for _, s in ipairs(type(want) == "table" and want or { want }) do ok = ok or resp.status == s end
    if not ok then
      local excerpt = (resp.body or ""):sub(1, 300):gsub("%c+", " "):gsub("%s+", " ")
      if #excerpt > 120 then excerpt = excerpt:sub(1, 117) .. "..." end
      raise("failed", redact.mask(("%s %s: HTTP %d%s, expected %s%s"):format(req.method, req.url, resp.status,
        (resp.attempts or 1) > 1 and (" after " .. resp.attempts .. " attempts") or "",
        type(want) == "table" and table.concat(want, " or ") or tostring(want),
        excerpt ~= "" and (": " .. excerpt) or "")))
    end
  end
  return resp
end

---The JSON document of a response, or the step fails naming the request and
---showing a short, masked excerpt of what came instead (an HTML error page,
---a truncated body...).
function Ctx:json(resp, what)
  if resp.simulated and (resp.body or "") == "" then return resp.json or {} end
  local doc, err = require("runbook.http").json(resp)
  if doc == nil then raise("failed", redact.mask((what and (what .. ": ") or "") .. err)) end
  return doc
end

function Ctx:get_url(url, o)
  local req = { method = "GET", url = url }
  for k, v in pairs(o or {}) do req[k] = v end
  return self:http(req)
end

function Ctx:post(url, body, o)
  local req = { method = "POST", url = url, body = body }
  for k, v in pairs(o or {}) do req[k] = v end
  return self:http(req)
end

---Many requests at once; results in order (resp or {error, code}).
function Ctx:batch(reqs, o)
  self:_safe_point()
  local live, idx, out = {}, {}, {}
  for i, req in ipairs(reqs) do
    req.method = (req.method or "GET"):upper()
    local read = req.effect == "read" or (req.effect == nil and is_read_method(req.method))
    if not read then self:_guard_write(req.method .. " " .. req.url, req.notification) end
    if self.offline or (self.dry_run and not read) then
      local ok, resp, err, code = pcall(self.try_http, self, req)
      if not ok then
        out[i] = { error = err_message(resp), code = "EFIXTURE" }
      else
        out[i] = resp or { error = err, code = code }
      end
    else
      local r = {}
      for k, v in pairs(req) do r[k] = v end
      r.effect, r.fixture, r.simulate, r.retry, r.expect, r.notification = nil, nil, nil, nil, nil, nil
      r.timeout = self:_timeout(req.timeout or 30)
      if not read then self:_effect("http", req.method .. " " .. req.url) end
      live[#live + 1] = r
      idx[#live] = i
    end
  end
  if #live > 0 then
    local res = require("runbook.http").batch(live, o)
    for j, r in ipairs(res) do
      if r.error then r.error = redact.mask(r.error) end
      out[idx[j]] = r
    end
  end
  self:_safe_point()
  return out
end

local function argv_summary(argv)
  local parts = {}
  for i, a in ipairs(argv) do
    parts[i] = a:match("^[%w%-%._/:=@,+]+$") and a or ("'" .. a:gsub("'", "'\\''") .. "'")
  end
  return table.concat(parts, " ")
end

---Run a child process. o.read = true declares it read-only (it runs in
---dry-run); o.stdin carries secrets (never argv). Output lines are masked.
---Returns the result table; failing to start fails the step.
function Ctx:run(argv, o)
  o = o or {}
  self:_safe_point()
  local summary = argv_summary(argv) .. (o.stdin and (" < (" .. #o.stdin .. " bytes on stdin)") or "")
  for _, a in ipairs(argv) do
    if redact.mask(a) ~= a then
      raise("failed", "refusing to run " .. argv[1] .. ": a secret is in its arguments; pass it on stdin or in env")
    end
  end
  if not o.read then self:_guard_write(summary) end
  if self.offline or (self.dry_run and not o.read) then
    local fx = o.fixture or fixture_for(self, "run " .. table.concat(argv, " "), nil)
    if o.read and fx == nil then
      raise("failed", ("offline: no fixture for command `%s`; declare fixture = {...} on the call"):format(argv_summary(argv)))
    end
    if type(fx) == "function" then fx = fx(argv, o) end
    local res = fx or (type(o.simulate) == "function" and o.simulate(argv, o)) or o.simulate
      or { code = 0, stdout = "", stderr = "" }
    res.simulated = true
    if o.read then return res end
    return self:_simulate("run", summary, res)
  end
  if not o.read then self:_effect("run", summary) end
  local proc = require("runbook.proc")
  local index = self._index
  local function stream(name)
    return function(line)
      line = redact.mask(line)
      if #self._output_lines < 200 then self._output_lines[#self._output_lines + 1] = line end
      if o.echo ~= false then
        self._emit({ event = "log", t = now(), index = index, message = line, stream = name })
      end
    end
  end
  local spec = { argv = argv, env = o.env, env_add = o.env_add, cwd = o.cwd, stdin = o.stdin,
    timeout = self:_timeout(o.timeout or 120),
    stdout = o.capture == false and stream("stdout") or "capture",
    stderr = o.capture == false and stream("stderr") or "capture" }
  local res, err, code = proc.run(spec)
  if not res then raise("failed", ("%s: %s (%s)"):format(argv[1], err, code)) end
  res.stdout_masked = res.stdout and redact.mask(res.stdout)
  res.stderr_masked = res.stderr and redact.mask(res.stderr)
  if res.timed_out then
    raise("failed", ("%s did not finish within %g s and was killed with its children"):format(argv[1], spec.timeout))
  end
  self:_safe_point()
  return res
end

---Read a file (a read in every mode).
function Ctx:read_file(path, o)
  local fs = require("runbook.fs")
  local data, err, code = fs.read(path, { nofollow = o and o.nofollow or nil })
  if not data then
    if o and o.missing_ok and code == "ENOENT" then return nil, err end
    raise("failed", err)
  end
  return data
end

---Atomically write a file (a write: simulated outside run mode).
function Ctx:write_file(path, data, o)
  local summary = ("write %s (%d bytes)"):format(path, #data)
  self:_guard_write(summary)
  if self.mode ~= "run" then return self:_simulate("write_file", summary, true) end
  self:_effect("write_file", summary)
  local fs = require("runbook.fs")
  local ok, err = fs.write_atomic(path, data, o)
  if not ok then raise("failed", err) end
  return true
end

---Wait until check(ctx) is true. Skipped (returns true, "skipped") when
---this run simulated a write: the effect it waits for never happens. The
---step's verifications are then listed, not run, like after a write.
function Ctx:poll(o)
  assert(type(o.check) == "function", "ctx:poll needs check = function(ctx)")
  local what = o.what or "condition"
  if (self._run_simulated or 0) > 0 then
    self._simulated = self._simulated + 1
    emit(self, { event = "verify", name = "wait for " .. what, status = "skipped",
      message = "depends on a simulated write (" .. self.mode .. ")" })
    return true, "skipped"
  end
  local term = require("runbook.term.core")
  local every, timeout = o.every or 1, o.timeout or 30
  local t_end = term.monotonic() + timeout
  local last
  while true do
    local ok, why = o.check(self)
    if ok then return true end
    last = why
    if term.monotonic() + every > t_end then
      raise("failed", ("timed out after %g s waiting for %s%s"):format(timeout, what,
        last and (" (last: " .. tostring(last) .. ")") or ""))
    end
    if self.mode ~= "run" then
      -- offline/dry-run reads are fixtures or live; do not wait on them
      raise("failed", ("%s not reached (%s)"):format(what, tostring(last)))
    end
    if not self:_sleep(every) then raise("interrupted", "interrupted by SIG" .. self._pending_sig) end
    every = math.min(every * (o.backoff or 1), o.max_every or 30)
  end
end

---Ask for typed confirmation. true, or false and why.
---@param prompt string
---@param word string|nil  what the operator must type (default "yes")
function Ctx:confirm(prompt, word)
  word = word or "yes"
  if self.mode ~= "run" then
    emit(self, { event = "log", message = "would ask: " .. prompt })
    return true
  end
  if self._yes then
    emit(self, { event = "log", message = "confirmed by --yes: " .. prompt })
    return true
  end
  if not self._interactive or not self._ask then
    return false, ("confirmation needed (%s) but there is no terminal to ask on; re-run with --yes to confirm"):format(prompt)
  end
  local answer = self._ask(("%s\nType '%s' to continue: "):format(prompt, word))
  if answer and answer:gsub("%s+$", "") == word then return true end
  return false, "not confirmed (expected '" .. word .. "')"
end

return Ctx
