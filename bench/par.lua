-- par.lua — N GETs at concurrency C through http.batch (libcurl multi),
-- each status checked. usage: runbook exec bench/par.lua URL N C
local http = require("runbook.http")
local url, n, c = arg[1], tonumber(arg[2] or "1000"), tonumber(arg[3] or "16")
local reqs = {}
for i = 1, n do reqs[i] = { url = url } end
local results = http.batch(reqs, { concurrency = c })
for i = 1, n do
  local r = results[i]
  if not r or r.status ~= 200 then
    io.stderr:write(("request %d failed: %s\n"):format(i, r and (r.error or r.status) or "missing"))
    os.exit(1)
  end
end
