-- migrate.lua — the KV→D1 queue migration at scale (issue 7): a local hub
-- (real wrangler dev) seeded with 10,000 and then 100,000 KV tasks, each
-- migrated by `runbook run migrate-queue-kv-to-d1 -p limit=1000`. Prints ROW lines for bench/run.lua: wall time, the runbook
-- process's share of it (its user+sys CPU / wall: the rest is the hub), and
-- its peak RSS — which must stay flat from 10k to 100k (pages are streamed,
-- never accumulated).
--   usage: runbook exec bench/migrate.lua    (MIGRATE_BENCH_SIZES=10000,100000)
package.path = "spec/helpers/?.lua;" .. package.path
local localenv = require("localenv")
local proc = require("runbook.proc")
local cjson = require("cjson")

local sizes = {}
for n in (os.getenv("MIGRATE_BENCH_SIZES") or "10000,100000"):gmatch("%d+") do sizes[#sizes + 1] = tonumber(n) end

if not localenv.available() then
  io.stderr:write("bench/migrate: examples/hub/node_modules missing (make hub-deps); skipped\n")
  return
end

local function row(what, value, target, unit)
  io.stdout:write(("ROW\t%s\t%s\t%s\t\t%s\n"):format(what, value, target or "", unit or ""))
end

local L = localenv.start({ daemon = false })
local ok, err = pcall(function()
  local rss = {}
  for _, n in ipairs(sizes) do
    local r = L:request("POST", "/api/admin/reset")
    assert(r.status == 200, "reset: HTTP " .. r.status)
    -- seed in slices of 10,000 (one request each; the KV simulator does ~2,000 puts/s)
    for start = 1, n, 10000 do
      local count = math.min(10000, n - start + 1)
      r = L:request("POST", "/api/admin/seed", { headers = { ["Content-Type"] = "application/json" },
        body = cjson.encode({ queue_tasks_kv = { count = count, start = start } }), timeout = 600 })
      assert(r.status == 200, "seed: HTTP " .. r.status .. " " .. (r.body or ""))
    end
    -- the runbook process itself, sampled from /proc while it runs: its own
    -- peak RSS (VmHWM) and CPU (utime + stime) — not wrangler's, which it
    -- runs as a child to check the D1 migrations
    local term = require("runbook.term")
    local t0 = term.monotonic()
    local p = assert(proc.spawn({ argv = { package.runbook_exe or "./runbook", "run", "migrate-queue-kv-to-d1",
      "--env", "local", "--yes", "-p", "limit=1000", "--journal", L.journal },
      env_add = { RUNBOOK_PROJECT = L.project, NO_COLOR = "1" }, stdout = L.dir .. "/migrate.log",
      stderr = L.dir .. "/migrate.log" }))
    local pid, maxrss, cpu = p:pid(), 0, 0
    local deadline = t0 + 3600
    while p:running() and term.monotonic() < deadline do
      local f = io.open("/proc/" .. pid .. "/status")
      if f then
        local st = f:read("a"); f:close()
        maxrss = math.max(maxrss, tonumber(st:match("VmHWM:%s*(%d+)")) or 0)
      end
      f = io.open("/proc/" .. pid .. "/stat")
      if f then
        local st = f:read("a"); f:close()
        local rest = st:match("%) (.*)$") or ""
        local fields = {}
        for v in rest:gmatch("%S+") do fields[#fields + 1] = v end
        -- after "pid (comm)": state is field 3, utime 14, stime 15 → here 12 and 13
        local u, sy = tonumber(fields[12]), tonumber(fields[13])
        if u and sy then cpu = (u + sy) / 100 end
      end
      term.sleep(0.05)
    end
    local res = p:wait(10) or p:stop(5)
    local wall = term.monotonic() - t0
    if res.code ~= 0 then
      local f = io.open(L.dir .. "/migrate.log"); local log = f and f:read("a") or ""; if f then f:close() end
      error(("migration of %d failed (exit %s):\n%s"):format(n, tostring(res.code), log:sub(-2000)), 0)
    end
    local user, sys = cpu, 0
    local label = ("migration of %d items"):format(n)
    row(label .. ": wall time", wall)
    row(label .. ": runbook share of wall time (its CPU / wall)", 100 * (user + sys) / wall, nil, "%")
    row(label .. ": runbook peak RSS", maxrss, nil, "KiB")
    rss[#rss + 1] = maxrss
  end
  if #rss >= 2 then
    io.stdout:write(("migration: peak RSS %d KiB at %d items, %d KiB at %d items (%.2f×)\n"):format(
      rss[1], sizes[1], rss[#rss], sizes[#sizes], rss[#rss] / rss[1]))
  end
end)
L:stop()
if not ok then
  io.stderr:write("bench/migrate: ", tostring(err), "\n")
  os.exit(1)
end
