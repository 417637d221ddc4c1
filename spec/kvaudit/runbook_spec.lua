-- The kv-audit runbook through the CLI, as CI runs it: the report on the
-- fixture repo, the baseline round trip, a failing check (exit 1, the new
-- sites named on the terminal and in JUnit), the allowances, and the modes
-- (--dry-run / --offline print the baseline write and make none).
local cli = require("cli")
local cjson = require("cjson")

local FIX = "spec/fixtures/kvrepo"

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

describe("kv-audit runbook", function()
  local dir, repo, journal

  before_each(function()
    dir = cli.tmpdir()
    repo = dir .. "/repo"
    journal = dir .. "/journal.db"
    local r = require("runbook.proc.core").run({ argv = { "cp", "-R", FIX, repo }, timeout = 30 })
    assert.equals(0, r.code)
  end)
  after_each(function() cli.rmrf(dir) end)

  local function run(args)
    local argv = { "run", "kv-audit", "--journal", journal }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return cli.run(argv)
  end

  local function out(r) return r.stdout .. r.stderr end

  it("scans and reports: totals, puts without TTL, lists on hot paths, candidates", function()
    local r = run({ "-p", "root=" .. repo })
    assert.equals(0, r.code, out(r))
    local o = r.stdout
    assert.matches("21 KV sites in 7 files scanned", o)
    assert.matches("put 9, get 7, delete 3, list 2", o)
    assert.matches("A control plane 7, B high frequency 6, C cache 8", o)
    assert.matches('puts without TTL %(4%):', o)
    for _, line in ipairs({
      'src/index.js:34 put LOCKS key "cron:last-run" — A run state',
      'src/legacy.js:8 put LEGACY_STORE key "config" — C cache',
      'src/queue.js:7 put QUEUE_KV key "queue:task:…" — B queue / lease state',
      'src/sessions.js:19 put SESSIONS key "oauth:refresh:…" — A token / credential',
      'src/index.js:27 list QUEUE_KV prefix "queue:lease:" — in the fetch handler',
      'src/queue.js:15 list QUEUE_KV prefix "queue:lease:" — in a loop (do) in pollLeases',
      ' 1. LOCKS "cron:" — A run state → D1',
    }) do
      assert.is_truthy(o:find(line, 1, true), "missing: " .. line .. "\n" .. o)
    end
    assert.matches("in a comment or a string, not code", o)
    assert.matches("Cache API %(caches%.default%), not KV", o)
    assert.matches("skip Write the baseline", o)
    assert.matches("skip Check against the baseline", o)
  end)

  it("writes the baseline, and a check of the same tree passes", function()
    local base = dir .. "/kv-baseline.json"
    local r = run({ "-p", "root=" .. repo, "-p", "write_baseline=" .. base })
    assert.equals(0, r.code, out(r))
    local doc = cjson.decode(cli.slurp(base))
    assert.equals(21, #doc.sites)
    assert.same({ sites = 21, put = 9, get = 7, delete = 3, list = 2, put_without_ttl = 4, list_hot = 2, A = 7, B = 6, C = 8 },
      doc.totals)
    local where = {}
    for _, s in ipairs(doc.sites) do where[#where + 1] = ("%s:%d:%s:%s"):format(s.file, s.line, s.op, s.binding) end
    table.sort(where)
    assert.equals("src/index.js:14:get:CACHE", where[1])
    assert.equals("src/sessions.js:5:get:SESSIONS", where[#where])
    r = run({ "-p", "action=check", "-p", "root=" .. repo, "-p", "baseline=" .. base })
    assert.equals(0, r.code, out(r))
    assert.matches("0 new, 0 gone", r.stdout)
    assert.matches("ok +no new put without a TTL", r.stdout)
  end)

  it("fails a check with exit 1 naming a new TTL-less put, on the terminal and in JUnit", function()
    local base = dir .. "/kv-baseline.json"
    assert.equals(0, run({ "-p", "root=" .. repo, "-p", "write_baseline=" .. base }).code)
    write(repo .. "/src/more.js", 'export async function more(env) {\n  await env.CACHE.put("new-key", "v");\n}\n')
    local xml = dir .. "/kv.xml"
    local r = run({ "-p", "action=check", "-p", "root=" .. repo, "-p", "baseline=" .. base, "--junit", xml })
    assert.equals(1, r.code, out(r))
    assert.matches('FAIL no new put without a TTL: 1 new put without expirationTtl: src/more%.js:2 put CACHE key "new%-key"',
      r.stdout)
    assert.matches("FAILED at step 5/5: Check against the baseline", r.stdout)
    local junit = cli.slurp(xml)
    assert.matches('<failure message="verification failed: no new put without a TTL: 1 new put without expirationTtl: '
      .. 'src/more%.js:2 put CACHE key &quot;new%-key&quot;', junit)
    assert.matches('failures="1"', junit)
  end)

  it("fails on a new list whatever the allowances; growth passes within them and fails above", function()
    local base = dir .. "/kv-baseline.json"
    assert.equals(0, run({ "-p", "root=" .. repo, "-p", "write_baseline=" .. base }).code)
    local check = { "-p", "action=check", "-p", "root=" .. repo, "-p", "baseline=" .. base }
    local function with(...)
      local a = {}
      for _, x in ipairs(check) do a[#a + 1] = x end
      for _, x in ipairs({ ... }) do a[#a + 1] = x end
      return run(a)
    end
    write(repo .. "/src/more.js", "export async function more(env) {\n"
      .. "  await env.CACHE.put(`user:${env.ID}`, 'v', { expirationTtl: 60 });\n"
      .. "  return env.CACHE.get('user:1');\n}\n")
    local r = with()
    assert.equals(1, r.code, out(r))
    assert.matches("FAIL KV sites grew no more than allow_total_increase: KV sites grew by 2 %(21 → 23%)", r.stdout)
    assert.matches("FAIL puts grew no more than allow_puts_increase: puts grew by 1 %(9 → 10%)", r.stdout)
    assert.matches("ok +no new put without a TTL", r.stdout)
    r = with("-p", "allow_total_increase=2", "-p", "allow_puts_increase=1")
    assert.equals(0, r.code, out(r))
    r = with("-p", "allow_total_increase=1", "-p", "allow_puts_increase=1")
    assert.equals(1, r.code, out(r))
    assert.matches("more than the allowed 1; new: src/more%.js:2 put CACHE", r.stdout)

    write(repo .. "/src/more.js", "export const leases = (env) => env.QUEUE_KV.list({ prefix: 'queue:lease:' });\n")
    r = with("-p", "allow_total_increase=100", "-p", "allow_puts_increase=100")
    assert.equals(1, r.code, out(r))
    assert.matches('FAIL no new list call: 1 new list call: src/more%.js:1 list QUEUE_KV prefix "queue:lease:"', r.stdout)
  end)

  it("--dry-run and --offline print the baseline write and do not make it", function()
    local base = dir .. "/kv-baseline.json"
    for _, mode in ipairs({ "--dry-run", "--offline" }) do
      local r = run({ mode, "-p", "root=" .. repo, "-p", "write_baseline=" .. base })
      assert.equals(0, r.code, out(r))
      assert.matches("write " .. base:gsub("%p", "%%%0") .. " %(%d+ bytes%) %(" .. mode:sub(3):gsub("%-", "%%-") .. ": not written%)",
        r.stdout)
      assert.matches("21 KV sites", r.stdout)
      assert.is_false(cli.exists(base), mode .. " wrote the baseline")
    end
  end)

  it("a check reads the baseline in every mode: --offline fails the same regression", function()
    local base = dir .. "/kv-baseline.json"
    assert.equals(0, run({ "-p", "root=" .. repo, "-p", "write_baseline=" .. base }).code)
    write(repo .. "/src/more.js", 'export const m = (env) => env.LOCKS.put("lock:new", "1");\n')
    local r = run({ "--offline", "-p", "action=check", "-p", "root=" .. repo, "-p", "baseline=" .. base })
    assert.equals(1, r.code, out(r))
    assert.matches('src/more%.js:1 put LOCKS key "lock:new"', r.stdout)
  end)

  it("refuses a check without a baseline, a missing baseline, and a root that is not a directory", function()
    local r = run({ "-p", "action=check", "-p", "root=" .. repo })
    assert.equals(1, r.code)
    assert.matches("action=check needs %-p baseline=FILE %(write one first with %-p write_baseline=FILE%)", r.stdout)
    r = run({ "-p", "action=check", "-p", "root=" .. repo, "-p", "baseline=" .. dir .. "/none.json" })
    assert.equals(1, r.code)
    assert.matches("none%.json does not exist; write it with %-p write_baseline=", r.stdout)
    r = run({ "-p", "root=" .. repo .. "/wrangler.toml" })
    assert.equals(1, r.code)
    assert.matches("is not a directory; pass %-p root=DIR", r.stdout)
    r = run({ "-p", "action=lint" })
    assert.equals(2, r.code)
    assert.matches("expected one of scan, check", r.stderr)
  end)

  it("passes `runbook check kv-audit` (offline, default parameters)", function()
    local r = cli.run({ "check", "kv-audit" })
    assert.equals(0, r.code, out(r))
    assert.matches("ok   kv%-audit %(5 steps, offline run ok%)", r.stdout)
  end)

  it("emits JSON events with the report lines for machines", function()
    local r = run({ "--json", "-p", "root=" .. repo })
    assert.equals(0, r.code, out(r))
    local logs, status = {}, nil
    for line in r.stdout:gmatch("[^\n]+") do
      local ev = cjson.decode(line)
      if ev.event == "log" then logs[#logs + 1] = ev.message end
      if ev.event == "run_end" then status = ev.status end
    end
    assert.equals("ok", status)
    assert.is_truthy(table.concat(logs, "\n"):find('src/index.js:34 put LOCKS key "cron:last-run"', 1, true))
  end)
end)
