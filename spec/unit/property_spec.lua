-- Property tests of the Lua parsers, on random inputs: params (every type,
-- durations, -p words), runbook loading (the DSL and catalogue.load_file on
-- broken files), dotenv (random bytes, bad lines) and redact (random
-- secrets in random encodings). Inputs are random but seeded and every loop
-- is bounded; a failure names the seed and the case, and
--   PROPERTY_SEED=N make test BUSTED_ARGS=spec/unit/property_spec.lua
-- replays it (each `it` reseeds, so it can also be run alone).
local params = require("runbook.params")
local catalogue = require("runbook.catalogue")
local dotenv = require("stdlib.dotenv")
local redact = require("runbook.redact")
local crypto = require("runbook.crypto.core")
local cli = require("cli")

local SEED = tonumber(os.getenv("PROPERTY_SEED") or "") or 20261123
local rand = math.random

local function reseed(k) math.randomseed(SEED, k) end

local function where(case, detail)
  return ("PROPERTY_SEED=%d case %d%s"):format(SEED, case, detail and (": " .. detail) or "")
end

local function pick(t)
  if type(t) == "string" then
    local i = rand(#t)
    return t:sub(i, i)
  end
  return t[rand(#t)]
end

-- n items from a list of strings (or single characters of a string)
local function text(atoms, lo, hi)
  local out = {}
  for i = 1, rand(lo, hi) do out[i] = pick(atoms) end
  return table.concat(out)
end

local function bytes(lo, hi)
  local out = {}
  for i = 1, rand(lo, hi) do out[i] = string.char(rand(0, 255)) end
  return table.concat(out)
end

local function one_line(s) return type(s) == "string" and not s:find("[\r\n]") end

local function decl(list) return (params.declare(list, "prop")) end

-- ---------------------------------------------------------------- params

describe("property: params.duration", function()
  local UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400 }
  local NAMES = { "ms", "s", "m", "h", "d" }

  local function number()
    local n = tostring(rand(0, 999))
    if rand(4) == 1 then n = n .. "." .. tostring(rand(0, 99)) end
    return n
  end

  it("reads every sum of number+unit terms as its seconds, and a bare number as seconds, 500 cases", function()
    reseed(1)
    for case = 1, 500 do
      local parts, total = {}, 0
      if rand(5) == 1 then
        parts[1] = number()
        total = tonumber(parts[1])
      else
        for i = 1, rand(1, 4) do
          local n, u = number(), pick(NAMES)
          parts[i] = n .. u
          total = total + tonumber(n) * UNITS[u]
        end
      end
      local s = table.concat(parts)
      local got, why = params.duration(s)
      assert(got, where(case, ("%q refused: %s"):format(s, tostring(why))))
      assert(math.abs(got - total) <= 1e-9 * math.max(1, total), where(case, ("%q read as %s, want %s"):format(s, got, total)))
    end
  end)

  it("random text: a finite number of seconds >= 0, or nil and a one-line message; never raises, 3000 cases", function()
    reseed(2)
    local ATOMS = { "0", "1", "5", "9", "30", ".", "ms", "s", "m", "h", "d", "x", "e", "M", " ", "-", "+", "\n",
      "\0", "\27", "é", "1h", "30m", "inf", "nan", "0x1" }
    for case = 1, 3000 do
      local s = text(ATOMS, 0, 8)
      if rand(50) == 1 then s = ("9"):rep(rand(300, 400)) .. pick({ "", "s", "h" }) end
      local ok, v, why = pcall(params.duration, s)
      assert(ok, where(case, ("%q raised: %s"):format(s, tostring(v))))
      if v ~= nil then
        assert(type(v) == "number" and v >= 0 and v < math.huge and v == v,
          where(case, ("%q read as %s"):format(s, tostring(v))))
        assert(s:find("^%d+%.?%d*$") or s:find("^%d"), where(case, ("%q accepted"):format(s)))
      else
        assert(one_line(why), where(case, ("%q: message %q"):format(s, tostring(why))))
      end
    end
  end)
end)

describe("property: params.resolve", function()
  local function resolve(list, raw, opts)
    local ok, v, err = pcall(params.resolve, list, raw, opts or { getenv = function() return nil end })
    assert(ok, "resolve raised: " .. tostring(v))
    return v, err
  end

  local function refused(case, err, name, raw)
    assert(type(err) == "string", where(case, ("%q: no message"):format(raw)))
    assert(err:find("'" .. name .. "'", 1, true), where(case, ("%q: message does not name %s: %s"):format(raw, name, err)))
    assert(one_line(err) and not err:find("\27", 1, true), where(case, ("%q: message is not one plain line: %q"):format(raw, err)))
  end

  local JUNK = { "0", "1", "9", "-", "+", ".", "e", "E", "x", "a", " ", "\t", "\n", "\r", "\0", "\27[31m", "é", "0x",
    "inf", "nan", "1e400", "true", "http://", "/", "'" }

  it("int: every integer written in decimal comes back as that integer; other text is refused naming it, 1000 cases", function()
    reseed(3)
    local list = decl({ { name = "n", type = "int" } })
    for case = 1, 1000 do
      local raw, want
      if rand(2) == 1 then
        want = rand(-(1 << 53), 1 << 53)
        raw = tostring(want)
      else
        raw = text(JUNK, 0, 6)
      end
      local v, err = resolve(list, { n = raw })
      if want then
        assert(v and v.n == want and math.type(v.n) == "integer", where(case, ("%q: %s"):format(raw, tostring(err))))
      elseif v then
        assert(math.type(v.n) == "integer" and tonumber(raw) == v.n, where(case, ("%q read as %s"):format(raw, tostring(v.n))))
      else
        refused(case, err, "n", raw)
      end
    end
  end)

  it("number: %.17g of any finite float comes back equal; other text is refused naming it, 1000 cases", function()
    reseed(4)
    local list = decl({ { name = "x", type = "number" } })
    for case = 1, 1000 do
      if rand(2) == 1 then
        local want = (rand() - 0.5) * 10 ^ rand(-20, 20)
        local raw = ("%.17g"):format(want)
        local v, err = resolve(list, { x = raw })
        assert(v and v.x == want, where(case, ("%q: %s"):format(raw, tostring(err))))
      else
        local raw = text(JUNK, 0, 6)
        local v, err = resolve(list, { x = raw })
        if v then
          assert(tonumber(raw) == v.x, where(case, ("%q read as %s"):format(raw, tostring(v.x))))
        else
          refused(case, err, "x", raw)
        end
      end
    end
  end)

  it("bool: true/yes/1/on and false/no/0/off in any letter case, nothing else, 1000 cases", function()
    reseed(5)
    local list = decl({ { name = "b", type = "bool" } })
    local WORDS = { ["true"] = true, yes = true, ["1"] = true, on = true, ["false"] = false, no = false, ["0"] = false, off = false }
    local keys = {}
    for k in pairs(WORDS) do keys[#keys + 1] = k end
    table.sort(keys)
    for case = 1, 1000 do
      local raw = rand(2) == 1 and pick(keys) or text({ "t", "r", "u", "e", "y", "s", "o", "n", "f", "1", "0", " ", "\n" }, 0, 5)
      raw = raw:gsub("%a", function(c) return rand(2) == 1 and c:upper() or c end)
      local v, err = resolve(list, { b = raw })
      local want = WORDS[raw:lower()]
      if want == nil then
        assert(v == nil, where(case, ("%q accepted as %s"):format(raw, v and tostring(v.b))))
        refused(case, err, "b", raw)
      else
        assert(v and v.b == want, where(case, ("%q: %s"):format(raw, tostring(err))))
      end
    end
  end)

  it("url: http(s) URLs come back without trailing slashes; other text is refused naming it, 1000 cases", function()
    reseed(6)
    local list = decl({ { name = "u", type = "url" } })
    local HOSTS = { "127.0.0.1", "localhost", "hub.example.test", "[::1]", "a-b.c" }
    local SEG = { "api", "queue", "v1", "x%20y", "?q=1", "&b=2", "#frag", "é", "~me" }
    for case = 1, 1000 do
      if rand(2) == 1 then
        local url = pick({ "http", "https" }) .. "://" .. pick(HOSTS) .. (rand(2) == 1 and (":" .. rand(1, 65535)) or "")
        for _ = 1, rand(0, 3) do url = url .. "/" .. pick(SEG) end
        url = url .. ("/"):rep(rand(0, 2))
        local v, err = resolve(list, { u = url })
        assert(v and v.u == url:gsub("/+$", ""), where(case, ("%q: %s"):format(url, tostring(err))))
      else
        local raw = text({ "http", "https", "ftp", ":", "//", "/", "a", ".", " ", "\n", "\0", "[", "]" }, 0, 6)
        local v, err = resolve(list, { u = raw })
        if v then
          assert(v.u:find("^https?://[%w%.%-%[%]:]") and not v.u:find("/$"), where(case, ("%q read as %q"):format(raw, v.u)))
        else
          refused(case, err, "u", raw)
        end
      end
    end
  end)

  it("enum, duration, min/max: exactly what is declared, 1000 cases", function()
    reseed(7)
    local list = decl({
      { name = "mode", type = "enum", values = { "fast", "safe", "dry" } },
      { name = "wait", type = "duration" },
      { name = "n", type = "int", min = -5, max = 50 },
    })
    for case = 1, 1000 do
      local kind = rand(3)
      if kind == 1 then
        local raw = rand(2) == 1 and pick({ "fast", "safe", "dry" }) or text({ "fast", "safe", "FAST", " ", "d", "ry" }, 0, 3)
        local v, err = resolve(list, { mode = raw })
        if raw == "fast" or raw == "safe" or raw == "dry" then
          assert(v and v.mode == raw, where(case, err))
        else
          assert(v == nil, where(case, ("%q accepted"):format(raw)))
          refused(case, err, "mode", raw)
          assert(err:find("fast, safe, dry", 1, true), where(case, err))
        end
      elseif kind == 2 then
        local raw = text({ "1", "30", "s", "m", "h", "ms", ".5", "x", " " }, 0, 4)
        local v, err = resolve(list, { wait = raw })
        local want = params.duration(raw)
        if want then
          assert(v and v.wait == want, where(case, ("%q: %s"):format(raw, tostring(err))))
        else
          refused(case, err, "wait", raw)
        end
      else
        local n = rand(-100, 100)
        local v, err = resolve(list, { n = tostring(n) })
        if n >= -5 and n <= 50 then
          assert(v and v.n == n, where(case, err))
        else
          refused(case, err, "n", tostring(n))
          assert(err:find("between -5 and 50", 1, true), where(case, err))
        end
      end
    end
  end)

  it("string, path and secret: any bytes come back unchanged; a pattern decides the rest, 500 cases", function()
    reseed(19)
    local list = decl({ { name = "s", type = "string" }, { name = "p", type = "path" }, { name = "k", type = "secret" },
      { name = "w", type = "string", pattern = "^[%w%-]+$" } })
    for case = 1, 500 do
      local raw = { s = bytes(0, 20), p = bytes(0, 20), k = bytes(0, 20), w = text("ab-_ 9\n", 1, 6) }
      local v, err = resolve(list, raw)
      if raw.w:find("^[%w%-]+$") then
        assert(v, where(case, err))
        assert(v.s == raw.s and v.p == raw.p and v.k == raw.k and v.w == raw.w, where(case))
      else
        refused(case, err, "w", raw.w)
        assert(err:find("does not match", 1, true), where(case, err))
      end
    end
  end)

  it("a refused secret is never quoted, from -p or from its env var, 300 cases", function()
    reseed(8)
    local list = decl({
      { name = "token", type = "secret", env = "P_TOKEN", pattern = "^%d+$" },
      { name = "key", type = "secret", validate = function(v) return #v > 100, "too short" end },
    })
    for case = 1, 300 do
      local secret = text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+/=.\n'\"", 8, 30)
      local given, env = {}, nil
      local target = rand(3)
      if target == 1 then given.token = secret elseif target == 2 then env = secret else given.key = secret end
      if target ~= 3 then given.key = ("k"):rep(101) end
      local v, err = resolve(list, given, { getenv = function(k) return k == "P_TOKEN" and env or nil end })
      if v == nil then
        assert(not err:find(secret, 1, true), where(case, "the message quotes the secret: " .. err))
        assert(one_line(err), where(case, err))
      else
        assert(target ~= 3, where(case, "a 30-byte key passed a > 100 rule"))
        assert(secret:find("^%d+$"), where(case, "a non-numeric token passed ^%d+$"))
      end
    end
  end)

  it("every refusal is one plain line naming the parameter, whatever bytes the value holds, 1000 cases", function()
    reseed(9)
    local TYPES = { "int", "number", "bool", "url", "duration", "string", "path" }
    for case = 1, 1000 do
      local t = pick(TYPES)
      local p = { name = "p" .. case, type = t }
      if t == "string" or t == "path" then p.pattern = "^%w+$" end
      local list = decl({ p })
      local raw = text(JUNK, 0, 8)
      if rand(10) == 1 then raw = raw .. ("z"):rep(rand(200, 5000)) end
      local v, err = resolve(list, { [p.name] = raw })
      if not v then
        refused(case, err, p.name, raw)
        assert(#err < 400, where(case, ("a %d-byte message for a %d-byte value"):format(#err, #raw)))
      end
    end
  end)
end)

describe("property: params.parse_words", function()
  local NAME1 = "abcxyzABCXYZ_"
  local NAMEN = NAME1 .. "0123456789"

  it("name=value splits at the first '=' and keeps every byte of the value, the last word winning, 500 cases", function()
    reseed(10)
    for case = 1, 500 do
      local words, want = {}, {}
      for i = 1, rand(0, 6) do
        local name = pick(NAME1) .. text(NAMEN, 0, 5)
        local value = rand(4) == 1 and bytes(0, 10) or text({ "a", "=", " ", "\n", "-p", "x=y", "'", "é", "" }, 0, 5)
        words[i] = name .. "=" .. value
        want[name] = value
      end
      local got, err = params.parse_words(words)
      assert.same(want, got, where(case, err))
    end
  end)

  it("a malformed word is refused with one line, 500 cases", function()
    reseed(11)
    for case = 1, 500 do
      local w = text({ "a", "1", "-", " ", ":", "\n", "\r", "\0", "é", ".", "=" }, 0, 6)
      if not w:find("^[%a_][%w_]*=") then
        local ok, got, err = pcall(params.parse_words, { "good=1", w })
        assert(ok, where(case, tostring(got)))
        assert(got == nil and one_line(err), where(case, ("%q: %s"):format(w, tostring(err))))
      end
    end
  end)
end)

-- ---------------------------------------------------------- runbook loading

describe("property: runbook loading", function()
  local dir
  setup(function() dir = cli.tmpdir() end)
  teardown(function() cli.rmrf(dir) end)

  -- Slots of a runbook file, each a list of fragments; the first fragments
  -- are valid, the rest are mistakes an author makes.
  local NAME = { '"prop-rb"', '"check-2"', '"Bad Name"', '""', "42", '"-lead"', "nil", '"名前"' }
  local SUMMARY = { '"Checks a thing"', '"x"', '""', "{}", "42", "nil" }
  local ENVS = { "nil", '{ "local", "stage" }', '{ "local" }', '"local"', "{ 1, 2 }", "{ true }", "{ {} }", "{}" }
  local PARAMS = {
    '{ name = "limit", type = "int", default = 5, min = 1, max = 10, help = "page size" }',
    '{ name = "mode", type = "enum", values = { "a", "b" }, default = "a" }',
    '{ name = "every", type = "duration", default = "5m" }',
    '{ name = "token", type = "secret", env = "P_TOKEN" }',
    '{ name = "url", type = "url", default = "http://127.0.0.1:8787", required = true }',
    '{ name = "flag", type = "bool", default = false }',
    '{ name = "bad name" }', '{ type = "int" }', '{ name = "f", type = "float" }', '{ name = "e", type = "enum" }',
    '{ name = "e", type = "enum", values = "a,b" }', '{ name = "e", type = "enum", values = { 1, true } }',
    '{ name = "e", type = "enum", values = {} }', '"limit"', '{ name = "m", type = "int", min = "1" }',
    '{ name = "m", type = "int", max = {} }', '{ name = "s", type = "string", pattern = 5 }',
    '{ name = "s", type = "string", validate = "yes" }', '{ name = "s", env = 5 }', '{ name = "s", help = {} }',
  }
  local STEP_EXTRA = {
    "", 'hint = "try again",', "timeout = 30,", "retry = { attempts = 3, delay = 0.1, backoff = 2 },",
    'confirm = "go?",', "when = function() return true end,", "reads = true,",
    "rollback = function() end,",
    'timeout = "30s",', "timeout = -1,", "timeout = 0/0,", "retry = 3,", "retry = { attempts = 2.5 },",
    'retry = { attempts = "3" },', "retry = { attempts = 0 },", "retry = { delay = -1 },",
    'retry = { backoff = "x" },', "run = 42,", 'verify = "ok",', "verify = { 1 },", "colour = 1,",
    "hint = 7,", "no_verify = true,",
  }
  local STEP = {
    [[rb.step "Check health" {
      run = function(ctx) end,
      verify = { rb.check("it answers", function() return true end) },
      %s
    }]],
    [[rb.step "Note" { run = function() end, no_verify = "nothing to check", %s }]],
    [[rb.step "No verify" { run = function() end, %s }]],
    [[rb.step "" { run = function() end, no_verify = "x", %s }]],
    [[{ title = "plain table", run = function() end, no_verify = "x", %s }]],
    [[rb.step(42) { run = function() end, %s }]],
  }
  local TAIL = { "", "", "", "local x = nil; x.y = 1", 'error("broken on purpose")', "error({ code = 1 })",
    "error(nil)", "error(setmetatable({}, { __tostring = function() return 'custom error' end }))" }
  local RETURN = { "return rb.runbook(def)", "return rb.runbook(def)", "return rb.runbook(def)", "return def",
    "return nil", 'return "rotate"', "", "return rb.runbook(def), 2" }

  -- a valid fragment (one of the first nvalid) most of the time: a mix of
  -- files that load and files that do not
  local function weighted(list, nvalid)
    if rand(5) > 1 then return list[rand(nvalid)] end
    return pick(list)
  end

  local function gen()
    local steps = {}
    for i = 1, rand(10) == 1 and 0 or rand(1, 3) do
      local tmpl = rand(5) > 1 and STEP[rand(2)] or pick(STEP)
      local extra = {}
      for j = 1, rand(0, 2) do extra[j] = weighted(STEP_EXTRA, 8) end
      steps[i] = tmpl:format(table.concat(extra, " "))
    end
    local ps = {}
    for i = 1, rand(0, 3) do ps[i] = weighted(PARAMS, 6) end
    local src = ([[
local rb = require("runbook")
local def = {
  name = %s,
  summary = %s,
  envs = %s,
  params = { %s },
  steps = {
    %s
  },
}
%s
%s
]]):format(weighted(NAME, 2), weighted(SUMMARY, 2), weighted(ENVS, 3), table.concat(ps, ", "),
      table.concat(steps, ",\n    "), rand(6) == 1 and pick(TAIL) or "", rand(6) == 1 and pick(RETURN) or RETURN[1])
    -- byte-level damage: cut, drop a span, insert syntax
    local INSERT = { "(", ")", "{", "}", '"', "'", ",", "=", " end ", "nil", "--", "[[", "]]", "\n", "x", "1", "\0", "é" }
    for _ = 1, (rand(4) == 1 and rand(1, 3) or 0) do
      local kind, at = rand(3), rand(1, #src)
      if kind == 1 then
        src = src:sub(1, at)
      elseif kind == 2 then
        src = src:sub(1, at) .. src:sub(at + rand(1, 20))
      else
        src = src:sub(1, at) .. pick(INSERT) .. src:sub(at + 1)
      end
    end
    return src
  end

  local function write(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
  end

  it("load_file never raises; a refusal is one message naming the file, never a traceback; 400 files", function()
    reseed(12)
    local accepted = 0
    for case = 1, 400 do
      local src = gen()
      local path = ("%s/rb%d.lua"):format(dir, case)
      write(path, src)
      local ok, def, err = pcall(catalogue.load_file, path)
      local detail = "\n" .. src
      assert(ok, where(case, "load_file raised: " .. tostring(def) .. detail))
      if def then
        accepted = accepted + 1
        assert(type(def) == "table" and def.kind == "runbook" and type(def.name) == "string", where(case, detail))
      else
        assert(type(err) == "string", where(case, "no message" .. detail))
        assert(err:find(path, 1, true), where(case, "message does not name the file: " .. err .. detail))
        assert(not err:find("stack traceback", 1, true), where(case, err .. detail))
        assert(not err:find("table: 0x", 1, true), where(case, err .. detail))
      end
    end
    -- the generator must reach both sides, or this proves nothing
    assert(accepted > 40 and accepted < 360, ("PROPERTY_SEED=%d: %d of 400 accepted"):format(SEED, accepted))
  end)

  it("whatever load_file accepts, `runbook show` prints; whatever it refuses, show refuses in one line (60 files)", function()
    reseed(13)
    local shown, refused = 0, 0
    for case = 1, 2000 do
      if shown >= 40 and refused >= 20 then break end
      local src = gen()
      local path = ("%s/show%d.lua"):format(dir, case)
      write(path, src)
      local def, err = catalogue.load_file(path)
      if (def and shown < 40) or (not def and refused < 20) then
        local r = cli.run({ "show", path }, { timeout = 30 })
        local detail = ("\nstdout: %s\nstderr: %s\n%s"):format(r.stdout, r.stderr, src)
        assert.is_nil(r.stderr:find("traceback", 1, true), where(case, detail))
        if def then
          shown = shown + 1
          assert(r.code == 0, where(case, "show failed on an accepted runbook" .. detail))
          assert(r.stdout:find(def.name, 1, true), where(case, detail))
        else
          refused = refused + 1
          assert(r.code == 2, where(case, "exit " .. tostring(r.code) .. detail))
          assert(r.stderr:find(path, 1, true), where(case, "show's message does not name the file" .. detail))
          -- (the first line: a require error goes on to list the search path,
          -- which differs between this process and a fresh one)
          assert(err and r.stderr:find(err:match("^[^\n]*"), 1, true),
            where(case, "show says something else than load_file" .. detail))
        end
      end
    end
    assert(shown >= 40 and refused >= 20, ("PROPERTY_SEED=%d: shown %d, refused %d"):format(SEED, shown, refused))
  end)
end)

-- ------------------------------------------------------------------ dotenv

describe("property: dotenv", function()
  local function nlines(s)
    local _, n = s:gsub("\n", "")
    return n + 1
  end

  it("random bytes: parse never raises; refusals say 'line N' of a real line; what parses renders back byte for byte, 3000 cases", function()
    reseed(14)
    local ATOMS = { "A", "B", "_", "k.x", "=", " = ", "'", '"', "`", "#", " ", "\t", "\n", "\n", "\r\n", "\r", "\\", "x",
      "export ", "\239\187\191", "é", "\0", "${A}", "$" }
    for case = 1, 3000 do
      local s = text(ATOMS, 0, 16)
      if rand(5) == 1 then s = s .. bytes(0, 8) end
      local ok, doc, msg, code = pcall(dotenv.parse, s)
      assert(ok, where(case, ("%q raised: %s"):format(s, tostring(doc))))
      if doc then
        assert(dotenv.render(doc) == s, where(case, ("%q does not render back"):format(s)))
        for _, k in ipairs(doc:keys()) do assert(type(doc:get(k)) == "string", where(case, ("%q"):format(s))) end
      else
        assert(code == "EPARSE" and one_line(msg), where(case, ("%q: %s %s"):format(s, tostring(msg), tostring(code))))
        local n = tonumber(msg:match("^line (%d+): "))
        assert(n and n >= 1 and n <= nlines(s), where(case, ("%q: %s"):format(s, msg)))
      end
    end
  end)

  -- a valid file of one-line entries, as lines
  local KEY1 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
  local function gen_lines(secret)
    local lines = {}
    for i = 1, rand(1, 10) do
      local kind = rand(5)
      if kind == 1 then
        lines[i] = pick({ "", "  ", "\t" })
      elseif kind == 2 then
        lines[i] = "# " .. text("abc =#'\"", 0, 8)
      else
        local key = pick(KEY1) .. text(KEY1 .. "0123456789", 0, 6)
        local v = secret or text("abcdefgh0123456789-_./:", 0, 10)
        lines[i] = (rand(3) == 1 and "export " or "") .. key .. pick({ "=", " = ", "=\t" }) ..
          pick({ v, "'" .. v .. "'", '"' .. v .. '"', "`" .. v .. "`" }) .. pick({ "", " # note", "  " })
      end
    end
    return lines
  end

  local BAD = { "just some words", "KEY", "=value", "1KEY=x", 'KEY="x" trailing', "KEY=a\rb", "KEY='a' b", "-KEY=1",
    "export" }
  -- an open quote runs on to the next lines, so it can only go last
  local BAD_LAST = { "KEY='never closed", "KEY=`open", 'KEY="a\\"' }

  it("a bad line put into a valid file is the line the refusal names, 500 cases", function()
    reseed(15)
    for case = 1, 500 do
      local lines = gen_lines()
      local k = rand(1, #lines + 1)
      if rand(4) == 1 then
        k = #lines + 1
        lines[k] = pick(BAD_LAST)
      else
        table.insert(lines, k, pick(BAD))
      end
      local eol = pick({ "\n", "\r\n" })
      local s = table.concat(lines, eol) .. (rand(2) == 1 and eol or "")
      local doc, msg = dotenv.parse(s)
      assert(doc == nil, where(case, ("%q parsed"):format(s)))
      assert(msg:find("^line " .. k .. ": "), where(case, ("%q: %s, want line %d"):format(s, msg, k)))
    end
  end)

  it("refusals and warnings never quote a value, 500 cases", function()
    reseed(16)
    for case = 1, 500 do
      local secret = text("abcdefghijklmnopqrstuvwxyz0123456789", 12, 24)
      local lines = gen_lines(secret)
      local k = rand(1, #lines + 1)
      table.insert(lines, k, pick({ secret, secret .. " " .. secret, "KEY='" .. secret, "KEY=" .. secret .. "\r" .. secret,
        'KEY="' .. secret .. '" ' .. secret, "KEY=" .. secret .. "#" .. secret }))
      local s = table.concat(lines, "\n")
      local doc, msg = dotenv.parse(s)
      local said = doc and table.concat(doc.warnings, "\n") or msg
      for i = 1, #secret - 7 do
        local piece = secret:sub(i, i + 7)
        assert(not said:find(piece, 1, true), where(case, ("%q: %q quotes the value"):format(s, said)))
      end
    end
  end)
end)

-- ------------------------------------------------------------------ redact

describe("property: redact", function()
  before_each(function() redact.clear() end)
  after_each(function() redact.clear() end)

  local function urlenc(s, plus)
    return (s:gsub("[^%w%-%._~]", function(c)
      if plus and c == " " then return "+" end
      return ("%%%02X"):format(c:byte())
    end))
  end

  local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local B64URL = B64:sub(1, 62) .. "-_"

  -- Every byte string base64 hides in s: each run of alphabet characters
  -- decoded from each of its first four characters, padding or not.
  local function b64_decodings(s, alphabet)
    local val = {}
    for i = 1, 64 do val[alphabet:byte(i)] = i - 1 end
    local out = {}
    local i = 1
    while i <= #s do
      if val[s:byte(i)] then
        local j = i
        while j <= #s and val[s:byte(j)] do j = j + 1 end
        for off = i, math.min(i + 3, j - 1) do
          local acc, bits, buf = 0, 0, {}
          for k = off, j - 1 do
            acc = (acc << 6 | val[s:byte(k)]) & 0xFFFF
            bits = bits + 6
            if bits >= 8 then
              bits = bits - 8
              buf[#buf + 1] = string.char((acc >> bits) & 0xFF)
            end
          end
          out[#out + 1] = table.concat(buf)
        end
        i = j
      else
        i = i + 1
      end
    end
    return out
  end

  local function hex_decodings(s)
    local out = {}
    for run in s:gmatch("%x+") do
      for off = 1, 2 do
        local r = run:sub(off)
        r = r:sub(1, #r - #r % 2)
        out[#out + 1] = (r:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
      end
    end
    return out
  end

  local FILLER = "abcXYZ019 +/=-_%:.,;\"'{}[]\n\t"

  local function encode(s, form)
    local pre, suf = bytes(0, 5), bytes(0, 5)
    if form == 1 then return s end
    if form == 2 then return crypto.hex(s) end
    if form == 3 then return crypto.hex(s):upper() end
    if form == 4 then return urlenc(s, false) end
    if form == 5 then return urlenc(s, true) end
    local b = crypto.b64(pre .. s .. suf)
    if form == 6 then return b end
    if form == 7 then return (b:gsub("=+$", "")) end
    return (b:gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
  end
  local FORMS = { "raw", "hex", "HEX", "url-encoded", "form-encoded", "base64", "base64 unpadded", "base64url" }

  it("random secrets in random encodings inside random text are masked: no decoding of the output gives one back, 1500 cases", function()
    reseed(17)
    for case = 1, 1500 do
      redact.clear()
      local secrets = {}
      for i = 1, rand(1, 3) do
        secrets[i] = rand(2) == 1 and bytes(6, 40) or text("abcdefghijklmnopqrstuvwxyz0123456789-_+/= ", 6, 40)
        redact.add(secrets[i])
      end
      local parts, used = {}, {}
      for _ = 1, rand(1, 4) do
        local s, form = pick(secrets), rand(#FORMS)
        parts[#parts + 1] = text(FILLER, 0, 12)
        parts[#parts + 1] = encode(s, form)
        used[#used + 1] = FORMS[form]
      end
      parts[#parts + 1] = text(FILLER, 0, 12)
      local input = table.concat(parts)
      local out = redact.mask(input)
      local shown = {}
      for i, s in ipairs(secrets) do shown[i] = ("%q"):format(s) end
      local detail = ("secrets %s, forms %s, input %q, output %q"):format(table.concat(shown, ", "),
        table.concat(used, ", "), input, out)
      assert(out ~= input, where(case, "nothing masked: " .. detail))
      for _, s in ipairs(secrets) do
        assert(not out:find(s, 1, true), where(case, "raw secret left: " .. detail))
        assert(not out:find(urlenc(s, false), 1, true) and not out:find(urlenc(s, true), 1, true),
          where(case, "url-encoded secret left: " .. detail))
        for _, d in ipairs(hex_decodings(out)) do
          assert(not d:find(s, 1, true), where(case, "hex of a secret left: " .. detail))
        end
        for _, alphabet in ipairs({ B64, B64URL }) do
          for _, d in ipairs(b64_decodings(out, alphabet)) do
            assert(not d:find(s, 1, true), where(case, "base64 of a secret left: " .. detail))
          end
        end
      end
      assert(out:find("[sha256:", 1, true), where(case, detail))
    end
  end)

  it("text holding no secret comes back unchanged, and masking is idempotent, 500 cases", function()
    reseed(18)
    for case = 1, 500 do
      redact.clear()
      local s = text("abcdefghijklmnopqrstuvwxyz0123456789", 6, 30)
      redact.add(s)
      local plain = text("ABCDEFGHIJKLMNOPQRSTUVWXYZ !?.,\n", 0, 80)
      assert(redact.mask(plain) == plain, where(case, ("%q changed"):format(plain)))
      local once = redact.mask(plain .. s .. plain .. crypto.b64(s))
      assert(redact.mask(once) == once, where(case, ("%q masked again"):format(once)))
    end
  end)
end)
