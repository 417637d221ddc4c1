-- kvaudit.lua — benchmark of the kv-audit scanner (issue 6): builds a
-- deterministic synthetic Workers repository of at least 200k lines of
-- JS/TS in a temp dir, then times
--
--   runbook exec SCAN.lua DIR     the scan: stdlib.kvaudit in one process
--                                  that walks, matches, classifies, reports
--                                  and exits, as grep does — the row with
--                                  the issue's target (≤ 2× grep)
--   runbook run kv-audit -p root=DIR --journal TMP
--                                  the same scan inside the runbook: plus
--                                  the CLI, the journal (opened, written
--                                  step by step, checkpointed with its
--                                  fsyncs) and the steps' output; shown
--                                  with no target of its own
--
-- against
--
--   grep -rEn '\.(put|get|delete|list)\s*\(' DIR
--
-- and, last, what the runbook adds to the scan whatever the tree: run and
-- exec on a tree of one file. Each figure is a median over interleaved
-- rounds (see timings). Uses hyperfine when present (output through a
-- pipe: GNU grep stops at the first match when it writes to /dev/null),
-- else a monotonic-clock loop. Before timing, it checks the audit found
-- exactly the KV sites the generator wrote, so a fast but wrong scanner
-- cannot pass.
--
--   lua5.4 bench/kvaudit.lua            or   ./runbook exec bench/kvaudit.lua
--   BENCH_RUNS=10 BENCH_ROUNDS=5 KV_BENCH_LINES=200000 KV_BENCH_KEEP=1 (keep the tree)
local cjson = require("cjson")

local ROOT = os.getenv("PWD") or "."
local BIN = os.getenv("RUNBOOK_BIN") or (ROOT .. "/runbook")
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "10") -- per command and round
local LINES = tonumber(os.getenv("KV_BENCH_LINES") or "200000")
local TARGET = 2.0

local function sh(cmd)
  local ok = os.execute(cmd)
  if not ok then error("bench: command failed: " .. cmd, 0) end
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- a small LCG: the tree is the same on every machine and every run (its
-- low bits cycle quickly, so the draw uses the high ones)
local seed = 20261122
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return (seed >> 15) % n + 1
end

-- Chunks of code as a Workers repository has them. Each says how many KV
-- sites (by operation) it holds; everything else is either a lookalike the
-- audit must leave out (Map, headers, searchParams, Cache API, comments,
-- strings) or plain code.
local KV = {
  { kv = { get = 1, put = 1 }, text = [[
export async function getPage%d(env, id) {
  const key = `page:%d:${id}`;
  const hit = await env.CACHE.get(key, "json");
  if (hit) return hit;
  const body = { id, html: "<p>" + id + "</p>" };
  await env.CACHE.put(key, JSON.stringify(body), { expirationTtl: 300 });
  return body;
}]] },
  { kv = { get = 1, put = 1 }, text = [[
async function acquireLock%d(env, name) {
  const kv = env.LOCKS;
  const held = await kv.get(`lock:${name}`);
  if (held) return false;
  await kv.put(`lock:${name}`, String(Date.now()));
  return true;
}]] },
  { kv = { list = 1, delete = 1 }, text = [[
async function sweepLeases%d(env) {
  let cursor;
  do {
    const page = await env.QUEUE_KV.list({ prefix: "queue:lease:", cursor });
    for (const k of page.keys) await env.QUEUE_KV.delete(k.name);
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
}]] },
  { kv = { get = 1, put = 1, delete = 1 }, text = [[
export class Store%d {
  constructor(env) {
    this.kv = env.SESSIONS;
  }
  async load(id) {
    return this.kv.get(`session:${id}`, { type: "json" });
  }
  async save(id, data) {
    await this.kv.put(`session:${id}`, JSON.stringify(data), { expirationTtl: 86400 });
  }
  async drop(id) { await this.kv.delete(`session:${id}`); }
}]] },
  { kv = { get = 1, put = 1 }, ts = true, text = [[
export async function rateLimit%d(env: Env, ip: string): Promise<boolean> {
  const key = `rate:${ip}:${Math.floor(Date.now() / 60000)}`;
  const n = Number((await env.RATE_KV.get(key)) ?? "0");
  if (n > 100) return false;
  await env.RATE_KV.put(key, String(n + 1), { expirationTtl: 120 });
  return true;
}]] },
}

local LOOKALIKE = {
  { text = [[
function collect%d(request, items) {
  const seen = new Map();
  const auth = request.headers.get("authorization") || "";
  const url = new URL(request.url);
  const limit = Number(url.searchParams.get("limit") || 50);
  for (const it of items) {
    if (!seen.get(it.id)) seen.set(it.id, it);
  }
  seen.delete("x");
  return { auth, limit, n: seen.size };
}]] },
  { text = [[
async function cached%d(request, ctx) {
  const cache = caches.default;
  let res = await cache.match(request);
  if (!res) {
    res = new Response("ok", { headers: { "cache-control": "max-age=60" } });
    ctx.waitUntil(cache.put(request, res.clone()));
  }
  return res;
}]] },
  { text = [[
export function fmt%d(n, s) {
  const re = /[a-z]+\/\d+/g;
  const half = n / 2 / 3;
  const msg = "it's " + s + ' "quoted" ' + `tmpl ${n} and ${s}`;
  // env.KV.put(x) in a comment is not a call
  const help = "store it with env.KV.put(key, value)";
  return msg.replace(re, "x").length + half + help.length;
}]] },
  { text = [[
export const route%d = {
  method: "GET",
  path: "/api/items/%d",
  async handler(c) {
    const id = c.req.param("id");
    const q = c.req.query("q") || "";
    const token = c.req.header("authorization");
    const body = await c.req.json().catch(() => ({}));
    return c.json({ id, q, token: Boolean(token), body, at: new Date().toISOString() });
  },
};]] },
}

local PLAIN = {
  { text = [[
/**
 * Helpers for item %d. Keep them pure: no I/O, no bindings, so they can be
 * tested without a Worker.
 */]] },
  { text = [[
export function score%d(items) {
  let total = 0;
  for (let i = 0; i < items.length; i++) {
    const w = items[i].weight || 1;
    total += w * (i %% 7 === 0 ? 2 : 1);
    if (total > 1e6) break;
  }
  const avg = items.length ? total / items.length : 0;
  return { total, avg, label: total > 100 ? "high" : "low" };
}]] },
  { ts = true, text = [[
export interface Item%d {
  id: string;
  name: string;
  tags: string[];
  createdAt: number;
  owner?: { id: string; email: string };
}

export type Result%d<T> = { ok: true; value: T } | { ok: false; error: string };]] },
  { text = [[
export function slugify%d(input) {
  return input
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}]] },
  { text = [[
export const config%d = {
  retries: 3,
  backoffMs: [100, 200, 400],
  endpoints: {
    api: "https://api.example.com/v1",
    auth: "https://auth.example.com/oauth/token",
  },
  features: { beta: false, audit: true },
};]] },
  { text = [[
describe("module %d", () => {
  it("adds", () => {
    expect(add(1, 2)).toBe(3);
  });
  it("formats", () => {
    expect(fmt(3, "a")).toMatch(/tmpl 3/);
  });
});]] },
  { text = [[
export async function callApi%d(url, token) {
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ at: Date.now() }),
  });
  if (!res.ok) throw new Error(`upstream ${res.status}`);
  return res.json();
}]] },
  { text = [[
export function reducer%d(state, action) {
  switch (action.type) {
    case "add":
      return { ...state, items: [...state.items, action.item] };
    case "remove":
      return { ...state, items: state.items.filter((i) => i.id !== action.id) };
    default:
      return state;
  }
}]] },
}

-- What a file is made of, by kind: storage modules hold most KV code,
-- handlers some, the rest is plain code (percentages of chunks). The "repo"
-- mix is calibrated on examples/hub/src, the KV-heavy Worker in this
-- repository: one KV site per ~86 lines, one grep match per ~48. The
-- "dense" mix (KV_BENCH_MIX=dense) is the worst case: one KV site every
-- ~10 lines, in every file.
local MIXES = {
  repo = {
    { share = 10, kv = 35, lookalike = 10 }, -- storage modules
    { share = 40, kv = 3, lookalike = 8 },   -- handlers
    { share = 50, kv = 0, lookalike = 2 },   -- utilities, types, tests
  },
  dense = { { share = 100, kv = 55, lookalike = 35 } },
}
local MIX = MIXES[os.getenv("KV_BENCH_MIX") or "repo"] or error("KV_BENCH_MIX must be repo or dense")

local function pick(list, ts)
  while true do
    local c = list[rand(#list)]
    if ts or not c.ts then return c end
  end
end

local function generate(dir)
  local made, files, kv = 0, 0, { put = 0, get = 0, delete = 0, list = 0 }
  local module = 0
  while made < LINES do
    module = module + 1
    local sub = ("%s/src/mod%03d"):format(dir, module)
    sh("mkdir -p " .. shq(sub))
    for f = 1, 25 do
      local ts = rand(2) == 1
      local roll, kind = rand(100), MIX[#MIX]
      for _, k in ipairs(MIX) do
        if roll <= k.share then kind = k break end
        roll = roll - k.share
      end
      local parts = { ("// generated file %d/%d for the kv-audit benchmark\n"):format(module, f),
        ts and 'import type { Env } from "../env";\n' or 'import { json } from "../http.js";\n' }
      local n = 0
      while n < 100 do
        local r = rand(100)
        local c = r <= kind.kv and pick(KV, ts) or r <= kind.kv + kind.lookalike and pick(LOOKALIKE, ts) or pick(PLAIN, ts)
        local id = module * 1000 + f * 10 + n
        local text = c.text:gsub("%%d", tostring(id)):gsub("%%%%", "%%")
        parts[#parts + 1] = text .. "\n\n"
        local _, nl = text:gsub("\n", "")
        n = n + nl + 2
        for op, k in pairs(c.kv or {}) do kv[op] = kv[op] + k end
      end
      local path = ("%s/file%02d.%s"):format(sub, f, ts and "ts" or "js")
      local fh = assert(io.open(path, "wb"))
      fh:write(table.concat(parts))
      fh:close()
      made = made + n + 2
      files = files + 1
    end
  end
  return { lines = made, files = files, kv = kv }
end

local function median(xs)
  table.sort(xs)
  local n = #xs
  if n % 2 == 1 then return xs[(n + 1) // 2] end
  return (xs[n // 2] + xs[n // 2 + 1]) / 2
end

-- Each command's median over ROUNDS rounds of RUNS runs, the order of the
-- commands rotated every round: this VM's noise (±10 %, now and then a run
-- twice as long) and its drift from one minute to the next fall on every
-- command alike instead of on whichever ran first.
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "5")

local function timings(cmds, tmp)
  local all = {}
  for _, c in ipairs(cmds) do all[c[1]] = {} end
  local hyperfine = os.execute("command -v hyperfine >/dev/null 2>&1")
  local ok, term = pcall(require, "runbook.term.core")
  local clock = ok and term.monotonic or os.clock
  for round = 1, ROUNDS do
    local order = {}
    for i = 1, #cmds do order[i] = cmds[(i + round - 2) % #cmds + 1] end
    if hyperfine then
      local json = tmp .. "/hf.json"
      local args = {}
      for _, c in ipairs(order) do args[#args + 1] = "-n " .. c[1] .. " " .. shq(c[2]) end
      sh(("hyperfine -N --style none --output=pipe --warmup 2 --runs %d --export-json %s %s >/dev/null")
        :format(RUNS, shq(json), table.concat(args, " ")))
      local fh = assert(io.open(json, "rb"))
      for _, r in ipairs(cjson.decode(fh:read("a")).results) do
        for _, x in ipairs(r.times) do table.insert(all[r.command], x) end
      end
      fh:close()
    else
      for _, c in ipairs(order) do
        for _ = 1, RUNS do
          local t0 = clock()
          -- through a pipe: GNU grep stops at the first match when it writes to /dev/null
          sh(c[2] .. " 2>/dev/null | cat >/dev/null")
          table.insert(all[c[1]], clock() - t0)
        end
      end
    end
  end
  local t = {}
  for name, xs in pairs(all) do t[name] = median(xs) end
  return t
end

local tmp = os.tmpname()
os.remove(tmp)
sh("mkdir -p " .. shq(tmp))
local tree = tmp .. "/repo"
local journal = tmp .. "/journal.db"
local ok, err = pcall(function()
  local t0 = os.time()
  local g = generate(tree)
  local wc = (capture("cat $(find " .. shq(tree) .. " -type f) | wc -l"):gsub("%s", ""))
  local grep = ("grep -rEn '\\.(put|get|delete|list)\\s*\\(' %s"):format(shq(tree))
  local matches = (capture(grep .. " | wc -l"):gsub("%s", ""))
  local sites = g.kv.put + g.kv.get + g.kv.delete + g.kv.list
  io.stdout:write(("kv-audit bench (%s mix): %d files, %s lines; %d KV sites (put %d, get %d, delete %d, list %d), "
    .. "one per %d lines; grep matches %s lines (%d s to generate)\n")
    :format(os.getenv("KV_BENCH_MIX") or "repo", g.files, wc, sites, g.kv.put, g.kv.get, g.kv.delete, g.kv.list,
      math.floor(tonumber(wc) / math.max(sites, 1)), matches, os.time() - t0))

  -- correctness first: the audit must find exactly what was generated
  local ours = ("%s run kv-audit -p root=%s --journal %s"):format(shq(BIN), shq(tree), shq(journal))
  local found = { put = 0, get = 0, delete = 0, list = 0 }
  local out = capture(ours .. " --json -p write_baseline=" .. shq(tmp .. "/baseline.json"))
  local status
  for line in out:gmatch("[^\n]+") do
    local ev = cjson.decode(line)
    if ev.event == "run_end" then status = ev.status end
  end
  if status ~= "ok" then error("kv-audit run did not finish ok:\n" .. out, 0) end
  local fh = assert(io.open(tmp .. "/baseline.json", "rb"))
  local base = cjson.decode(fh:read("a"))
  fh:close()
  for op in pairs(found) do found[op] = base.totals[op] end
  for op, n in pairs(g.kv) do
    if found[op] ~= n then
      error(("kv-audit found %d %s sites, the generator wrote %d"):format(found[op], op, n), 0)
    end
  end
  io.stdout:write("kv-audit found exactly the generated sites\n")

  -- the scan in one process (walk, read, analyse, classify, report), as
  -- grep's is: what the scanner costs without the runbook's CLI and journal
  local lib = tmp .. "/scan.lua"
  fh = assert(io.open(lib, "wb"))
  fh:write([[
local kvaudit = require("stdlib.kvaudit")
local r = assert(kvaudit.scan(arg[1]))
kvaudit.report(kvaudit.classify(r))
]])
  fh:close()
  local exec = ("%s exec %s %s"):format(shq(BIN), shq(lib), shq(tree))

  -- what the runbook adds whatever the tree: the same two on one small file
  local tiny = tmp .. "/tiny"
  sh("mkdir -p " .. shq(tiny .. "/src"))
  fh = assert(io.open(tiny .. "/src/a.js", "wb"))
  fh:write('export async function f(env) {\n  await env.CACHE.put("k", "v", { expirationTtl: 60 });\n}\n')
  fh:close()
  local tiny_run = ("%s run kv-audit -p root=%s --journal %s"):format(shq(BIN), shq(tiny), shq(tmp .. "/tiny.db"))
  local tiny_exec = ("%s exec %s %s"):format(shq(BIN), shq(lib), shq(tiny))

  local cmds = { { "run", ours }, { "exec", exec }, { "grep", grep }, { "tiny_run", tiny_run }, { "tiny_exec", tiny_exec } }
  local t = timings(cmds, tmp)
  local mix = os.getenv("KV_BENCH_MIX") or "repo"
  local fixed = t.tiny_run - t.tiny_exec
  for _, row in ipairs({
    { ("kv-audit scan in one process: stdlib.kvaudit via runbook exec (%s lines, %s mix) vs grep -rEn"):format(wc, mix),
      t.exec, TARGET, t.grep },
    { ("runbook run kv-audit: the scan plus CLI, journal and step output (%s lines) vs grep -rEn"):format(wc),
      t.run, nil, t.grep },
    { "runbook run kv-audit: what the runbook adds to the scan (one-file tree, run − exec)", fixed, nil, nil },
  }) do
    local what, ours_t, target, ref = row[1], row[2], row[3], row[4]
    if os.getenv("BENCH_ROWS") then -- under bench/run.lua: a row of its table
      io.stdout:write(("ROW\t%s\t%.9f\t%s\t%s\ts\n"):format(what, ours_t, target and ("%.1f"):format(target) or "",
        ref and ("%.9f"):format(ref) or ""))
    elseif ref then
      local ratio = ours_t / ref
      io.stdout:write(("| %s | %.2f ms | %.2f ms | %.2f× | %s |\n"):format(what, ours_t * 1000, ref * 1000, ratio,
        target and ("≤ %.1f× %s"):format(target, ratio <= target and "met" or "NOT met") or "—"))
    else
      io.stdout:write(("| %s | %.2f ms | — | — | — |\n"):format(what, ours_t * 1000))
    end
  end
end)
if os.getenv("KV_BENCH_KEEP") then
  io.stdout:write("tree kept in ", tree, "\n")
else
  os.execute("rm -rf " .. shq(tmp))
end
if not ok then
  io.stderr:write("bench: kv-audit: ", tostring(err), "\n")
  os.exit(1)
end
