-- runbook.text: find_all, the one-pass needle search kv-audit numbers its
-- call sites with, and the JS outline functions it reads them with (the
-- fuzz harness host/fuzz/text.c checks them at random against naive models
-- and invariants; these are the cases a reader can check by eye).
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

  it("with a follow byte, keeps the calls: blanks allowed before the paren, which it gives", function()
    local src = "a.put(1); b.put (2); c.putter(3); d.put\n  (4); e.put = 5; f.put"
    local pos, which, line, _, paren = text.find_all(src, { ".put" }, "(")
    assert.same({ 2, 12, 36 }, pos)
    assert.same({ 1, 1, 1 }, which)
    assert.same({ 1, 1, 1 }, line)
    assert.same({ 6, 17, 43 }, paren)
    -- the first listed needle that matches decides which, as without follow
    local _, w = text.find_all("x.getWithMetadata(k)", { ".getWithMetadata", ".get" }, "(")
    assert.same({ 1 }, w)
    assert.has_error(function() text.find_all("x", { "x" }, "((") end)
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

describe("text.js_lex and js_in_code", function()
  local function in_code(src, needle)
    local pos = assert(src:find(needle, 1, true), needle)
    return text.js_in_code(src, { pos })[1]
  end

  it("marks comments and literal text, not template expressions", function()
    local src = "a(); // x\n/* y */ b('z', \"w\"); `t ${ u } v`; /r/.test(q)"
    for _, code in ipairs({ "a()", "b(", "u", "test" }) do assert.is_true(in_code(src, code), code) end
    for _, lit in ipairs({ "x", "y", "z", "w", "t ", "v`", "r/" }) do assert.is_false(in_code(src, lit), lit) end
  end)

  it("survives escapes and unterminated strings (a quote never runs past its line)", function()
    local src = "x('it\\'s'); y(\"a\\\"b\"); z('open\nw();"
    assert.is_true(in_code(src, "y("))
    assert.is_true(in_code(src, "w()"))
  end)

  it("gives comments whole and the insides of strings, templates and regexes", function()
    local src = "a // c\nb('s', \"t\") /* m */ `x${y}z` r = /re/g; d = n / 2 / 3"
    local S, E, n = text.js_lex(src)
    local parts = {}
    for i = 1, n do parts[i] = src:sub(S[i], E[i]) end
    assert.same({ "// c", "s", "t", "/* m */", "x", "z", "re" }, parts)
  end)

  it("keeps a quote on its line unless a backslash continues it, and stops at limit", function()
    local src = "x('open\nw(); z('a\\\nb')"
    local S, E, n = text.js_lex(src)
    assert.equals(2, n)
    assert.same({ 4, 7 }, { S[1], E[1] }) -- 'open, cut by the newline
    assert.equals("a\\\nb", src:sub(S[2], E[2]))
    local _, _, m = text.js_lex("'a' 'b' 'c'", 5)
    assert.equals(2, m)
  end)

  it("says which positions are code, in one pass", function()
    local src = "kv.put(1) // kv.put(2)\n`${kv.put(3)} kv.put(4)`"
    local pos = {}
    for p in src:gmatch("()kv%.put") do pos[#pos + 1] = p end
    assert.same({ true, false, true, false }, text.js_in_code(src, pos))
    assert.same({}, text.js_in_code(src, {}))
    assert.has_error(function() text.js_in_code(src, { 5, 1 }) end)
  end)
end)

describe("text.js_args", function()
  local function args(src)
    local r, close = text.js_args(src, (src:find("(", 1, true)))
    local out = {}
    for i = 1, #r, 2 do out[#out + 1] = r[i] <= r[i + 1] and src:sub(r[i], r[i + 1]) or "" end
    return out, close
  end

  it("splits top-level arguments, skipping strings, templates, regexes, comments and brackets", function()
    local src = "put( `k:${a, b}` , f(1, 2), { t: [3, 4] }, 'x,y', /,\\)/g /* , */)"
    local a, close = args(src)
    assert.same({ "`k:${a, b}`", "f(1, 2)", "{ t: [3, 4] }", "'x,y'", "/,\\)/g /* , */" }, a)
    assert.equals(#src, close)
  end)

  it("leaves no argument after a trailing comma, and none in ()", function()
    assert.same({ "a", "b" }, (args("f(a, b, )")))
    assert.same({}, (args("f( )")))
  end)

  it("gives the arguments a comma ended, and no close, when the call does not close", function()
    local a, close = args("f(key, `open")
    assert.same({ "key" }, a)
    assert.is_nil(close)
    assert.is_nil(select(2, args("f(a, b]")))
    assert.is_nil(select(2, text.js_args("f(" .. ("x"):rep(100) .. ")", 2, 50)))
  end)
end)

describe("text.js_expr_end and js_quote_end", function()
  it("finds the brace closing an expression, strings and templates skipped", function()
    local src = "{ a: '}', b: `${ '}' }` } rest"
    assert.equals(26, text.js_expr_end(src, 2)) -- after the "}" at 25
    assert.equals(#"{ never" + 1, text.js_expr_end("{ never", 2))
  end)

  it("finds a quote's end: escaped quotes skipped, a newline cuts it", function()
    assert.equals(6, text.js_quote_end("'a\\'b'", 1)) -- 'a\'b': the escaped quote is inside
    assert.equals(5, text.js_quote_end("'a\\\\'b'", 1)) -- 'a\\' then b
    assert.equals(4, text.js_quote_end('"ab\ncd"', 1))
    assert.has_error(function() text.js_quote_end("abc", 1) end)
  end)
end)

describe("text.js_open_before and js_block_head", function()
  it("walks out through the enclosing blocks, balanced ones skipped, within a budget", function()
    local src = "function f() { if (x) { y() } else { z() } }"
    local at_z = src:find("z", 1, true)
    local q, used = text.js_open_before(src, at_z)
    assert.equals(src:find("{ z", 1, true), q)
    assert.equals(1, used)
    local q2, used2 = text.js_open_before(src, q - 1)
    assert.equals(14, q2)
    assert.equals(3, used2) -- "}", "{" of { y() }, and the function's "{"
    assert.is_nil((text.js_open_before(src, 13)))
    assert.is_nil((text.js_open_before(src, at_z, 0)))
  end)

  it("reads a block's head: on its line, across multi-line parameters and for headers", function()
    local function head(src)
      local q = src:find("{", 1, true)
      local a, b = text.js_block_head(src, q - 1)
      return src:sub(a, b)
    end
    assert.equals("async fetch(req, env)", head("x;\n  async fetch(req, env) {"))
    assert.equals("export async function poll(\n  env,\n  ctx\n)", head("a;\nexport async function poll(\n  env,\n  ctx\n) {"))
    assert.equals("for (let i = 0; i < n; i++)", head("go();\nfor (let i = 0; i < n; i++) {"))
    assert.equals("scheduled(event)", head("y\nscheduled(event)\n{"))
    assert.equals("", head("{"))
  end)
end)
