-- cli.lua — the `runbook` command line (lua-argparse): list, show, run,
-- resume, history, log, check, new, schedule, completion, man. Decides nothing a
-- runbook does; turns words into an engine.run call and an exit code.

local M = {}

local EXIT_USAGE = 2

-- Each command's words, in the order `--help` lists them. run and resume
-- share their options.
local function run_opts(c)
  c:option("-p --param", "A parameter: -p name=value (repeatable)."):count("*"):argname("<k=v>")
  c:option("--env", "Environment from runbook.lua (default: the project's default_env).")
  c:flag("--dry-run", "Perform reads, print writes without doing them.")
  c:flag("--offline", "No network: reads come from fixtures, writes are printed.")
  c:flag("-y --yes", "Confirm every confirmation gate (for CI).")
  c:flag("--json", "One JSON event per line on stdout.")
  c:option("--junit", "Write a JUnit XML report to this file."):argname("<file>")
  c:option("--journal", "Journal file (default: $RUNBOOK_JOURNAL or ~/.local/state/runbook/journal.db).")
end

local COMMANDS = {
  { "list", function(p)
    p:command("list", "List the runbooks this project can run.")
      :option("--journal", "Unused; accepted for symmetry.")
  end },
  { "show", function(p)
    local show = p:command("show", "Print a runbook's parameters and steps without running anything.")
    show:argument("name", "Runbook name or path to a .lua file.")
    show:flag("--markdown", "Print as Markdown.")
  end },
  { "run", function(p)
    local run = p:command("run", "Run a runbook.")
    run:argument("name", "Runbook name or path to a .lua file.")
    run_opts(run)
    run:option("--from", "Start at this step (number or title prefix)."):argname("<step>")
    run:flag("--resume", "Resume this runbook's last unfinished run on this environment.")
  end },
  { "resume", function(p)
    local resume = p:command("resume", "Continue a failed or interrupted run at the step that did not finish.")
    resume:argument("run_id", "The run id printed by the failed run.")
    run_opts(resume)
  end },
  { "history", function(p)
    local hist = p:command("history", "Past runs, newest first.")
    hist:argument("name", "Only this runbook."):args("?")
    hist:option("-n --limit", "How many.", "20")
    hist:option("--journal", "Journal file.")
    hist:flag("--json", "As JSON lines.")
  end },
  { "log", function(p)
    local log = p:command("log", "Everything the journal kept about one run.")
    log:argument("run_id")
    log:option("--journal", "Journal file.")
    log:flag("--json", "As JSON.")
  end },
  { "check", function(p)
    local check = p:command("check", "Load every runbook, validate it, and run it --offline.")
    check:argument("names", "Only these runbooks."):args("*")
    check:flag("--no-run", "Validate only; do not run offline.")
  end },
  { "new", function(p)
    local new = p:command("new", "Create a runbook from a template in the project's runbooks/.")
    new:argument("name", "lower-case-words")
  end },
  { "schedule", function(p)
    local sched = p:command("schedule", "Print a cron line, systemd service+timer or launchd plist that runs a "
      .. "runbook every N minutes (installs nothing).")
    sched:argument("name", "Runbook name or path to a .lua file.")
    sched:option("--every", "How often: 30m, 1h, 90m (whole minutes)."):argname("<interval>"):count(1)
    sched:option("--format", "cron, systemd or launchd.", "cron"):choices({ "cron", "systemd", "launchd" })
    sched:option("--env", "Environment the scheduled runs target (default: the project's default_env).")
    sched:option("-p --param", "A parameter for every run: -p name=value (repeatable)."):count("*"):argname("<k=v>")
    sched:option("--log", "File the runs' output is appended to (default /tmp/<label>.log)."):argname("<file>")
  end },
  { "completion", function(p)
    local comp = p:command("completion", "Print a bash completion script.")
    comp:argument("shell", "Only bash is supported."):args("?")
  end },
  { "man", function(p)
    p:command("man", "Print the manual page (roff) generated from this help.")
  end },
  { "exec", function(p)
    p:command("exec", "Run a Lua file with every runbook module available: runbook exec FILE [ARGS...]")
      :argument("file"):args("*")
  end },
}

-- Commands whose output is about the whole command line, so they need
-- every command in the parser.
local WHOLE = { completion = true, man = true }

---The argparse parser. With `only` (the first word of the command line,
---when it names a command), only that command is defined: its parse, its
---usage and its --help are exactly what the full parser gives for it, and
---`runbook show`/`list` do not pay for building the eleven others.
---@param only string|nil
local function build_parser(only)
  local p = require("argparse")("runbook", "Executable operations runbooks: each step is printed, done, verified and journaled.")
    :epilog("Exit codes: 0 ok, 1 a step failed, 2 bad usage/params, 3 lock held, " ..
      "4 interrupted, 5 confirmation refused, 70 internal error.  Docs: docs/CLI.md")
  p:command_target("command")
  p:flag("--version", "Print the version and exit.")
  p:require_command(false)
  local one
  if only and not WHOLE[only] then
    for _, c in ipairs(COMMANDS) do
      if c[1] == only then one = c end
    end
  end
  if one then
    one[2](p)
  else
    for _, c in ipairs(COMMANDS) do c[2](p) end
  end
  return p
end

M.build_parser = build_parser

local function err_out(msg)
  io.stderr:write("runbook: ", msg, "\n")
end

-- The first secret parameter given as a -p word, as a one-line refusal
-- (nil when none): `why` says what -p would do with it, `where` where to
-- set its environment variable instead.
local function secret_words(def, given, why, where)
  for _, p in ipairs(def.params) do
    if p.type == "secret" and given[p.name] ~= nil then
      return ("parameter '%s' is a secret and %s; %s"):format(p.name,
        why or "-p puts it in the process list, shell history and CI logs",
        p.env and ("set $" .. p.env .. (where and (" " .. where) or "") .. " instead")
          or ("%s takes it from its own source, not from -p"):format(def.name))
    end
  end
end

local function load_project()
  local project = require("runbook.project")
  local p, err = project.load()
  if not p then err_out(err) end
  return p
end

local function is_tty(fd)
  local ok, term = pcall(require, "runbook.term.core")
  return ok and term.isatty and term.isatty(fd) or false
end

-- commands -------------------------------------------------------------

local function cmd_list()
  local project = load_project()
  if not project then return EXIT_USAGE end
  local cat = require("runbook.catalogue")
  local rows, width, bad = cat.summaries(project), 0, 0
  for _, r in ipairs(rows) do width = math.max(width, #r.name) end
  for _, r in ipairs(rows) do
    if r.summary then
      io.stdout:write(("%-" .. width .. "s  %s\n"):format(r.name, r.summary))
    else
      bad = bad + 1
      io.stdout:write(("%-" .. width .. "s  (broken: %s)\n"):format(r.name, r.err))
    end
  end
  if #rows == 0 then io.stdout:write("no runbooks found (create one with `runbook new NAME`)\n") end
  return bad > 0 and 1 or 0
end

local function describe_param(p)
  local bits = { p.type }
  if p.type == "enum" then bits[1] = "one of " .. table.concat(p.values, "|") end
  if p.required and p.default == nil then bits[#bits + 1] = "required" end
  if p.default ~= nil then
    bits[#bits + 1] = "default " .. (p.type == "secret" and "(secret, not shown)" or tostring(p.default))
  end
  if p.type == "secret" then
    -- `run` refuses it on -p (see secret_words)
    bits[#bits + 1] = p.env and ("from $" .. p.env .. " (not -p)") or "not from -p"
  elseif p.env then
    bits[#bits + 1] = "or $" .. p.env
  end
  return table.concat(bits, ", ")
end

local render_show

local function cmd_show(a)
  local project = load_project()
  if not project then return EXIT_USAGE end
  local text, err = require("runbook.catalogue").show_cached(a.name, project, a.markdown and "md" or "text",
    function(def) return render_show(def, a.markdown) end)
  if not text then err_out(err) return EXIT_USAGE end
  io.stdout:write(text)
  return 0
end

function render_show(def, md)
  local buf = {}
  local w = { write = function(_, ...) for _, v in ipairs({ ... }) do buf[#buf + 1] = v end end }
  if md then
    w:write("# ", def.name, "\n\n", def.summary, "\n\n")
  else
    w:write(def.name, " — ", def.summary, "\n")
    w:write("source: ", def.source or "?", "\n")
  end
  if def.envs then w:write(md and "\n**Environments:** " or "environments: ", table.concat(def.envs, ", "), "\n") end
  if #def.params > 0 then
    w:write(md and "\n## Parameters\n\n" or "\nparameters:\n")
    for _, p in ipairs(def.params) do
      if md then
        w:write(("- `%s` (%s) — %s\n"):format(p.name, describe_param(p), p.help or ""))
      else
        w:write(("  %-16s %s%s\n"):format(p.name, describe_param(p), p.help and ("  — " .. p.help) or ""))
      end
    end
  end
  w:write(md and "\n## Steps\n\n" or "\nsteps:\n")
  for i, s in ipairs(def.steps) do
    local flags = {}
    if s.when then flags[#flags + 1] = "conditional" end
    if s.confirm then flags[#flags + 1] = "asks for confirmation" end
    if s.retry then flags[#flags + 1] = ("retries %d×"):format(s.retry.attempts or 1) end
    if s.timeout then flags[#flags + 1] = ("timeout %g s"):format(s.timeout) end
    if s.rollback then flags[#flags + 1] = "has rollback" end
    local f = #flags > 0 and (" (" .. table.concat(flags, ", ") .. ")") or ""
    if md then
      w:write(("%d. **%s**%s\n"):format(i, s.title, f))
    else
      w:write(("  %2d. %s%s\n"):format(i, s.title, f))
    end
    for _, c in ipairs(s.verify or {}) do
      w:write(md and "   - verify: " or "        verify: ", c.name, "\n")
    end
    if s.no_verify then w:write(md and "   - not verified: " or "        not verified: ", s.no_verify, "\n") end
    if s.hint then w:write(md and "   - if it fails: " or "        if it fails: ", s.hint, "\n") end
  end
  return table.concat(buf)
end

local function make_output(a)
  local output = require("runbook.output")
  return output.new({ format = a.json and "json" or "terminal", stream = io.stdout, junit = a.junit })
end

local function do_run(a, name, resume_id)
  local project = load_project()
  if not project then return EXIT_USAGE end
  if a.dry_run and a.offline then
    err_out("--dry-run and --offline are different modes; pick one")
    return EXIT_USAGE
  end
  local given, perr = require("runbook.params").parse_words(a.param)
  if not given then err_out(perr) return EXIT_USAGE end
  local J
  local journal_path = a.journal
  if resume_id then
    local jm = require("runbook.journal")
    local jerr
    J, jerr = jm.open(journal_path)
    if not J then err_out(jerr) return EXIT_USAGE end
    local r = J:run(resume_id)
    if not r then
      err_out(("no run %s in the journal %s (see `runbook history`)"):format(resume_id, J.path))
      J:close()
      return EXIT_USAGE
    end
    name = r.source and r.source ~= "built-in" and r.source or r.runbook
    a.env = a.env or r.env
    if r.mode ~= "run" and not (a.dry_run or a.offline) then
      a.dry_run, a.offline = r.mode == "dry-run", r.mode == "offline"
    end
  end
  local def, err = require("runbook.catalogue").find(name, project)
  if not def then
    if J then J:close() end
    err_out(err)
    return EXIT_USAGE
  end
  -- a secret on the command line is in the process list, shell history and
  -- CI logs before anything here can mask it: refused, never echoed
  local serr = secret_words(def, given)
  if serr then
    if J then J:close() end
    err_out(serr)
    return EXIT_USAGE
  end
  if a.resume and not resume_id then
    local jm = require("runbook.journal")
    local jerr
    J, jerr = jm.open(journal_path)
    if not J then err_out(jerr) return EXIT_USAGE end
    local env = a.env or project.default_env or "local"
    for _, r in ipairs(J:history(def.name, 50)) do
      if r.env == env and r.status ~= "ok" and r.status ~= "refused" then resume_id = r.id break end
      if r.env == env and r.status == "ok" then break end
    end
    if not resume_id then
      J:close()
      err_out(("%s on %s has no unfinished run to resume"):format(def.name, env))
      return EXIT_USAGE
    end
  end
  local out = make_output(a)
  local started = false
  local interactive = is_tty(0) and os.getenv("CI") ~= "true"
  local mode = a.dry_run and "dry-run" or (a.offline and "offline" or "run")
  local run_id
  local ok, code = pcall(require("runbook.engine").run, {
    def = def, project = project, env = a.env, mode = mode, params = given,
    journal = J, journal_path = journal_path, yes = a.yes, interactive = interactive,
    ask = function(prompt)
      io.stderr:write(prompt)
      io.stderr:flush()
      return io.stdin:read("l")
    end,
    from = a.from, resume = resume_id, emit = function(ev)
      if ev.event == "run_start" then started, run_id = true, ev.run_id end
      -- refused before it began (bad param, lock held): one line on stderr
      if not started and not a.json and ev.event == "run_end" then
        err_out(ev.error or ev.status)
        return
      end
      out:emit(ev)
    end,
  })
  -- The journal itself failing (disk full, I/O error, a file-size limit) is
  -- an expected failure: one line saying where the run stands, not a
  -- traceback. Anything else is a bug and goes on to the host's handler.
  if not ok then
    -- masked either way: the host prints an unexpected error as it gets it,
    -- and the run's secrets are registered by now
    local msg = require("runbook.redact").mask(tostring(code))
    if not msg:match("^journal ") then error(msg, 0) end
    pcall(out.close, out)
    pcall(function() if J then J:close() end end)
    err_out(("%s; the run stopped here%s. Free space or fix the file, then %s"):format(msg,
      run_id and (" (run " .. run_id .. ")") or "",
      run_id and ("`runbook resume " .. run_id .. (a.journal and (" --journal " .. a.journal) or "") .. "`")
        or "run it again"))
    return 1
  end
  out:close()
  if J then J:close() end
  return code
end

local function fmt_time(t)
  if not t then return "-" end
  return os.date("%Y-%m-%d %H:%M:%S", math.floor(t))
end

-- A run the journal says is running, but whose process (on this host) is
-- gone — killed with SIGKILL, the machine rebooted: shown as "died", with
-- `process_gone = true` in JSON, so nobody waits for it. `runbook resume`
-- continues it like any interrupted run.
local function mark_gone(r)
  if r.status ~= "running" or not r.pid then return r end
  local P = require("runbook.proc.core")
  if r.host == P.hostname() and not P.alive(r.pid) then
    r.status, r.process_gone = "died", true
  end
  return r
end

local function cmd_history(a)
  local J, err = require("runbook.journal").open(a.journal)
  if not J then err_out(err) return EXIT_USAGE end
  local rows = J:history(a.name, tonumber(a.limit) or 20)
  J:close()
  for _, r in ipairs(rows) do mark_gone(r) end
  if a.json then
    local cjson = require("cjson")
    for _, r in ipairs(rows) do io.stdout:write(cjson.encode(r), "\n") end
    return 0
  end
  if #rows == 0 then
    io.stdout:write("no runs yet", a.name and (" of " .. a.name) or "", "\n")
    return 0
  end
  io.stdout:write(("%-21s %-24s %-10s %-8s %-11s %-19s %s\n"):format(
    "RUN", "RUNBOOK", "ENV", "MODE", "STATUS", "STARTED", "TOOK"))
  for _, r in ipairs(rows) do
    local took = r.ended_at and ("%.1f s"):format(r.ended_at - r.started_at) or "-"
    io.stdout:write(("%-21s %-24s %-10s %-8s %-11s %-19s %s\n"):format(
      r.id, r.runbook, r.env, r.mode, r.status, fmt_time(r.started_at), took))
  end
  return 0
end

local function cmd_log(a)
  local J, err = require("runbook.journal").open(a.journal)
  if not J then err_out(err) return EXIT_USAGE end
  local r = J:run(a.run_id)
  if not r then
    J:close()
    err_out(("no run %s in the journal %s"):format(a.run_id, J.path))
    return EXIT_USAGE
  end
  local steps = J:steps(a.run_id)
  J:close()
  mark_gone(r)
  if a.json then
    local cjson = require("cjson")
    r.steps = steps
    io.stdout:write(cjson.encode(r), "\n")
    return 0
  end
  local w = io.stdout
  w:write(("run %s: %s on %s (%s) — %s\n"):format(r.id, r.runbook, r.env, r.mode, r.status))
  w:write(("started %s by %s@%s, pid %s%s\n"):format(fmt_time(r.started_at), r.user or "?", r.host or "?",
    tostring(r.pid), r.resumes > 0 and (", resumed " .. r.resumes .. "×") or ""))
  if r.error then w:write("error: ", r.error, "\n") end
  if r.process_gone then
    w:write(("its process (pid %d) is gone without ending the run: `runbook resume %s%s` continues it\n")
      :format(r.pid, r.id, a.journal and (" --journal " .. a.journal) or ""))
  end
  for _, s in ipairs(steps) do
    local took = s.ended_at and s.started_at and ("%.2f s"):format(s.ended_at - s.started_at) or "-"
    w:write(("[%d] %-11s %s (%s%s)\n"):format(s.idx, s.status, s.title, took,
      s.attempts > 1 and (", " .. s.attempts .. " attempts") or ""))
    if s.output and s.output ~= "" then
      for line in s.output:gmatch("[^\n]+") do w:write("      ", line, "\n") end
    end
    if s.error then w:write("      error: ", s.error, "\n") end
  end
  return 0
end

local PLACEHOLDER = {
  string = "example", path = "/tmp/runbook-check", url = "http://127.0.0.1:9", int = 1, number = 1,
  bool = "false", duration = "1s",
}

local function cmd_check(a)
  local project = load_project()
  if not project then return EXIT_USAGE end
  local cat = require("runbook.catalogue")
  local rows
  if #a.names > 0 then
    rows = {}
    for _, n in ipairs(a.names) do
      local def, err = cat.find(n, project)
      rows[#rows + 1] = { name = n, def = def, err = err }
    end
  else
    rows = cat.all(project)
  end
  local failed = 0
  local tmp = os.tmpname()
  for _, r in ipairs(rows) do
    if not r.def then
      failed = failed + 1
      io.stdout:write("FAIL ", r.name, ": ", r.err, "\n")
    elseif a.no_run then
      io.stdout:write("ok   ", r.name, " (", #r.def.steps, " steps)\n")
    else
      local given = {}
      for _, p in ipairs(r.def.params) do
        if p.default == nil and (p.required or p.example) then
          local v = p.example
          if v == nil and p.type == "secret" then v = require("runbook.crypto").random_hex(16) end
          if v == nil and p.type == "enum" then v = p.values[1] end
          if v == nil then v = PLACEHOLDER[p.type] end
          given[p.name] = tostring(v)
        end
      end
      local events = {}
      local code = require("runbook.engine").run({
        def = r.def, project = project, env = r.def.check_env, mode = "offline", params = given,
        journal_path = tmp, yes = true, interactive = false,
        emit = function(ev) events[#events + 1] = ev end,
      })
      if code == 0 then
        io.stdout:write("ok   ", r.name, " (", #r.def.steps, " steps, offline run ok)\n")
      else
        failed = failed + 1
        local last = events[#events] or {}
        io.stdout:write("FAIL ", r.name, ": offline run ", last.status or "failed",
          last.failed_step and (" at step " .. last.failed_step) or "", ": ", tostring(last.error), "\n")
      end
    end
  end
  os.remove(tmp)
  os.remove(tmp .. "-wal")
  os.remove(tmp .. "-shm")
  io.stdout:write(("%d runbooks, %d failed\n"):format(#rows, failed))
  return failed > 0 and 1 or 0
end

local TEMPLATE = [[
-- %s — %s
local rb = require("runbook")

return rb.runbook {
  name = "%s",
  summary = "Say in one line what this runbook does",
  params = {
    -- { name = "limit", type = "int", default = 200, help = "items per page" },
  },
  steps = {
    rb.step "Check the service answers" {
      run = function(ctx)
        local resp = ctx:get_url((ctx.env.url or "http://127.0.0.1:8787") .. "/api/health",
          { fixture = { status = 200, json = { status = "ok" } } })
        ctx:set("health_status", resp.status)
      end,
      verify = {
        rb.check("health answers 200", function(ctx)
          return ctx:get("health_status") == 200, "got HTTP " .. tostring(ctx:get("health_status"))
        end),
      },
      hint = "Is the service running? Check the environment's url in runbook.lua.",
    },
  },
}
]]

local function cmd_new(a)
  if not a.name:match("^[a-z][a-z0-9%-]*$") then
    err_out("runbook names are lower-case words joined by '-', e.g. rotate-queue-key")
    return EXIT_USAGE
  end
  local project = load_project()
  if not project then return EXIT_USAGE end
  local dir = project.runbook_dirs[1] or (project.root .. "/runbooks")
  local fs = require("runbook.fs.core")
  fs.mkdir_p(dir, tonumber("755", 8))
  local path = dir .. "/" .. a.name .. ".lua"
  if fs.stat(path) then
    err_out(path .. " already exists; not overwriting it")
    return EXIT_USAGE
  end
  local ok, err = fs.write_atomic(path, TEMPLATE:format(a.name, "a new runbook", a.name), { mode = tonumber("644", 8) })
  if not ok then err_out(err) return 1 end
  io.stdout:write("created ", path, "\n  next: edit it, then `runbook show ", a.name,
    "` and `runbook run ", a.name, " --dry-run`\n")
  return 0
end

-- schedule ------------------------------------------------------------------

local function abs_path(p)
  if p:sub(1, 1) == "/" then return p end
  local fs = require("runbook.fs.core")
  return ((fs.getcwd and fs.getcwd()) or os.getenv("PWD") or ".") .. "/" .. p
end

local function cmd_schedule(a)
  local project = load_project()
  if not project then return EXIT_USAGE end
  local params = require("runbook.params")
  local every, derr = params.duration(a.every)
  if not every then
    err_out(("--every %s: %s"):format(a.every, derr))
    return EXIT_USAGE
  end
  local def, err = require("runbook.catalogue").find(a.name, project)
  if not def then err_out(err) return EXIT_USAGE end
  local env, eerr = require("runbook.engine").environment(project, a.env)
  if not env then err_out(eerr) return EXIT_USAGE end
  if def.envs then
    local ok = false
    for _, e in ipairs(def.envs) do if e == env.name then ok = true end end
    if not ok then
      err_out(("%s does not target environment '%s' (it may target: %s)"):format(def.name, env.name,
        table.concat(def.envs, ", ")))
      return EXIT_USAGE
    end
  end
  local given, perr = params.parse_words(a.param)
  if not given then err_out(perr) return EXIT_USAGE end
  -- a schedule is a plain-text file: a secret there would be on disk for good
  local serr = secret_words(def, given, "would be written into the schedule in plain text",
    "in the scheduler's environment")
  if serr then err_out(serr) return EXIT_USAGE end
  -- the scheduled runs must start: every parameter valid, none missing
  local _, verr = params.resolve(def.params, given, { runbook = def.name })
  if verr then err_out(verr) return EXIT_USAGE end
  local args = {}
  local names = {}
  for k in pairs(given) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do args[#args + 1] = "-p" args[#args + 1] = k .. "=" .. given[k] end
  -- a name is found from the project's directory; a file path must not depend on cwd
  local target = a.name:find("/", 1, true) and abs_path(a.name) or a.name
  local text, rerr = require("stdlib.schedule").render({
    runbook = target, every = every, format = a.format, env = env.name, args = args, log = a.log,
    bin = package.runbook_exe or abs_path(arg and arg[0] or "runbook"),
    label = "runbook." .. def.name .. "." .. env.name,
    workdir = project.path and abs_path(project.root) or nil,
  })
  if not text then err_out(rerr) return EXIT_USAGE end
  io.stdout:write(text)
  return 0
end

local function cmd_man(parser)
  local function esc(s) return (s:gsub("\\", "\\\\"):gsub("\n%.", "\n\\&.")) end
  local out = { ".TH RUNBOOK 1 \"\" \"runbook " .. package.runbook_version .. "\" \"User Commands\"",
    ".SH NAME", "runbook \\- executable operations runbooks", ".SH SYNOPSIS", ".nf", esc(parser:get_usage()), ".fi",
    ".SH DESCRIPTION", ".nf", esc(parser:get_help()), ".fi", ".SH COMMANDS" }
  for _, c in ipairs(parser._commands) do
    if not c._hidden then
      out[#out + 1] = ".SS " .. c._name
      out[#out + 1] = ".nf"
      out[#out + 1] = esc(c:get_help())
      out[#out + 1] = ".fi"
    end
  end
  io.stdout:write(table.concat(out, "\n"), "\n")
  return 0
end

---@param args string[]
---@return integer exit code
function M.main(args)
  -- like lua.c around luaL_openlibs: no collection while argparse loads and
  -- the parser is built and used (little of it is garbage, and a short
  -- command ends before a cycle would pay off); on again before any command
  collectgarbage("stop")
  local parser = build_parser(args[1])
  local ok, a = parser:pparse(args)
  collectgarbage("restart")
  if not ok then
    io.stderr:write(parser:get_usage(), "\n")
    err_out(a .. " (see runbook --help)")
    return EXIT_USAGE
  end
  if a.version then
    io.stdout:write("runbook ", package.runbook_version, " (", _VERSION, ")\n")
    return 0
  end
  local c = a.command
  if not c then
    io.stdout:write(parser:get_help(), "\n")
    return 0
  end
  if c == "list" then return cmd_list()
  elseif c == "show" then return cmd_show(a)
  elseif c == "run" then return do_run(a, a.name)
  elseif c == "resume" then return do_run(a, nil, a.run_id)
  elseif c == "history" then return cmd_history(a)
  elseif c == "log" then return cmd_log(a)
  elseif c == "check" then return cmd_check(a)
  elseif c == "new" then return cmd_new(a)
  elseif c == "schedule" then return cmd_schedule(a)
  elseif c == "completion" then
    io.stdout:write(parser:get_bash_complete())
    return 0
  elseif c == "man" then return cmd_man(parser)
  end
  err_out("unknown command " .. tostring(c))
  return EXIT_USAGE
end

return M
