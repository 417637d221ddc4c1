-- runbook.worker: a Lua function run in another thread, in a state of its
-- own, with its arguments and result copied (kv-audit analyses a tree on
-- every CPU with it).
local worker = require("runbook.worker")
local fs = require("runbook.fs")
local cli = require("spec.helpers.cli")

describe("runbook.worker", function()
  it("runs a module's function in a thread and returns its result", function()
    assert.equals("ab,ab,ab", worker.start("string", "rep", "ab", 3, ","):join())
    -- find_all's four arrays come back as the first result only
    assert.same({ 2, 8 }, worker.start("runbook.text", "find_all", "a.put x.get\n", { ".put", ".get" }):join())
  end)

  it("copies nested tables, integers, floats, booleans and strings with NUL bytes both ways", function()
    local v = { 1, 2.5, true, false, "a\0b", { deep = { deeper = { 42 } } }, key = "value", [7] = math.maxinteger }
    -- table.pack returns its arguments in a table: what went in comes back
    local back = worker.start("table", "pack", v):join()
    assert.same({ n = 1, v }, back)
    assert.equals(math.type(back[1][1]), "integer")
    assert.equals(math.type(back[1][2]), "float")
  end)

  it("raises the worker's error in the thread that joins it, with what failed", function()
    local ok, err = pcall(function() return worker.start("string", "rep", {}):join() end)
    assert.is_false(ok)
    assert.truthy(err:find("worker: bad argument #1 to 'string.rep'", 1, true), err)
    ok, err = pcall(function() return worker.start("string", "no_such"):join() end)
    assert.is_false(ok)
    assert.matches("worker: string%.no_such is not a function", err)
    ok, err = pcall(function() return worker.start("no.such.module", "f"):join() end)
    assert.is_false(ok)
    assert.matches("module 'no.such.module' not found", err)
  end)

  it("refuses what cannot cross threads: functions, userdata, cycles", function()
    assert.has_error(function() worker.start("string", "rep", print) end,
      "worker: cannot pass a function between threads")
    assert.has_error(function() worker.start("string", "rep", io.stdout) end,
      "worker: cannot pass a userdata between threads")
    local t = {}
    t.self = t
    assert.has_error(function() worker.start("string", "rep", t) end)
  end)

  it("a result that cannot come back raises in join and leaves the collector running", function()
    -- string.gmatch returns an iterator function
    local w = worker.start("string", "gmatch", "a b", "%a")
    assert.has_error(function() w:join() end, "worker: cannot pass a function between threads")
    assert.is_true(collectgarbage("isrunning"))
    assert.has_error(function() w:join() end, "worker: already joined")
    -- and a worker started after it works as before
    assert.equals("yy", worker.start("string", "rep", "y", 2):join())
  end)

  it("can be joined once; one never joined is waited for when collected", function()
    local w = worker.start("string", "rep", "x", 2)
    assert.equals("xx", w:join())
    assert.has_error(function() w:join() end, "worker: already joined")
    worker.start("string", "rep", "x", 1e6) -- dropped
    collectgarbage()
    collectgarbage()
  end)

  it("a worker collected before its thread has begun still runs and closes (300 in a row)", function()
    -- in a child process, so a crash is a failed exit, not a dead spec runner
    local dir = cli.tmpdir()
    local script = dir .. "/drop.lua"
    assert(fs.write_atomic(script, [[
local worker = require("runbook.worker")
for _ = 1, 300 do
  worker.start("string", "rep", "x", 10) -- dropped at once
  collectgarbage()
end
io.write("done\n")
]]))
    local r = cli.run({ "exec", script })
    cli.rmrf(dir)
    assert.equals(0, r.code, r.stderr)
    assert.equals("done\n", r.stdout)
  end)

  it("shares a counter: threads take items from one list and none twice", function()
    -- kv-audit's analyze_files, in two workers and here, over one tree
    local dir = cli.tmpdir()
    local rels = {}
    for i = 1, 40 do
      rels[i] = ("f%02d.js"):format(i)
      assert(fs.write_atomic(dir .. "/" .. rels[i], ("await env.KV.put('k%d', v);\n"):format(i)))
    end
    local claim = worker.counter()
    local o = { bindings = {}, not_kv = {} }
    local w1 = worker.start("stdlib.kvaudit", "analyze_files", dir, rels, o, claim)
    local w2 = worker.start("stdlib.kvaudit", "analyze_files", dir, rels, o, claim)
    local mine = require("stdlib.kvaudit").analyze_files(dir, rels, o, claim)
    local seen, analysed = {}, 0
    for _, part in ipairs({ mine, w1:join(), w2:join() }) do
      analysed = analysed + part.analysed
      for i, r in pairs(part.files) do
        assert.is_nil(seen[i], "file " .. i .. " analysed twice")
        seen[i] = true
        assert.equals(("'k%d'"):format(i), r[1][1].key_expr)
      end
    end
    for i = 1, 40 do assert.is_true(seen[i], "file " .. i .. " never analysed") end
    assert.equals(40, analysed)
    -- every thread called next() once past the end
    assert.equals(43, claim:value())
  end)

  it("says how many CPUs the process may use", function()
    local n = worker.cpus()
    assert.equals("integer", math.type(n))
    assert.is_true(n >= 1)
  end)
end)
