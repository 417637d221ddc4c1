-- run.lua — `make bench`: measures runbook against its references in one run
-- and prints the ratios (runbook time / reference time; lower is better).
-- Everything talks to 127.0.0.1 only. Needs hyperfine, curl, wrk, nginx.
local cjson = require("cjson")

local ROOT = os.getenv("PWD")
math.randomseed(os.time())
local BIN = os.getenv("RUNBOOK_BIN") or (ROOT .. "/runbook")
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "10")
local tmp = os.tmpname(); os.remove(tmp); assert(os.execute("mkdir -p " .. tmp))

local function sh(cmd)
  local ok = os.execute(cmd)
  if not ok then error("bench: command failed: " .. cmd) end
end

local function read(path)
  local f = assert(io.open(path, "rb")); local s = f:read("a"); f:close(); return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb")); f:write(s); f:close()
end

-- hyperfine over named commands; returns name -> mean seconds
local function measure(cmds, opts)
  opts = opts or {}
  local out = tmp .. "/hf.json"
  local args = { "hyperfine", "-N", "--style", "none", "--export-json", out,
    "--runs", tostring(opts.runs or RUNS), "--warmup", tostring(opts.warmup or 3) }
  for _, c in ipairs(cmds) do
    args[#args + 1] = "-n"; args[#args + 1] = ("%q"):format(c[1])
    args[#args + 1] = ("%q"):format(c[2])
  end
  sh(table.concat(args, " ") .. " >/dev/null")
  local res = {}
  for _, r in ipairs(cjson.decode(read(out)).results) do res[r.command] = r.mean end
  return res
end

local rows = {}
local function row(what, ours, ref, target, absolute)
  rows[#rows + 1] = { what = what, ours = ours, ref = ref, target = target, absolute = absolute }
end

local function free_port()
  -- a random high port that nothing answers on yet
  for _ = 1, 50 do
    local port = math.random(20000, 60000)
    if not os.execute(("curl -s -o /dev/null --max-time 1 http://127.0.0.1:%d/"):format(port)) then
      return port
    end
  end
  error("bench: no free port found")
end

-- 1. start-up -------------------------------------------------------------
-- `list` and `show` run on a catalogue of 20 runbooks: the built-in ones plus
-- copies of rotate-queue-key on RUNBOOK_PATH to make up the number.
local cat = tmp .. "/catalogue"
sh("mkdir -p " .. cat)
local builtin = 0
for _ in io.popen(BIN .. " list 2>/dev/null"):lines() do builtin = builtin + 1 end
local src = read(ROOT .. "/runbooks/rotate-queue-key.lua")
for i = 1, math.max(0, 20 - builtin) do
  write(("%s/copy-%02d.lua"):format(cat, i), (src:gsub('name = "rotate%-queue%-key"', ('name = "copy-%02d"'):format(i))))
end
local envp = "env RUNBOOK_PATH=" .. cat .. " "
local st = measure({
  { "runbook --version", BIN .. " --version" },
  { "runbook list", envp .. BIN .. " list" },
  { "runbook show", envp .. BIN .. " show rotate-queue-key" },
  { "lua5.4 -e ''", "lua5.4 -e ''" },
  { "env lua5.4 -e ''", "env lua5.4 -e ''" },
}, { runs = 100, warmup = 10 })
row("start-up: runbook --version vs lua5.4 -e ''", st["runbook --version"], st["lua5.4 -e ''"], 1.5)
-- list/show go through env(1) to set RUNBOOK_PATH; the reference pays for it too
row("start-up: runbook list (20 runbooks) vs lua5.4 -e ''", st["runbook list"], st["env lua5.4 -e ''"], 1.5)
row("start-up: runbook show (20 runbooks) vs lua5.4 -e ''", st["runbook show"], st["env lua5.4 -e ''"], 1.5)

-- 2. HTTP against a local nginx (keep-alive, 1 worker) ---------------------
local port = free_port()
write(tmp .. "/ok.txt", "ok\n")
write(tmp .. "/nginx.conf", ([[
daemon off; master_process off; worker_processes 1; pid %s/nginx.pid;
error_log %s/error.log crit;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000;
  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;
  server { listen 127.0.0.1:%d; location / { root %s; } } }
]]):format(tmp, tmp, tmp, tmp, tmp, tmp, tmp, port, tmp))
sh(("nginx -c %s/nginx.conf -p %s >/dev/null 2>&1 & echo $! > %s/nginx.launch"):format(tmp, tmp, tmp))
local url = ("http://127.0.0.1:%d/ok.txt"):format(port)
for _ = 1, 50 do
  if os.execute("curl -sf -o /dev/null " .. url) then break end
  os.execute("sleep 0.1")
end
local N = 1000
local cfg = {}
for _ = 1, N do cfg[#cfg + 1] = ('url = "%s"\noutput = "/dev/null"'):format(url) end
write(tmp .. "/urls.cfg", table.concat(cfg, "\n") .. "\n")

local ok, err = pcall(function()
  local seq = measure({
    { "runbook 1000 sequential", ("%s exec bench/seq.lua %s %d"):format(BIN, url, N) },
    { "curl 1000 keep-alive", ("curl -s -K %s/urls.cfg"):format(tmp) },
  })
  row("1000 sequential GETs vs one keep-alive curl", seq["runbook 1000 sequential"], seq["curl 1000 keep-alive"], 0.6)
  local par = measure({
    { "runbook 1000 @16", ("%s exec bench/par.lua %s %d 16"):format(BIN, url, N) },
    { "curl --parallel 16", ("curl -s --parallel --parallel-max 16 -K %s/urls.cfg"):format(tmp) },
  })
  row("1000 GETs at concurrency 16 vs curl --parallel", par["runbook 1000 @16"], par["curl --parallel 16"], 0.7)
  -- the wrk floor: what the server itself can do on this machine
  local p = io.popen(("wrk -t1 -c1 -d2s %s 2>&1"):format(url))
  local w1 = p:read("a"); p:close()
  p = io.popen(("wrk -t1 -c16 -d2s %s 2>&1"):format(url))
  local w16 = p:read("a"); p:close()
  local r1 = tonumber(w1:match("Requests/sec:%s*([%d%.]+)"))
  local r16 = tonumber(w16:match("Requests/sec:%s*([%d%.]+)"))
  if r1 then row("1000 sequential GETs vs wrk -c1 floor", seq["runbook 1000 sequential"], N / r1) end
  if r16 then row("1000 GETs @16 vs wrk -c16 floor", par["runbook 1000 @16"], N / r16) end
end)
os.execute(("kill $(cat %s/nginx.launch) 2>/dev/null"):format(tmp))
if not ok then io.stderr:write("bench: http: ", tostring(err), "\n") end

-- 3. sub-benches print `ROW<TAB>what<TAB>value<TAB>target<TAB>ref<TAB>unit` lines
-- (target, ref and unit may be empty; unit is s — the default —, KiB or %) ---
for _, extra in ipairs({ "bench/journal.lua", "bench/kvaudit.lua", "bench/migrate.lua" }) do
  local f = io.open(extra)
  if f then
    f:close()
    local p = io.popen(("BENCH_ROWS=1 RUNBOOK_BIN=%s %s exec %s"):format(BIN, BIN, extra))
    for line in p:lines() do
      if line:match("^ROW\t") then
        local fields = {}
        for v in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = v end
        local _, what, ours, target, ref, unit = table.unpack(fields)
        rows[#rows + 1] = { what = what, ours = tonumber(ours), ref = tonumber(ref), target = tonumber(target),
          absolute = not tonumber(ref), unit = (unit ~= nil and unit ~= "") and unit or "s" }
      else
        io.stdout:write(line, "\n")
      end
    end
    if not p:close() then io.stderr:write("bench: ", extra, " failed\n") end
  end
end

-- table ---------------------------------------------------------------------
-- A row with a reference shows the ratio and compares it with its target; a
-- row without one (absolute cost) compares its own time with the target.
local function ms(x, unit)
  if not x then return "—" end
  if unit == "KiB" then return ("%d KiB"):format(x) end
  if unit == "%" then return ("%.1f %%"):format(x) end
  return ("%.3f ms"):format(x * 1000)
end
local lines = { "| measurement | runbook | reference | ratio | target |", "|---|---|---|---|---|" }
for _, r in ipairs(rows) do
  local ratio, verdict = r.ref and r.ours / r.ref, "—"
  if r.target and r.absolute then
    verdict = ("≤ %s %s"):format(ms(r.target, r.unit), r.ours <= r.target and "met" or "NOT met")
  elseif r.target and ratio then
    verdict = ("≤ %.1f× %s"):format(r.target, ratio <= r.target and "met" or "NOT met")
  end
  lines[#lines + 1] = ("| %s | %s | %s | %s | %s |"):format(r.what, ms(r.ours, r.unit), ms(r.ref, r.unit),
    ratio and ("%.2f×"):format(ratio) or "—", verdict)
end
local table_text = table.concat(lines, "\n") .. "\n"
io.stdout:write("\n", table_text)

-- docs/BENCH.md: the table with the machine it was measured on
local function cmd(c)
  local p = io.popen(c .. " 2>/dev/null"); local o = p:read("a") or ""; p:close(); return (o:gsub("%s+$", ""))
end
local machine = ("%s; %s CPUs (%s); %s; %s"):format(cmd("uname -srm"), cmd("nproc"),
  cmd("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1"),
  cmd("free -g | awk '/^Mem:/ {print $2 \" GiB RAM\"}'"), cmd("curl --version | head -1 | cut -d' ' -f1-2"))
if os.getenv("BENCH_DOC") ~= "0" then
  write(ROOT .. "/docs/BENCH.md", ([[
# Benchmarks

Written by `make bench` on %s. Machine: %s.
Ratios are runbook time / reference time from the same run (lower is
better); targets come from the issues. Each figure is a mean (hyperfine), a
median of interleaved rounds (the kv-audit rows) or a best-of run; a loaded
machine shifts them, so compare within one table.

%s
What each row measures: `bench/run.lua` (start-up, HTTP), `bench/journal.lua`,
`bench/kvaudit.lua`, `bench/migrate.lua` — the comments at their tops.
]]):format(os.date("!%Y-%m-%d %H:%M UTC"), machine, table_text))
  io.stdout:write("wrote docs/BENCH.md\n")
end
os.execute("rm -rf " .. tmp)
