-- kvaudit_phases.lua — where kv-audit's scan spends its time, phase by
-- phase, on one thread: walk, read, the C candidate pass (find_all), the
-- per-file analysis, classify and report. It explains bench/kvaudit.lua's
-- ratio; it has no target of its own. The first round runs on a cold heap,
-- nearer what a one-shot `runbook run kv-audit` pays; later rounds reuse it.
-- Only the files the scan reads (kvaudit.EXTENSIONS) are read and analysed.
--
--   KV_BENCH_KEEP=1 lua5.4 bench/kvaudit.lua     (keeps the tree, prints where)
--   ./runbook exec bench/kvaudit_phases.lua DIR [ROUNDS]
local fs = require("runbook.fs")
local term = require("runbook.term")
local text = require("runbook.text")
local kvaudit = require("stdlib.kvaudit")

local root = arg[1]
if not root then
  io.stderr:write("usage: runbook exec bench/kvaudit_phases.lua DIR [ROUNDS] (a tree to scan)\n")
  os.exit(2)
end
local rounds = math.tointeger(tonumber(arg[2] or "5")) or 5

local first, best = {}, {}
local function timed(name, fn)
  local t = term.monotonic()
  local r = fn()
  local ms = (term.monotonic() - t) * 1e3
  first[name] = first[name] or ms
  if not best[name] or ms < best[name] then best[name] = ms end
  return r
end

local function source(rel) return kvaudit.EXTENSIONS[rel:match("%.(%w+)$") or ""] end

local files, lines
for _ = 1, rounds do
  local paths = timed("walk", function()
    local all, srcs = assert(fs.walk(root, { skip = kvaudit.SKIP_DIRS })), {}
    for _, rel in ipairs(all) do if source(rel) then srcs[#srcs + 1] = rel end end
    return srcs
  end)
  local texts = timed("read", function()
    local t = {}
    for i, p in ipairs(paths) do t[i] = assert(fs.read(root .. "/" .. p)) end
    return t
  end)
  if not lines then
    files, lines = #texts, 0
    for _, t in ipairs(texts) do lines = lines + select(2, t:gsub("\n", "")) end
  end
  timed("find_all (C candidates)", function()
    for _, t in ipairs(texts) do text.find_all(t, kvaudit.NEEDLES, "(") end
  end)
  timed("analyze (all, incl. find_all)", function()
    local A = kvaudit.analyzer({})
    for i, t in ipairs(texts) do kvaudit.analyze(t, paths[i], A) end
  end)
  local r = timed("scan (threads)", function() return assert(kvaudit.scan(root)) end)
  local c = timed("classify", function() return kvaudit.classify(r) end)
  timed("report", function() return kvaudit.report(c) end)
end

io.stdout:write(("kv-audit phases on %s: %d files, %d lines, first round and best of %d\n"):format(root, files, lines, rounds))
for _, name in ipairs({ "walk", "read", "find_all (C candidates)", "analyze (all, incl. find_all)", "scan (threads)",
  "classify", "report" }) do
  io.stdout:write(("  %-32s %8.1f ms %8.1f ms\n"):format(name, first[name], best[name]))
end
