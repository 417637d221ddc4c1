-- journal.lua — what the journal costs a run (`make bench` runs it through
-- `runbook exec`; prints table rows on stdout as `ROW<TAB>what<TAB>ours<TAB>target`).
--
--   per step:       step_start + step_end, as the engine records a step
--                   (WAL, synchronous=NORMAL, one implicit transaction each);
--   per checkpoint: a durable checkpoint (synchronous=FULL: the WAL is
--                   fsync'd before it returns), as ctx:checkpoint does;
--   end to end:     `runbook run` of a 200-step runbook minus the same with
--                   1 step, per step — everything the engine adds per step.
-- The journal lives in a temp dir on the same file system as /tmp.
local journal = require("runbook.journal")
local term = require("runbook.term.core")
local proc = require("runbook.proc")

local BIN = os.getenv("RUNBOOK_BIN") or (os.getenv("PWD") .. "/runbook")
local dir = os.tmpname()
os.remove(dir)
assert(require("runbook.fs").mkdir_p(dir, tonumber("700", 8)))

local function row(what, secs, target)
  io.stdout:write(("ROW\t%s\t%.9f\t%s\n"):format(what, secs, target or ""))
end

local J = assert(journal.open(dir .. "/bench.db"))
local id = journal.new_id()
J:begin_run({ id = id, runbook = "bench", env = "local", mode = "run", params = {}, user = "bench", host = "bench", pid = 1 })

local N = 2000
local t0 = term.monotonic()
for i = 1, N do
  J:step_start(id, i, "step " .. i)
  J:step_end(id, i, "ok", "output of step " .. i, nil)
end
row("journal: one step (start + end)", (term.monotonic() - t0) / N, 0.0002)

local C = 500
t0 = term.monotonic()
for i = 1, C do J:checkpoint(id, 1, "cursor", i) end
row("journal: one durable checkpoint (fsync)", (term.monotonic() - t0) / C, 0.0005)
J:close()

-- end to end: a generated runbook of K trivial steps, journaled
local function runbook_file(k)
  local path = ("%s/steps%d.lua"):format(dir, k)
  local f = assert(io.open(path, "w"))
  f:write('local rb = require("runbook")\nlocal steps = {}\n')
  f:write(("for i = 1, %d do\n"):format(k))
  f:write('  steps[i] = rb.step("step " .. i) { run = function(ctx) ctx:set("n", i) end,\n')
  f:write('    verify = { rb.check("counted", function(ctx) return ctx:get("n") == i end) } }\nend\n')
  f:write(('return rb.runbook { name = "steps%d", summary = "bench", steps = steps }\n'):format(k))
  f:close()
  return path
end

local function run_once(k)
  local t = term.monotonic()
  local r = proc.run({ argv = { BIN, "run", runbook_file(k), "--journal", dir .. "/e2e.db" },
    env_add = { NO_COLOR = "1" }, timeout = 120 })
  assert(r and r.code == 0, "bench: run of a " .. k .. "-step runbook failed: " .. tostring(r and r.stderr))
  return term.monotonic() - t
end

local function best(k, reps)
  local b = math.huge
  for _ = 1, reps do b = math.min(b, run_once(k)) end
  return b
end

local K = 200
local big, small = best(K, 5), best(1, 5)
row("engine: one step end to end (run, verify, journal, output)", (big - small) / (K - 1))

os.execute("rm -rf '" .. dir .. "'")
