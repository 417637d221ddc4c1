-- stdlib.dotenv: env files survive a parse/render round trip byte for byte,
-- set/delete touch only their own key, malformed files are refused with the
-- line number, and the file functions refuse symlinks, fix loose modes and
-- never write a file they could not parse.
local dotenv = require("stdlib.dotenv")

local FIX = "spec/fixtures/dotenv/"

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function parse_ok(text)
  local doc, msg, code = dotenv.parse(text)
  assert(doc, ("parse failed: %s %s"):format(tostring(msg), tostring(code)))
  return doc
end

local function values(doc)
  local out = {}
  for _, k in ipairs(doc:keys()) do out[k] = doc:get(k) end
  return out
end

describe("dotenv.parse / render", function()
  local fixtures = {
    "comments.env", "export.env", "quotes.env", "crlf.env", "no_final_newline.env", "unicode.env",
    "empty.env", "equals.env", "bom.env", "mixed_eol.env", "empty_file.env", "blank_lines.env",
  }
  for _, name in ipairs(fixtures) do
    it("round-trips " .. name .. " byte for byte", function()
      local text = slurp(FIX .. name)
      assert.equals(text, dotenv.render(parse_ok(text)))
    end)
  end

  it("doc:render() is dotenv.render(doc)", function()
    local doc = parse_ok("A=1\r\n")
    doc:set("B", "2")
    assert.equals("A=1\r\nB=2\r\n", doc:render())
  end)

  it("keeps CRLF line endings and a missing final newline (fixtures really have them)", function()
    local crlf = slurp(FIX .. "crlf.env")
    assert.truthy(crlf:find("\r\n", 1, true))
    local doc = parse_ok(crlf)
    assert.same({ A = "1", B = "two\nlines", C = "3" }, values(doc))
    local nofinal = slurp(FIX .. "no_final_newline.env")
    assert.not_equals("\n", nofinal:sub(-1))
    assert.equals("last line has no newline", parse_ok(nofinal):get("B"))
  end)

  it("reads comments, inline comments and # inside an unquoted value", function()
    local doc = parse_ok(slurp(FIX .. "comments.env"))
    assert.same({ "QUEUE_URL", "WORKER" }, doc:keys())
    assert.equals("http://127.0.0.1:8787/queue", doc:get("QUEUE_URL"))
    assert.equals("hub#1", doc:get("WORKER"))
  end)

  it("warns that node's dotenv would cut an unquoted value at #", function()
    local doc = parse_ok(slurp(FIX .. "comments.env"))
    assert.equals(1, #doc.warnings)
    assert.matches("line 6: the unquoted value of WORKER contains '#'", doc.warnings[1], 1, true)
  end)

  it("reads the export prefix, and export as a key name", function()
    local doc = parse_ok(slurp(FIX .. "export.env"))
    assert.same({ "QUEUE_API_KEY", "SPACED", "export", "exportFOO" }, doc:keys())
    assert.same({ QUEUE_API_KEY = "0123456789abcdef", SPACED = "value with spaces",
      export = "not-a-prefix", exportFOO = "bar" }, values(doc))
  end)

  it("reads single (literal), double (escapes, multi-line) and backtick quotes", function()
    local doc = parse_ok(slurp(FIX .. "quotes.env"))
    assert.same({
      SINGLE = "literal $HOME \\n # not a comment",
      DOUBLE = 'tab\\there "quoted" back\\slash new\nline',
      BACKTICK = [[it's "both"]],
      EMPTY_SINGLE = "",
      EMPTY_DOUBLE = "",
      MULTI = "-----BEGIN KEY-----\nabc\n-----END KEY-----",
      MULTI_SINGLE = "line one\nline two",
      HASH_IN_QUOTES = "a # b",
      GLUED = "x",
    }, values(doc))
  end)

  it("reads unicode, empty values, = inside values and a BOM", function()
    assert.same({ GREETING = "こんにちは", QUOTED = "Grüße, 世界 🌏", NOTE = "ünïcödé" },
      values(parse_ok(slurp(FIX .. "unicode.env"))))
    assert.same({ EMPTY = "", EMPTY_TRAILING_SPACE = "", EMPTY_WITH_COMMENT = "", SPACE_AROUND = "value" },
      values(parse_ok(slurp(FIX .. "empty.env"))))
    assert.same({ BASE64 = "YWJjZGVm==", URL = "https://example.test/?a=1&b=2", QUOTED_EQ = "k=v=w" },
      values(parse_ok(slurp(FIX .. "equals.env"))))
    assert.same({ FIRST = "after a BOM", SECOND = "2" }, values(parse_ok(slurp(FIX .. "bom.env"))))
  end)

  it("a multi-line value in a CRLF file reads as \\n and keeps its CRLF bytes", function()
    local text = 'K="a\r\nb"\r\n'
    local doc = parse_ok(text)
    assert.equals("a\nb", doc:get("K"))
    assert.equals(text, dotenv.render(doc))
  end)

  it("keys() lists each key once in order of first appearance; get() returns the last", function()
    local doc = parse_ok("B=1\nA=2\nB=3\n")
    assert.same({ "B", "A" }, doc:keys())
    assert.equals("3", doc:get("B"))
    assert.is_nil(doc:get("C"))
  end)

  describe("rejects what it does not understand, naming the line", function()
    local cases = {
      { "a line without =", "A=1\nB=2\njust some words\n", 3 },
      { "export without a value", "export A\n", 1 },
      { "a key starting with a digit", "# c\n1A=x\n", 2 },
      { "a key with a space", "MY KEY=x\n", 1 },
      { "a unicode key", "CLÉ=x\n", 1 },
      { "an unterminated double quote (truncated file)", 'A=1\nB="abc\nC=3\n', 2 },
      { "an unterminated single quote", "A='abc\n", 1 },
      { "an unterminated backtick", "A=`abc", 1 },
      { "text after a closing quote", 'A="abc"def\n', 1 },
      { "text after a multi-line closing quote", 'A="abc\ndef" x\n', 2 },
      { "an unquoted value continued on the next line (PEM pasted bare)", "K=-----BEGIN\nMIIBOgIBAAJB\n", 2 },
      { "a stray carriage return in a value", "A=a\rb\n", 1 },
      { "a yaml-style colon", "A: b\n", 1 },
      { "an escaped quote that leaves the value open", 'A="abc\\"\n', 1 },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local doc, msg, code = dotenv.parse(c[2])
        assert.is_nil(doc)
        assert.equals("EPARSE", code)
        assert.matches("^line " .. c[3] .. ": ", msg)
      end)
    end

    it("without quoting the line (it may be part of a secret)", function()
      local _, msg = dotenv.parse("A=1\nsuper-secret-token-value\n")
      assert.is_nil(msg:find("super-secret", 1, true))
    end)
  end)

  it("raises on a non-string", function()
    assert.has_error(function() dotenv.parse(nil) end)
    assert.has_error(function() dotenv.render({}) end)
  end)
end)

describe("doc:set / doc:delete", function()
  it("replaces a value in place keeping export, spacing, comment, CRLF and neighbours", function()
    local text = "# head\r\nexport  A = old   # keep me\r\nB='x'\r\n"
    local doc = parse_ok(text)
    doc:set("A", "new")
    assert.equals("# head\r\nexport  A = new   # keep me\r\nB='x'\r\n", dotenv.render(doc))
  end)

  it("keeps the quoting style when the value allows it", function()
    local doc = parse_ok("S='a'\nD=\"b\"\nT=`c`\nU=d\n")
    doc:set("S", "has \"double\" and #")
    doc:set("D", "x y")
    doc:set("T", "it's")
    doc:set("U", "plain-value_1.2")
    assert.equals("S='has \"double\" and #'\nD=\"x y\"\nT=`it's`\nU=plain-value_1.2\n", dotenv.render(doc))
  end)

  it("switches to double quotes with escapes when the style cannot hold the value", function()
    local doc = parse_ok("S='a'\nT=`b`\nU=c # note\n")
    doc:set("S", "it's")
    doc:set("T", "line1\nline2")
    doc:set("U", 'needs "quotes" \\ and # and spaces')
    assert.equals("S=\"it's\"\nT=\"line1\\nline2\"\nU=\"needs \\\"quotes\\\" \\\\ and # and spaces\" # note\n",
      dotenv.render(doc))
    local again = parse_ok(dotenv.render(doc))
    assert.equals("it's", again:get("S"))
    assert.equals("line1\nline2", again:get("T"))
    assert.equals('needs "quotes" \\ and # and spaces', again:get("U"))
  end)

  it("replaces a multi-line value with all of its lines", function()
    local doc = parse_ok('A=1\nPEM="-----BEGIN\nabc\n-----END" # pem\nZ=2\n')
    doc:set("PEM", "short")
    assert.equals('A=1\nPEM="short" # pem\nZ=2\n', dotenv.render(doc))
  end)

  it("an empty value with a comment can be set without swallowing the comment", function()
    local doc = parse_ok("A= # fill me in\n")
    doc:set("A", "v")
    assert.equals("A=v # fill me in\n", dotenv.render(doc))
    assert.equals("v", parse_ok(dotenv.render(doc)):get("A"))
  end)

  it("appends a new key at the end, ending an unterminated last line first", function()
    local doc = parse_ok("A=1\r\nB=2")
    doc:set("C", "3")
    doc:set("D", "two words")
    assert.equals("A=1\r\nB=2\r\nC=3\r\nD='two words'\r\n", dotenv.render(doc))
  end)

  it("a new key gets export only when every other key has it", function()
    local doc = parse_ok("export A=1\n# c\n  export B=2\n")
    doc:set("C", "3")
    assert.equals("export A=1\n# c\n  export B=2\nexport C=3\n", dotenv.render(doc))
    doc = parse_ok("export A=1\nB=2\n")
    doc:set("C", "3")
    assert.equals("export A=1\nB=2\nC=3\n", dotenv.render(doc))
  end)

  it("a duplicate key: updates the last occurrence and says so", function()
    local doc = parse_ok("K=1\nA=x\nK=2\n")
    local self, note = doc:set("K", "3")
    assert.equals(doc, self)
    assert.equals("K=1\nA=x\nK=3\n", dotenv.render(doc))
    assert.matches("K appears 2 times (lines 1, 3); updated the last one", note, 1, true)
    local _, none = doc:set("A", "y")
    assert.is_nil(none)
  end)

  it("delete removes every occurrence and only those lines", function()
    local doc = parse_ok('# c\nK=1\nA="m\nl"\nK=2 # dup\nB=3')
    assert.same({ true, 2 }, { doc:delete("K") })
    assert.equals('# c\nA="m\nl"\nB=3', dotenv.render(doc))
    assert.same({ true, 1 }, { doc:delete("A") })
    assert.equals("# c\nB=3", dotenv.render(doc))
    assert.same({ false, 0 }, { doc:delete("NOPE") })
  end)

  it("raises on an invalid key or a non-string value", function()
    local doc = parse_ok("")
    assert.has_error(function() doc:set("1BAD", "x") end)
    assert.has_error(function() doc:set("A B", "x") end)
    assert.has_error(function() doc:set("A", 1) end)
    assert.has_error(function() doc:delete("A=") end)
  end)
end)

-- ------------------------------------------------------------ properties

describe("dotenv properties (random docs from the grammar)", function()
  local seed = tonumber(os.getenv("DOTENV_SEED") or "") or 20261122
  local rand = math.random

  local function pick(s)
    if type(s) == "string" then
      local i = rand(#s)
      return s:sub(i, i)
    end
    return s[rand(#s)]
  end

  local KEY_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
  local KEY_REST = KEY_FIRST .. "0123456789.-"
  local function gen_key()
    local t = { pick(KEY_FIRST) }
    for _ = 2, rand(1, 6) do t[#t + 1] = pick(KEY_REST) end
    return table.concat(t)
  end
  local function ws() return pick({ "", "", " ", "  ", "\t", " \t " }) end
  local function ws1() return pick({ " ", "  ", "\t" }) end
  local function eol() return pick({ "\n", "\n", "\r\n" }) end
  local COMMENT = { "a", "b", " ", "#", "'", '"', "`", "=", "é", "日", "\\", "\t" }
  local function comment()
    local t = {}
    for _ = 1, rand(0, 8) do t[#t + 1] = pick(COMMENT) end
    return table.concat(t)
  end

  local UNQ = { "a", "Z", "0", "9", "=", "-", "_", "/", ":", ".", "'", '"', "`", "#", "\\", " ", "\t", "é", "日", "$" }
  local function gen_unquoted()
    while true do
      local t = {}
      for _ = 1, rand(0, 10) do t[#t + 1] = pick(UNQ) end
      local v = table.concat(t)
      if not (v:find("^[ \t'\"`]") or v:find("[ \t]$") or v:find("[ \t]#")) then return v end
    end
  end

  -- atoms for quoted values: { raw text, decoded value }; "NL" is a line break
  local DQ = { { "a", "a" }, { " ", " " }, { "#", "#" }, { "'", "'" }, { "`", "`" }, { '\\"', '"' },
    { "\\\\", "\\" }, { "\\n", "\n" }, { "\\r", "\r" }, { "\\t", "\\t" }, { "é", "é" }, { "=", "=" },
    { "NL", "\n" }, { "\\NL", "\\\n" } }
  local SQ = { { "a", "a" }, { " ", " " }, { "#", "#" }, { '"', '"' }, { "`", "`" }, { "\\", "\\" },
    { "\\n", "\\n" }, { "é", "é" }, { "$x", "$x" }, { "NL", "\n" } }
  local BQ = { { "a", "a" }, { " ", " " }, { "#", "#" }, { '"', '"' }, { "'", "'" }, { "\\", "\\" },
    { "日", "日" }, { "NL", "\n" } }
  local function gen_quoted(atoms, q)
    local raw, val = { q }, {}
    for _ = 1, rand(0, 8) do
      local a = pick(atoms)
      local r = a[1]:gsub("NL", eol)
      raw[#raw + 1], val[#val + 1] = r, a[2]
    end
    raw[#raw + 1] = q
    return table.concat(raw), table.concat(val)
  end

  -- Returns text, expected { key → last value }.
  local function gen_doc()
    local out, expect = {}, {}
    if rand(10) == 1 then out[1] = "\239\187\191" end
    local n = rand(0, 12)
    for i = 1, n do
      local kind = rand(6)
      local line
      if kind == 1 then
        line = ws()
      elseif kind == 2 then
        line = ws() .. "#" .. comment()
      else
        local key = gen_key()
        local head = ws() .. (rand(3) == 1 and ("export" .. ws1()) or "") .. key .. ws() .. "="
        local after = ws()
        local value, vraw, tail
        local style = rand(4)
        if style == 1 then
          vraw = gen_unquoted()
          value = vraw
          if vraw:sub(1, 1) == "#" then after = "" end
          tail = pick({ "", ws1(), ws1() .. "#" .. comment() })
          if vraw == "" and after == "" and tail == "" and rand(2) == 1 then tail = ws1() .. "#" .. comment() end
        else
          local atoms, q = ({ DQ, SQ, BQ })[style - 1], ({ '"', "'", "`" })[style - 1]
          vraw, value = gen_quoted(atoms, q)
          tail = ws() .. pick({ "", "#" .. comment() })
        end
        line = head .. after .. vraw .. tail
        expect[key] = value
      end
      out[#out + 1] = line .. ((i < n or rand(3) > 1) and eol() or "")
    end
    return table.concat(out), expect
  end

  local VAL = { "a", "Z", "0", " ", "  ", "#", " #", "'", '"', "`", "\\", "\\n", "\n", "\r\n", "\r", "=", "$HOME",
    "é", "日本", "\t", "${X}" }
  local function gen_value()
    local t = {}
    for _ = 1, rand(0, 8) do t[#t + 1] = pick(VAL) end
    return table.concat(t)
  end

  it("render(parse(x)) == x and get() sees the generated values, 200 docs", function()
    math.randomseed(seed)
    for case = 1, 200 do
      local text, expect = gen_doc()
      local where = ("seed %d case %d text %q"):format(seed, case, text)
      local doc, msg = dotenv.parse(text)
      assert(doc, where .. ": " .. tostring(msg))
      assert.equals(text, dotenv.render(doc), where)
      assert.same(expect, values(doc), where)
    end
  end)

  it("parse(render(set(doc, k, v))):get(k) == v and every other key keeps its value, 200 docs", function()
    math.randomseed(seed + 1)
    for case = 1, 200 do
      local text, expect = gen_doc()
      local doc = parse_ok(text)
      local keys = doc:keys()
      local k = (#keys > 0 and rand(3) > 1) and pick(keys) or gen_key()
      local v = gen_value()
      local where = ("seed %d case %d text %q key %s value %q"):format(seed + 1, case, text, k, v)
      doc:set(k, v)
      local out = dotenv.render(doc)
      local again, msg = dotenv.parse(out)
      assert(again, where .. ": " .. tostring(msg) .. " rendered " .. ("%q"):format(out))
      expect[k] = v
      assert.same(expect, values(again), where)
      if rand(2) == 1 then
        again:delete(k)
        expect[k] = nil
        assert.same(expect, values(parse_ok(dotenv.render(again))), where)
      end
    end
  end)
end)

-- ------------------------------------------------------------ files

describe("dotenv files", function()
  local fs = require("runbook.fs")
  local dir

  local function mode_of(path)
    local st = assert(fs.stat(path, { nofollow = true }))
    return st.mode & 511
  end

  -- write_atomic renames a new file into place, so a write changes the inode
  local function inode(path)
    local p = assert(io.popen("stat -c %i " .. path))
    local s = p:read("a")
    p:close()
    return assert(tonumber(s))
  end

  local function listing()
    local p = assert(io.popen("ls -A " .. dir))
    local s = p:read("a")
    p:close()
    return s
  end

  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -m 700 " .. dir))
  end)

  after_each(function()
    os.execute("rm -rf " .. dir)
  end)

  local function make(name, text, mode)
    local path = dir .. "/" .. name
    spit(path, text)
    assert(fs.chmod(path, mode or 384))
    return path
  end

  describe("read", function()
    it("parses a 0600 file, with no warnings, and registers every value as a secret", function()
      local path = make(".dev.vars", "QUEUE_API_KEY=abc123def456\nEMPTY=\nOTHER='x y'\n")
      local seen = {}
      local doc, msg = dotenv.read(path, { secret = function(v, k) seen[k] = v end })
      assert(doc, msg)
      assert.equals("abc123def456", doc:get("QUEUE_API_KEY"))
      assert.same({}, doc.warnings)
      assert.same({ QUEUE_API_KEY = "abc123def456", EMPTY = "", OTHER = "x y" }, seen)
    end)

    it("refuses a symlink with ELOOP and names the path", function()
      local target = make("real.env", "A=1\n")
      local link = dir .. "/link.env"
      assert(os.execute("ln -s " .. target .. " " .. link))
      local doc, msg, code = dotenv.read(link)
      assert.is_nil(doc)
      assert.equals("ELOOP", code)
      assert.matches("will not follow a symlinked env file", msg, 1, true)
      assert.matches(link, msg, 1, true)
    end)

    it("fixes a 0644 file to 0600 and says so in doc.warnings", function()
      local path = make("queue.env", "A=1\n", 420)
      local doc = assert(dotenv.read(path))
      assert.equals(384, mode_of(path))
      assert.equals(1, #doc.warnings)
      assert.matches("0644", doc.warnings[1], 1, true)
      assert.matches(path, doc.warnings[1], 1, true)
    end)

    it("refuses a 0640 file with EPERM when fix_mode = false, leaving the mode alone", function()
      local path = make("queue.env", "A=1\n", 416)
      local doc, msg, code = dotenv.read(path, { fix_mode = false })
      assert.is_nil(doc)
      assert.equals("EPERM", code)
      assert.matches(path, msg, 1, true)
      assert.equals(416, mode_of(path))
    end)

    it("returns the parse error with the path and line for a truncated file", function()
      local path = make(".env", 'A=1\nPEM="-----BEGIN\nabc')
      local doc, msg, code = dotenv.read(path)
      assert.is_nil(doc)
      assert.equals("EPARSE", code)
      assert.matches(path .. ": line 2: ", msg, 1, true)
    end)

    it("passes a missing file through as ENOENT", function()
      local doc, _, code = dotenv.read(dir .. "/missing.env")
      assert.is_nil(doc)
      assert.equals("ENOENT", code)
    end)

    it("refuses a directory", function()
      local doc, _, code = dotenv.read(dir)
      assert.is_nil(doc)
      assert.equals("EINVAL", code)
    end)

    it("raises on misuse", function()
      assert.has_error(function() dotenv.read(nil) end)
      assert.has_error(function() dotenv.read(dir .. "/x", { secret = "no" }) end)
    end)
  end)

  describe("update", function()
    it("changes, adds and removes keys, keeps everything else, writes mode 0600", function()
      local path = make("queue.env", "# canonical\r\nexport QUEUE_API_KEY=old # rotated\r\nKEEP='k'\r\nGONE=1\r\n")
      local doc, report = dotenv.update(path, { QUEUE_API_KEY = "new", ADDED = "a b", GONE = false, KEEP = "k" })
      assert(doc, report)
      assert.same({ changed = { "QUEUE_API_KEY" }, added = { "ADDED" }, removed = { "GONE" }, written = true },
        report)
      assert.equals("# canonical\r\nexport QUEUE_API_KEY=new # rotated\r\nKEEP='k'\r\nADDED='a b'\r\n",
        slurp(path))
      assert.equals(384, mode_of(path))
    end)

    it("reports presence, never values", function()
      local path = make("queue.env", "K=secret-old-value\n")
      local _, report = dotenv.update(path, { K = "secret-new-value" })
      local flat = {}
      for name, list in pairs(report) do
        if type(list) == "table" then flat[#flat + 1] = name .. "=" .. table.concat(list, ",") end
      end
      assert.is_nil(table.concat(flat, ";"):find("secret", 1, true))
    end)

    it("registers the new values as secrets too", function()
      local path = make("queue.env", "K=old-value\n")
      local seen = {}
      assert(dotenv.update(path, { K = "new-value" }, { secret = function(v) seen[#seen + 1] = v end }))
      assert.same({ "old-value", "new-value" }, seen)
    end)

    it("makes a 0644 file 0600", function()
      local path = make("queue.env", "K=1\n", 420)
      local doc = assert(dotenv.update(path, { K = "2" }))
      assert.equals(384, mode_of(path))
      assert.equals(1, #doc.warnings)
    end)

    it("does not write when nothing changed", function()
      local path = make("queue.env", "K=1\n")
      local before = inode(path)
      local _, report = dotenv.update(path, { K = "1", ABSENT = false })
      assert.is_false(report.written)
      assert.equals(before, inode(path))
      dotenv.update(path, { K = "2" })
      assert.not_equals(before, inode(path)) -- the check above can tell
    end)

    it("never touches a file it cannot parse (bytes, mode and directory identical)", function()
      local text = 'A=1\nB="unterminated\nC=3\n'
      local path = make(".env", text)
      local before, ino = listing(), inode(path)
      local doc, msg, code = dotenv.update(path, { A = "2" })
      assert.is_nil(doc)
      assert.equals("EPARSE", code)
      assert.matches("line 2", msg, 1, true)
      assert.equals(text, slurp(path))
      assert.equals(384, mode_of(path))
      assert.equals(before, listing())
      assert.equals(ino, inode(path))
    end)

    it("refuses a symlink and leaves its target alone", function()
      local target = make("real.env", "A=1\n")
      local link = dir .. "/link.env"
      assert(os.execute("ln -s " .. target .. " " .. link))
      local doc, msg, code = dotenv.update(link, { A = "2" })
      assert.is_nil(doc)
      assert.equals("ELOOP", code)
      assert.matches(link, msg, 1, true)
      assert.equals("A=1\n", slurp(target))
    end)

    it("refuses a 0644 file with fix_mode = false and writes nothing", function()
      local path = make("queue.env", "A=1\n", 420)
      local doc, _, code = dotenv.update(path, { A = "2" }, { fix_mode = false })
      assert.is_nil(doc)
      assert.equals("EPERM", code)
      assert.equals("A=1\n", slurp(path))
      assert.equals(420, mode_of(path))
    end)

    it("creates a missing file only with opts.create, mode 0600", function()
      local path = dir .. "/new.env"
      local doc, _, code = dotenv.update(path, { A = "1" })
      assert.is_nil(doc)
      assert.equals("ENOENT", code)
      assert.is_nil(io.open(path, "rb"))
      local _, report = assert(dotenv.update(path, { B = "2", A = "1" }, { create = true }))
      assert.same({ "A", "B" }, report.added)
      assert.equals("A=1\nB=2\n", slurp(path))
      assert.equals(384, mode_of(path))
    end)

    it("says when a duplicate key was updated at its last occurrence", function()
      local path = make("queue.env", "K=1\nK=2\n")
      local doc = assert(dotenv.update(path, { K = "3" }))
      assert.equals("K=1\nK=3\n", slurp(path))
      assert.matches("K appears 2 times", doc.warnings[1], 1, true)
    end)

    it("raises on misuse", function()
      assert.has_error(function() dotenv.update(dir .. "/x", { ["1X"] = "v" }) end)
      assert.has_error(function() dotenv.update(dir .. "/x", { X = 1 }) end)
      assert.has_error(function() dotenv.update(dir .. "/x", nil) end)
    end)
  end)
end)
