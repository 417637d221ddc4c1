-- runbook.text: find_all, the one-pass needle search kv-audit numbers its
-- call sites with (the fuzz harness host/fuzz/text.c checks it at random
-- against a naive model; these are the cases a reader can check by eye).
local text = require("runbook.text")

local function all(s, needles)
  local pos, which, line, lstart = text.find_all(s, needles)
  local out = {}
  for i = 1, #pos do out[i] = { pos[i], which[i], line[i], lstart[i] } end
  return out
end

describe("text.find_all", function()
  it("finds every needle in order with its line and the line's start", function()
    local src = "const v = await env.KV.get(k);\n// env.KV.put(x)\n\n  await env.KV.put(k, v);\n"
    assert.same({ { 23, 2, 1, 1 }, { 41, 1, 2, 32 }, { 64, 1, 4, 50 } },
      all(src, { ".put", ".get", ".delete", ".list" }))
  end)

  it("counts lines by \\n only (CRLF files too) and finds needles that overlap", function()
    assert.same({ { 1, 1, 1, 1 }, { 2, 1, 1, 1 }, { 3, 2, 1, 1 }, { 6, 2, 2, 6 } },
      all("aaa\r\na", { "aa", "a" }))
  end)

  it("finds needles that start with different bytes (one pass, first bytes from a table)", function()
    assert.same({ { 2, 1, 1, 1 }, { 4, 2, 1, 1 }, { 7, 1, 2, 7 } }, all("a.b-c\n.", { ".", "-" }))
  end)

  it("gives empty arrays when nothing matches, and for an empty string", function()
    assert.same({}, all("no calls here\n", { ".put" }))
    assert.same({}, all("", { ".put" }))
  end)

  it("refuses no needles, empty needles and non-strings", function()
    assert.has_error(function() text.find_all("x", {}) end)
    assert.has_error(function() text.find_all("x", { "" }) end)
    assert.has_error(function() text.find_all("x", { 1 }) end)
  end)
end)

describe("text.last_of", function()
  local last_of = text.last_of

  it("finds the last byte of a set at or before init, like strrchr for a set", function()
    local src = "if (x) { await env.KV.put(k) }"
    assert.equals(30, last_of(src, "{}"))
    assert.equals(8, last_of(src, "{}", 29))
    assert.equals(6, last_of(src, ")(", 7))
    assert.equals(26, last_of(src, "(", 29)) -- one byte: memrchr
    assert.equals(4, last_of(src, "(", 25))
    assert.is_nil(last_of(src, "#"))
  end)

  it("with outside, finds the last byte not in the set: where a run ending at init starts, minus one", function()
    local src = "await env.KV.put(k)"
    local chain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$."
    -- the receiver before ".put" (position 13) is env.KV, from 7 to 12
    assert.equals(6, last_of(src, chain, 12, 1, true))
    assert.equals("env.KV", src:sub(last_of(src, chain, 12, 1, true) + 1, 12))
    -- a run reaching the stop: nil, the run starts at stop
    assert.is_nil(last_of(src, chain, 12, 7, true))
  end)

  it("looks only between stop and init, clamped to the string", function()
    assert.equals(1, last_of("a{b", "a{", 1))
    assert.is_nil(last_of("a{b", "{", 3, 3))
    assert.equals(2, last_of("a{b", "{", 99))
    assert.is_nil(last_of("a{b", "{", 0))
    assert.is_nil(last_of("", "{"))
    assert.equals(2, last_of("a{b", "{", 3, -5))
  end)

  it("refuses what is not a string", function()
    assert.has_error(function() last_of(nil, "{") end)
    assert.has_error(function() last_of("x", nil) end)
  end)
end)
