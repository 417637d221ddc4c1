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
local function row(what, ours, ref, target)
  rows[#rows + 1] = { what = what, ours = ours, ref = ref, target = target }
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
local st = measure({
  { "runbook --version", BIN .. " --version" },
  { "lua5.4 -e ''", "lua5.4 -e ''" },
}, { runs = 100, warmup = 10 })
row("start-up: runbook --version vs lua5.4 -e ''", st["runbook --version"], st["lua5.4 -e ''"], 1.5)
local has_cli = os.execute(BIN .. " list >/dev/null 2>&1")
if has_cli then
  local st2 = measure({
    { "runbook list", BIN .. " list" },
    { "lua5.4 -e ''", "lua5.4 -e ''" },
  }, { runs = 50, warmup = 5 })
  row("start-up: runbook list vs lua5.4 -e ''", st2["runbook list"], st2["lua5.4 -e ''"], 1.5)
end

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

-- 3. optional sub-benches (journal, kv-audit) print their own lines --------
for _, extra in ipairs({ "bench/journal.lua" }) do
  local f = io.open(extra)
  if f then
    f:close()
    io.stdout:write("\n")
    os.execute(("%s exec %s"):format(BIN, extra))
  end
end

-- table ---------------------------------------------------------------------
io.stdout:write("\n| measurement | runbook | reference | ratio | target |\n|---|---|---|---|---|\n")
for _, r in ipairs(rows) do
  local ratio = r.ours / r.ref
  io.stdout:write(("| %s | %.2f ms | %.2f ms | %.2f× | %s |\n"):format(
    r.what, r.ours * 1000, r.ref * 1000, ratio,
    r.target and (("≤ %.1f× %s"):format(r.target, ratio <= r.target and "met" or "NOT met")) or "—"))
end
os.execute("rm -rf " .. tmp)
