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
