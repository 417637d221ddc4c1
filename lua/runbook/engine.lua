-- engine.lua — runs one runbook: resolves params and environment, takes the
-- lock, walks the steps (run, verify, retry, rollback), applies the mode
-- (run / dry-run / offline) to every effect, journals as it goes and emits
-- events (docs/ENGINE.md) for output.lua to render. Returns an exit code.
--
-- The engine decides what a mode means; a runbook only says what it does.

local params_mod = require("runbook.params")
local redact = require("runbook.redact")
local journal_mod = require("runbook.journal")
local Ctx = require("runbook.context")

local M = {}

M.EXIT = { ok = 0, failed = 1, usage = 2, locked = 3, interrupted = 4, refused = 5, internal = 70 }

local function now() return require("runbook.term.core").now() end

-- Failures raised inside steps are tables tagged with their kind so a
-- runbook bug (a plain Lua error) can be told apart from a step failing.
local function is_tagged(e) return type(e) == "table" and e.runbook_error end

local function err_text(e)
  if is_tagged(e) then return e.message end
  return tostring(e)
end

---Find a step index by number or by (a prefix of) its title.
local function find_step(steps, from)
  local n = math.tointeger(tonumber(from))
  if n then
    if n >= 1 and n <= #steps then return n end
    return nil
  end
  local lower = from:lower()
  for i, s in ipairs(steps) do
    if s.title:lower():sub(1, #lower) == lower then return i end
  end
end

---Resolve the environment: the project's definition, or a bare local one.
function M.environment(project, name)
  local envs = project and project.environments or {}
  name = name or (project and project.default_env) or "local"
  local def = envs[name]
  if not def then
    if next(envs) == nil and name == "local" then
      def = {}
    else
      local names = {}
      for k in pairs(envs) do names[#names + 1] = k end
      table.sort(names)
      return nil, ("unknown environment '%s' (the project defines: %s)"):format(
        name, #names > 0 and table.concat(names, ", ") or "none")
    end
  end
  local env = {}
  for k, v in pairs(def) do env[k] = v end
  env.name = name
  env.target = env.target or env.url or env.api_url or "(no URL)"
  return env
end

---Run a runbook.
---@param o table { def, project, env, mode, params, journal, journal_path, yes,
---  interactive, ask, from, resume, emit, argv_hint }
---@return integer exit_code, table|nil summary
function M.run(o)
  local def = assert(o.def, "engine.run: def required")
  local emit = o.emit or function() end
  local mode = o.mode or "run"
  local t0 = now()

  local function refuse(code, msg)
    emit({ event = "run_end", t = now(), status = "refused", exit_code = code,
      error = redact.mask(msg), runbook = def.name, duration = now() - t0 })
    return code, { error = redact.mask(msg) }
  end

  -- 1. environment and parameters, before anything else happens
  local env, eerr = M.environment(o.project, o.env)
  if not env then return refuse(M.EXIT.usage, eerr) end
  if def.envs then
    local allowed = false
    for _, e in ipairs(def.envs) do if e == env.name then allowed = true end end
    if not allowed then
      return refuse(M.EXIT.usage, ("%s does not target environment '%s' (it may target: %s)"):format(
        def.name, env.name, table.concat(def.envs, ", ")))
    end
  end

  local J = o.journal
  local own_journal = false
  if not J then
    local jerr
    J, jerr = journal_mod.open(o.journal_path)
    if not J then return refuse(M.EXIT.usage, jerr) end
    own_journal = true
  end

  local resumed, given = nil, o.params or {}
  if o.resume then
    resumed = J:run(o.resume)
    if not resumed then
      if own_journal then J:close() end
      return refuse(M.EXIT.usage, ("no run %s in the journal %s"):format(o.resume, J.path))
    end
    if resumed.status == "ok" then
      if own_journal then J:close() end
      return refuse(M.EXIT.usage, ("run %s already finished ok; nothing to resume"):format(o.resume))
    end
    -- journaled params (secrets were never stored) plus anything given again
    local merged = {}
    for k, v in pairs(resumed.params or {}) do
      if v ~= "(secret)" then merged[k] = v end
    end
    for k, v in pairs(given) do merged[k] = v end
    given = merged
  end

  local values, perr = params_mod.resolve(def.params, given, { runbook = def.name })
  if not values then
    if own_journal then J:close() end
    return refuse(M.EXIT.usage, perr)
  end
  for _, p in ipairs(def.params) do
    if p.type == "secret" and values[p.name] then redact.add(values[p.name]) end
  end

  local start = 1
  if o.from then
    start = find_step(def.steps, o.from)
    if not start then
      if own_journal then J:close() end
      return refuse(M.EXIT.usage, ("--from %s: no such step in %s (use a number 1-%d or a title)"):format(
        o.from, def.name, #def.steps))
    end
  end

  -- 2. the lock: one live run per runbook and environment
  local proc = require("runbook.proc.core")
  local run_id = resumed and resumed.id or journal_mod.new_id()
  local pid, host, user = proc.getpid(), proc.hostname(), proc.user()
  local locked, holder = J:lock(def.name, env.name, run_id, pid, host)
  if not locked then
    if own_journal then J:close() end
    return refuse(M.EXIT.locked, ("%s on %s is already running: run %s, pid %d on %s, since %s; wait for it to finish (or stop it) and try again"):format(
      def.name, env.name, holder.run_id, holder.pid, holder.host,
      os.date("%Y-%m-%d %H:%M:%S", math.floor(holder.started_at))))
  end

  local function finish(code, status, summary)
    J:unlock(def.name, env.name, run_id)
    if own_journal then J:close() end
    summary = summary or {}
    summary.run_id, summary.status = run_id, status
    return code, summary
  end

  local ok_setup, setup_err = pcall(function()
    if resumed then
      J:resume_run(run_id, pid)
    else
      J:begin_run({ id = run_id, runbook = def.name, env = env.name, mode = mode,
        params = params_mod.redacted(def.params, values), user = user, host = host, pid = pid,
        source = def.source })
    end
  end)
  if not ok_setup then
    J:unlock(def.name, env.name, run_id)
    if own_journal then J:close() end
    return refuse(M.EXIT.usage, tostring(setup_err))
  end

  emit({ event = "run_start", t = now(), run_id = run_id, runbook = def.name, summary = def.summary,
    env = env.name, target = redact.mask(env.target), mode = mode,
    params = params_mod.redacted(def.params, values), total = #def.steps,
    steps = (function()
      local t = {}
      for i, st in ipairs(def.steps) do t[i] = redact.mask(st.title) end
      return t
    end)(),
    resumed_from = resumed and run_id or nil })
  if holder then
    emit({ event = "notice", t = now(), level = "warn", message = ("took over the lock of run %s (pid %d on %s is no longer running)"):format(
      holder.run_id, holder.pid, holder.host) })
  end

  -- 3. where to start: a resumed run continues at the first step not done
  local done = {}
  local stored_values, secret_keys = {}, {}
  if resumed then
    for _, s in ipairs(J:steps(run_id)) do
      if s.status == "ok" or s.status == "skipped" then done[s.idx] = s.status end
    end
    stored_values, secret_keys = J:values(run_id)
    start = 1
    while done[start] do start = start + 1 end
    emit({ event = "notice", t = now(), level = "info", message = ("resuming run %s at step %d/%d"):format(
      run_id, start, #def.steps) })
  end

  local ctx = Ctx.new({ def = def, env = env, mode = mode, params = values, run_id = run_id,
    journal = J, emit = emit, project = o.project, yes = o.yes, interactive = o.interactive,
    ask = o.ask, values = stored_values, secret_keys = secret_keys })

  -- protected environments: typed confirmation before anything runs
  if mode == "run" and env.protected and def.read_only then
    emit({ event = "notice", t = now(), level = "info", message = ("'%s' is protected; %s is read-only (any write fails), so no confirmation is asked")
      :format(env.name, def.name) })
  elseif mode == "run" and env.protected then
    local ok, why = ctx:confirm(("%s will change the protected environment '%s' (%s)."):format(
      def.name, env.name, env.target), env.name)
    if not ok then
      J:end_run(run_id, "refused", M.EXIT.refused, why)
      emit({ event = "run_end", t = now(), run_id = run_id, status = "refused",
        exit_code = M.EXIT.refused, error = why, duration = now() - t0 })
      return finish(M.EXIT.refused, "refused", { error = why })
    end
  end

  proc.trap_signals()
  local resume_cmd = "runbook resume " .. run_id
  if o.journal_path then resume_cmd = resume_cmd .. " --journal " .. o.journal_path end

  -- 4. the steps
  local total = #def.steps
  for i = start, total do
    local step = def.steps[i]
    if not done[i] then
      local sig = proc.pending_signal()
      if sig then
        J:end_run(run_id, "interrupted", M.EXIT.interrupted, "interrupted by SIG" .. sig, i)
        emit({ event = "run_end", t = now(), run_id = run_id, status = "interrupted",
          exit_code = M.EXIT.interrupted, duration = now() - t0, resume = resume_cmd, failed_step = i })
        return finish(M.EXIT.interrupted, "interrupted")
      end
      local status, err, hint = M.step(ctx, J, step, i, total)
      if status == "failed" or status == "interrupted" or status == "refused" then
        local code = ({ failed = M.EXIT.failed, interrupted = M.EXIT.interrupted,
          refused = M.EXIT.refused })[status]
        J:end_run(run_id, status, code, err, i)
        emit({ event = "run_end", t = now(), run_id = run_id, status = status, exit_code = code,
          duration = now() - t0, resume = resume_cmd, failed_step = i, error = err, hint = hint })
        return finish(code, status, { error = err, failed_step = i })
      end
    end
  end
  J:end_run(run_id, "ok", 0, nil, nil)
  emit({ event = "run_end", t = now(), run_id = run_id, status = "ok", exit_code = 0,
    duration = now() - t0, steps = total })
  return finish(M.EXIT.ok, "ok")
end

---Run one step (with retries); journal and emit it. Returns the status and,
---on failure, the error and hint.
function M.step(ctx, J, step, i, total)
  local run_id = ctx.run_id
  local emit = ctx._emit
  local t0 = now()
  emit({ event = "step_start", t = t0, index = i, total = total, title = step.title })

  if step.when then
    local ok, res = pcall(step.when, ctx)
    if not ok then res = nil end
    if not res then
      J:step_start(run_id, i, step.title)
      J:step_end(run_id, i, "skipped", "condition not met", nil)
      emit({ event = "step_end", t = now(), index = i, title = step.title, status = "skipped",
        duration = now() - t0, error = ok and "condition not met" or redact.mask(err_text(res)) })
      return "skipped"
    end
  end

  J:step_start(run_id, i, step.title)
  ctx:_begin_step(i, step)

  if step.confirm then
    local ok, why = ctx:confirm(step.confirm)
    if not ok then
      J:step_end(run_id, i, "refused", ctx:_output(), why)
      emit({ event = "step_end", t = now(), index = i, title = step.title, status = "failed",
        duration = now() - t0, error = why })
      return "refused", why
    end
  end

  local retry = step.retry or {}
  local attempts = retry.attempts or 1
  local delay = retry.delay or 1
  local status, err
  for attempt = 1, attempts do
    status, err = M.attempt(ctx, step, i)
    if status ~= "failed" or attempt == attempts or ctx.mode ~= "run" then break end
    emit({ event = "log", t = now(), index = i, message = redact.mask(("attempt %d/%d failed: %s; retrying in %.1f s"):format(
      attempt, attempts, err, delay)) })
    if not ctx:_sleep(delay) then status, err = "interrupted", "interrupted" break end
    delay = delay * (retry.backoff or 2)
    ctx:_begin_step(i, step)
  end

  if status == "failed" and step.rollback then
    emit({ event = "log", t = now(), index = i, message = "rolling back this step" })
    local ok, rerr = xpcall(step.rollback, debug.traceback, ctx, err)
    if not ok then
      emit({ event = "log", t = now(), index = i, message = redact.mask("rollback failed: " .. err_text(rerr)) })
    end
  end

  err = err and redact.mask(err)
  ctx:_end_step()
  J:step_end(run_id, i, status, ctx:_output(), err)
  -- a refusal shows as the step's failure (as a declined gate does); the
  -- journal and the run's end say refused
  emit({ event = "step_end", t = now(), index = i, title = step.title, status = status == "refused" and "failed" or status,
    duration = now() - t0, error = err, hint = status == "failed" and step.hint or nil })
  return status, err, step.hint
end

---One attempt: run, then verify. Returns "ok" | "failed" | "interrupted" | "refused", err.
function M.attempt(ctx, step, i)
  local emit = ctx._emit
  local ok, e = xpcall(step.run, function(x)
    if is_tagged(x) then return x end
    return { runbook_error = "bug", message = debug.traceback(tostring(x), 2) }
  end, ctx)
  if not ok then
    if e.kind == "interrupted" then return "interrupted", e.message end
    if e.kind == "refused" then return "refused", e.message end
    if e.runbook_error == "bug" then
      -- a plain Lua error inside a runbook: show where, but only the first
      -- line of the traceback to the operator (the journal keeps it all)
      ctx:_note_output("error: " .. e.message)
      return "failed", (e.message:match("^[^\n]*"))
    end
    return "failed", e.message
  end
  ctx:_flush_values()

  local checks = step.verify or {}
  if #checks == 0 and step.no_verify then
    emit({ event = "verify", t = now(), index = i, name = "not verified", status = "skipped", message = step.no_verify })
    return "ok"
  end
  local failed
  for _, c in ipairs(checks) do
    if ctx._simulated > 0 and not c.independent then
      emit({ event = "verify", t = now(), index = i, name = c.name, status = "skipped",
        message = "depends on a simulated write (" .. ctx.mode .. ")" })
    else
      local cok, res, why = xpcall(c.fn, function(x)
        if is_tagged(x) then return x end
        return { runbook_error = "bug", message = tostring(x) }
      end, ctx)
      if cok and res then
        emit({ event = "verify", t = now(), index = i, name = c.name, status = "pass" })
      else
        local msg = cok and (why or "returned false") or err_text(res)
        if not cok and res.kind == "interrupted" then return "interrupted", res.message end
        msg = redact.mask(tostring(msg))
        emit({ event = "verify", t = now(), index = i, name = c.name, status = "fail", message = msg })
        ctx:_note_output("verify failed: " .. c.name .. ": " .. msg)
        failed = failed or ("verification failed: " .. c.name .. ": " .. msg)
      end
    end
  end
  if failed then return "failed", failed end
  return "ok"
end

return M
