-- valgrind.lua — `make valgrind`: the host under valgrind on scripts that
-- touch every C module (http + crypto + sqlite + proc + fs + term) and on a
-- full journaled runbook run against the local test server, and on
-- rotate-queue-key end to end against the real local hub. Fails when any
-- run reports a definite leak or a memory error.
--   usage: runbook exec .ci/valgrind.lua
package.path = "spec/helpers/?.lua;" .. package.path
local proc = require("runbook.proc")
local ts = require("testserver")
local cli = require("cli")

local BIN = os.getenv("RUNBOOK_BIN") or "./runbook"
local srv = ts.start()
local dir = cli.tmpdir()
local cases = {
  { "five-line script (GET, HMAC, sqlite, child with stdin)", { BIN, "exec", "examples/five.lua", srv.url .. "/echo" } },
  { "runbook run spy (HTTP read + write, file write, child, journal)",
    { BIN, "run", "spy", "--journal", dir .. "/j.db", "-p", "url=" .. srv.url, "-p", "dir=" .. dir,
      "-p", "record=" .. cli.root .. "/spec/fixtures/bin/record" } },
  { "runbook run pages (checkpoints)",
    { BIN, "run", "pages", "--journal", dir .. "/j.db", "-p", "dir=" .. dir, "-p", "pages=5", "-p", "delay=0" } },
  { "runbook history (reads the journal)", { BIN, "history", "--journal", dir .. "/j.db" } },
}
-- end to end: rotate-queue-key against a real local hub and the daemon
local L
local localenv = require("localenv")
if localenv.available() and os.getenv("VALGRIND_E2E") ~= "0" then
  L = localenv.start()
  cases[#cases + 1] = { "runbook run rotate-queue-key --env local --yes (hub, daemon, restarts, probes)",
    { BIN, "run", "rotate-queue-key", "--env", "local", "--yes" },
    { RUNBOOK_PROJECT = L.project, RUNBOOK_JOURNAL = L.journal } }
end
local failed = 0
for _, c in ipairs(cases) do
  local argv = { "valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
    "--error-exitcode=97", "--log-file=" .. dir .. "/vg.log" }
  for _, a in ipairs(c[2]) do argv[#argv + 1] = a end
  local env_add = { NO_COLOR = "1", RECORD_LOG = dir .. "/record.log", RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks" }
  for k, v in pairs(c[3] or {}) do env_add[k] = v end
  local r = assert(proc.run({ argv = argv, timeout = 600, stdout = "capture", stderr = "capture", env_add = env_add }))
  local log = cli.slurp(dir .. "/vg.log") or ""
  local ok = r.code == 0 and not log:find("definitely lost: [1-9]") and not log:find("Invalid ")
  io.stdout:write(("%s %s\n"):format(ok and "ok  " or "FAIL", c[1]))
  if not ok then
    failed = failed + 1
    io.stdout:write("  exit ", tostring(r.code), "\n", r.stderr:sub(-1500), log:sub(-3000), "\n")
  end
end
srv.stop()
if L then L:stop() end
cli.rmrf(dir)
io.stdout:write(("%d passed, %d failed\n"):format(#cases - failed, failed))
os.exit(failed == 0 and 0 or 1)
