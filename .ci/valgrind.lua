-- valgrind.lua — `make valgrind`: the host under valgrind on scripts that
-- touch every C module (http + crypto + sqlite + proc + fs + term) and on a
-- full journaled runbook run against the local test server. Fails when any
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
local failed = 0
for _, c in ipairs(cases) do
  local argv = { "valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
    "--error-exitcode=97", "--log-file=" .. dir .. "/vg.log" }
  for _, a in ipairs(c[2]) do argv[#argv + 1] = a end
  local r = assert(proc.run({ argv = argv, timeout = 300, stdout = "capture", stderr = "capture",
    env_add = { NO_COLOR = "1", RECORD_LOG = dir .. "/record.log", RUNBOOK_PATH = cli.root .. "/spec/fixtures/runbooks" } }))
  local log = cli.slurp(dir .. "/vg.log") or ""
  local ok = r.code == 0 and not log:find("definitely lost: [1-9]") and not log:find("Invalid ")
  io.stdout:write(("%s %s\n"):format(ok and "ok  " or "FAIL", c[1]))
  if not ok then
    failed = failed + 1
    io.stdout:write("  exit ", tostring(r.code), "\n", r.stderr:sub(-1500), log:sub(-3000), "\n")
  end
end
srv.stop()
cli.rmrf(dir)
io.stdout:write(("%d passed, %d failed\n"):format(#cases - failed, failed))
os.exit(failed == 0 and 0 or 1)
