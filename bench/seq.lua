-- seq.lua — N sequential GETs with a status check, through the runbook http
-- face on one client (keep-alive). usage: runbook exec bench/seq.lua URL N
local http = require("runbook.http")
local url, n = arg[1], tonumber(arg[2] or "1000")
for i = 1, n do
  local resp, err = http.request({ url = url })
  if not resp or resp.status ~= 200 then
    io.stderr:write(("request %d failed: %s\n"):format(i, err or resp.status))
    os.exit(1)
  end
end
