-- dotenv.lua — read and update env files (.env, .dev.vars, the canonical
-- queue.env) without ever losing one.
--
-- A parsed doc keeps every original line, so render(parse(x)) == x byte for
-- byte (CRLF, a missing final newline, a UTF-8 BOM, odd spacing, comments);
-- set/delete rewrite only the lines of the key they touch. Anything the
-- grammar does not cover is an error naming the line, never a guess: a
-- wrong guess about a secrets file is a lost key.
--
-- Grammar (the dotenv wrangler and node read; see parse below):
--   blank lines; `# comments`; [export ]KEY=value with
--   KEY = [A-Za-z_][A-Za-z0-9_.-]*, spaces/tabs allowed around `=`;
--   value: unquoted (trimmed; whitespace then `#` starts a comment),
--          'single' (literal), "double" (\n \r \" \\ escapes; any other
--          backslash stays literal), `backtick` (literal); a quoted value may
--          span lines, and may be followed by spaces and a # comment.
--
-- Error messages never quote the file's text: a malformed line may be half
-- a secret.
--
-- Interoperability notes, which is why set() writes what it writes:
--   * node's dotenv ends an unquoted value at any `#` and does not unescape
--     \" or \\ in double quotes; so set() never writes an unquoted value
--     containing `#`, prefers 'single quotes' for a new key whose value needs
--     quoting, and parse() warns about an unquoted value containing `#`.

local M = {}

local KEY = "[A-Za-z_][A-Za-z0-9_.%-]*"
local MODE_0600 = 384 -- 0600
local GROUP_OTHER = 63 -- 0077
-- Unquoted values set() is willing to write: nothing a shell, node's dotenv
-- or this parser could read differently.
local SAFE_UNQUOTED = "^[%w_%-%.:/+=@,%%~^]*$"
local BOM = "\239\187\191"

---@class dotenv.Entry
---@field kind "blank"|"comment"|"pair"
---@field raw string    every byte of the entry's lines, line endings included
---@field key? string
---@field value? string
---@field style? string  "", "'", '"' or "`"
---@field head? string   text before the value (indent, export, key, =, spaces)
---@field tail? string   text after the value on its last line (spaces, # comment)
---@field eol? string    line ending of the entry's last line ("\n", "\r\n" or "")

---@class dotenv.Doc
---@field entries dotenv.Entry[]
---@field eol string       line ending used for new lines
---@field bom boolean
---@field warnings string[]
---@field path? string
local Doc = {}
Doc.__index = Doc

-- Physical lines: { content, eol } with eol "\n", "\r\n" or "" (last line).
local function split_lines(text)
  local lines, pos, n = {}, 1, #text
  while pos <= n do
    local nl = text:find("\n", pos, true)
    if nl then
      if nl > pos and text:byte(nl - 1) == 13 then
        lines[#lines + 1] = { text:sub(pos, nl - 2), "\r\n" }
      else
        lines[#lines + 1] = { text:sub(pos, nl - 1), "\n" }
      end
      pos = nl + 1
    else
      lines[#lines + 1] = { text:sub(pos), "" }
      pos = n + 1
    end
  end
  return lines
end

local ESCAPES = { n = "\n", r = "\r", ['"'] = '"', ["\\"] = "\\" }

-- Scan a double-quoted value on one line from position p. Returns the
-- closing quote's position (or nil if the line ends first), appending the
-- decoded text to buf.
local function scan_double(line, p, buf)
  while true do
    local a = line:find('[\\"]', p)
    if not a then
      buf[#buf + 1] = line:sub(p)
      return nil
    end
    buf[#buf + 1] = line:sub(p, a - 1)
    if line:byte(a) == 34 then return a end
    local nx = line:sub(a + 1, a + 1)
    if nx == "" then -- a backslash ending the line stays literal
      buf[#buf + 1] = "\\"
      return nil
    end
    buf[#buf + 1] = ESCAPES[nx] or ("\\" .. nx)
    p = a + 2
  end
end

local function fail(lineno, why)
  return nil, ("line %d: %s"):format(lineno, why), "EPARSE"
end

local STYLE_NAME = { ['"'] = "double-quoted", ["'"] = "single-quoted", ["`"] = "backtick-quoted" }

-- Parse a pair starting on physical line i. Returns the entry and the index
-- of its last physical line, or nil, msg, code.
local function parse_pair(lines, i, warnings)
  local content = lines[i][1]
  local _, eq, key = content:find("^[ \t]*export[ \t]+(" .. KEY .. ")[ \t]*=")
  if not eq then _, eq, key = content:find("^[ \t]*(" .. KEY .. ")[ \t]*=") end
  if not eq then
    if content:find("\r", 1, true) then return fail(i, "stray carriage return (not part of a CRLF line ending)") end
    return fail(i, "expected KEY=value (KEY is [A-Za-z_][A-Za-z0-9_.-]*), a # comment or a blank line")
  end
  local ws_end = select(2, content:find("^[ \t]*", eq + 1))
  local q = content:sub(ws_end + 1, ws_end + 1)
  local e = { kind = "pair", key = key }

  if q == '"' or q == "'" or q == "`" then
    e.style, e.head = q, content:sub(1, ws_end)
    local buf, j, line, p = {}, i, content, ws_end + 2
    local close
    while true do
      if q == '"' then
        close = scan_double(line, p, buf)
      else
        close = line:find(q, p, true)
        buf[#buf + 1] = line:sub(p, (close or 0) - 1)
      end
      if close then break end
      if j == #lines then
        return fail(i, ("unterminated %s value for %s"):format(STYLE_NAME[q], key))
      end
      buf[#buf + 1] = "\n" -- a line break inside quotes is a newline, whatever the file's line endings
      j = j + 1
      line, p = lines[j][1], 1
    end
    local tail = line:sub(close + 1)
    if not (tail:find("^[ \t]*$") or tail:find("^[ \t]*#")) then
      return fail(j, ("unexpected text after the closing quote of %s"):format(key))
    end
    e.value, e.tail, e.eol = table.concat(buf), tail, lines[j][2]
    local raw = {}
    for k = i, j do raw[#raw + 1] = lines[k][1] .. lines[k][2] end
    e.raw = table.concat(raw)
    return e, j
  end

  local rest = content:sub(ws_end + 1)
  if rest:sub(1, 1) == "#" and ws_end > eq then
    -- `KEY= # comment`: an empty value; the spaces belong to the comment so
    -- that a later set() cannot glue the comment onto the value.
    e.head, e.value, e.tail = content:sub(1, eq), "", content:sub(eq + 1)
  else
    local h = rest:find("[ \t]#")
    local vpart, comment = rest, ""
    if h then vpart, comment = rest:sub(1, h - 1), rest:sub(h) end
    local v = vpart:match("^(.-)[ \t]*$")
    e.head, e.value, e.tail = content:sub(1, ws_end), v, vpart:sub(#v + 1) .. comment
  end
  if e.value:find("\r", 1, true) then
    return fail(i, "stray carriage return (not part of a CRLF line ending)")
  end
  if e.value:find("#", 1, true) then
    warnings[#warnings + 1] = ("line %d: the unquoted value of %s contains '#'; node's dotenv (wrangler) "
      .. "reads only the part before it; quote the value"):format(i, key)
  end
  e.style, e.eol, e.raw = "", lines[i][2], content .. lines[i][2]
  return e, i
end

---Parse the text of an env file.
---@param text string
---@return dotenv.Doc|nil doc, string? msg "line N: why", string? code "EPARSE"
function M.parse(text)
  if type(text) ~= "string" then error("dotenv.parse: text must be a string", 2) end
  local bom = text:sub(1, 3) == BOM
  if bom then text = text:sub(4) end
  local lines = split_lines(text)
  local entries, warnings = {}, {}
  local eol
  local i = 1
  while i <= #lines do
    local content, le = lines[i][1], lines[i][2]
    if le ~= "" and not eol then eol = le end
    if content:find("^[ \t]*$") then
      entries[#entries + 1] = { kind = "blank", raw = content .. le }
    elseif content:find("^[ \t]*#") then
      entries[#entries + 1] = { kind = "comment", raw = content .. le }
    else
      local e, last, code = parse_pair(lines, i, warnings)
      if not e then return nil, last, code end
      entries[#entries + 1] = e
      i = last
    end
    i = i + 1
  end
  local doc = setmetatable({ entries = entries, eol = eol or "\n", bom = bom, warnings = warnings }, Doc)
  return doc
end

---The text of a doc: byte-identical to the parsed input when nothing changed.
---@param doc dotenv.Doc
---@return string
function M.render(doc)
  if getmetatable(doc) ~= Doc then error("dotenv.render: not a dotenv doc", 2) end
  local out = {}
  if doc.bom then out[1] = BOM end
  for _, e in ipairs(doc.entries) do out[#out + 1] = e.raw end
  return table.concat(out)
end

---@return string
function Doc:render() return M.render(self) end

local function check_key(fname, key)
  if type(key) ~= "string" or not key:find("^" .. KEY .. "$") then
    error(("dotenv: %s: invalid key (must match [A-Za-z_][A-Za-z0-9_.-]*)"):format(fname), 3)
  end
end

---Value of a key (its last occurrence), or nil.
---@param key string
---@return string|nil
function Doc:get(key)
  local entries = self.entries
  for k = #entries, 1, -1 do
    local e = entries[k]
    if e.key == key then return e.value end
  end
  return nil
end

---Keys in order of first appearance, each once.
---@return string[]
function Doc:keys()
  local out, seen = {}, {}
  for _, e in ipairs(self.entries) do
    if e.key and not seen[e.key] then
      seen[e.key] = true
      out[#out + 1] = e.key
    end
  end
  return out
end

-- 1-based line number where entry idx starts.
local function line_of(doc, idx)
  local n = 1
  for k = 1, idx - 1 do
    local _, c = doc.entries[k].raw:gsub("\n", "")
    n = n + c
  end
  return n
end

local function allowed(style, v)
  if style == "" then return v:find(SAFE_UNQUOTED) ~= nil end
  if style == "'" or style == "`" then return not v:find("[\r\n" .. style .. "]") end
  return true
end

local DQ = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r" }

local function encode(style, v)
  if style == '"' then return '"' .. (v:gsub('[\\"\n\r]', DQ)) .. '"' end
  return style .. v .. style
end

-- Rebuild entry e with value v in style; verify by parsing the result, so a
-- value this module cannot write faithfully is never written.
local function reencode(e, v, style)
  local raw = e.head .. encode(style, v) .. e.tail .. e.eol
  local d = M.parse(raw)
  local p = d and d.entries[1]
  if not (p and #d.entries == 1 and p.key == e.key and p.value == v) then return false end
  e.raw, e.value, e.style = raw, v, style
  return true
end

---Set a key. An existing key keeps its line (indent, export, spacing,
---comment) and its quoting style when the value allows it, else it gets
---double quotes with escapes; a new key is appended at the end. With
---duplicate keys the last occurrence is updated and the second result says so.
---@param key string
---@param value string
---@return dotenv.Doc self, string? note
function Doc:set(key, value)
  check_key("set", key)
  if type(value) ~= "string" then error("dotenv: set: value must be a string", 2) end
  local entries = self.entries
  local found = {}
  for k, e in ipairs(entries) do
    if e.key == key then found[#found + 1] = k end
  end
  local note
  if #found > 0 then
    local e = entries[found[#found]]
    if not (allowed(e.style, value) and reencode(e, value, e.style)) and not reencode(e, value, '"') then
      error("dotenv: set: cannot encode the value of " .. key, 2) -- unreachable: double quotes take anything
    end
    if #found > 1 then
      local nums = {}
      for _, k in ipairs(found) do nums[#nums + 1] = tostring(line_of(self, k)) end
      note = ("%s appears %d times (lines %s); updated the last one"):format(key, #found, table.concat(nums, ", "))
    end
    return self, note
  end
  -- A new key: `export` when every other key has it (a file meant to be
  -- sourced by a shell), end the previous last line properly, and quote
  -- only when needed.
  local export, pairs_seen = "export ", 0
  for _, e in ipairs(entries) do
    if e.kind == "pair" then
      pairs_seen = pairs_seen + 1
      if not e.head:find("^[ \t]*export[ \t]") then export = "" end
    end
  end
  if pairs_seen == 0 then export = "" end
  local last = entries[#entries]
  if last and last.raw:sub(-1) ~= "\n" then
    last.raw = last.raw .. self.eol
    if last.kind == "pair" then last.eol = self.eol end
  end
  local e = { kind = "pair", key = key, head = export .. key .. "=", tail = "", eol = self.eol }
  local style = allowed("", value) and "" or allowed("'", value) and "'" or '"'
  if not reencode(e, value, style) and not reencode(e, value, '"') then
    error("dotenv: set: cannot encode the value of " .. key, 2)
  end
  entries[#entries + 1] = e
  return self
end

---Delete every occurrence of a key (each with all of its lines).
---@param key string
---@return boolean removed, integer count
function Doc:delete(key)
  check_key("delete", key)
  local kept, n = {}, 0
  for _, e in ipairs(self.entries) do
    if e.key == key then n = n + 1 else kept[#kept + 1] = e end
  end
  self.entries = kept
  return n > 0, n
end

-- ---------------------------------------------------------------- files

local function symlink_refusal(path)
  return ("dotenv: will not follow a symlinked env file: %s (edit the file it points to)"):format(path)
end

local function check_opts(fname, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(("dotenv.%s: opts must be a table"):format(fname), 3) end
  if opts.secret ~= nil and type(opts.secret) ~= "function" then
    error(("dotenv.%s: opts.secret must be a function"):format(fname), 3)
  end
  return opts
end

local function read_checked(path, opts)
  local fs = require("runbook.fs")
  local st, msg, code = fs.stat(path, { nofollow = true })
  if not st then return nil, msg, code end
  if st.type == "link" then return nil, symlink_refusal(path), "ELOOP" end
  if st.type ~= "file" then
    return nil, ("dotenv: %s is not a regular file (%s)"):format(path, tostring(st.type)), "EINVAL"
  end
  local warnings = {}
  local perm = st.mode & 511
  if perm & GROUP_OTHER ~= 0 then
    if opts.fix_mode == false then
      return nil, ("dotenv: %s has mode %04o: group/other can read or write it; refusing (chmod 600 it)")
        :format(path, perm), "EPERM"
    end
    if opts.fix_mode == "report" then
      -- dry-run: say what a real run would do, change nothing
      warnings[1] = ("dotenv: %s has mode %04o (group/other can read or write it); a real run changes it to 0600")
        :format(path, perm)
    else
      local ok
      ok, msg, code = fs.chmod(path, MODE_0600)
      if ok == nil and msg ~= nil then return nil, msg, code end
      warnings[1] = ("dotenv: %s had mode %04o (group/other could read or write it); changed to 0600")
        :format(path, perm)
    end
  end
  local text
  text, msg, code = fs.read(path, { nofollow = true })
  if not text then
    if code == "ELOOP" then return nil, symlink_refusal(path), "ELOOP" end -- swapped in since stat
    return nil, msg, code
  end
  local doc, perr = M.parse(text)
  if not doc then return nil, ("dotenv: %s: %s"):format(path, perr), "EPARSE" end
  for _, w in ipairs(doc.warnings) do warnings[#warnings + 1] = ("dotenv: %s: %s"):format(path, w) end
  doc.warnings, doc.path = warnings, path
  if opts.secret then
    for _, e in ipairs(doc.entries) do
      if e.kind == "pair" then opts.secret(e.value, e.key) end
    end
  end
  return doc
end

---Read and parse an env file. Refuses a symlink (ELOOP); a file group/other
---can read or write is chmod'ed to 0600 with a note in doc.warnings, or
---refused with EPERM when opts.fix_mode == false; a malformed file gives the
---parse error (EPARSE). opts.secret(value, key) is called for every value.
---@param path string
---@param opts? {fix_mode?: boolean|"report", secret?: fun(value: string, key: string)}
---@return dotenv.Doc|nil doc, string? msg, string? code
function M.read(path, opts)
  if type(path) ~= "string" then error("dotenv.read: path must be a string", 2) end
  return read_checked(path, check_opts("read", opts))
end

---Read (same checks as read), apply changes (key → new value, or false to
---delete), and write the file atomically with mode 0600 without following a
---symlink. Never writes when the read or parse failed, nor when nothing
---changed. A missing file is created only with opts.create. Returns the doc
---and which keys changed (names only): {changed, added, removed, written}.
---@param path string
---@param changes table<string, string|false>
---@param opts? {create?: boolean, fix_mode?: boolean, secret?: fun(value: string, key: string)}
---@return dotenv.Doc|nil doc, table|string report_or_msg, string? code
function M.update(path, changes, opts)
  if type(path) ~= "string" then error("dotenv.update: path must be a string", 2) end
  if type(changes) ~= "table" then error("dotenv.update: changes must be a table", 2) end
  opts = check_opts("update", opts)
  local keys = {}
  for k, v in pairs(changes) do
    check_key("update", k)
    if type(v) ~= "string" and v ~= false then
      error(("dotenv.update: the change for %s must be a string or false"):format(k), 2)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys) -- new keys are appended in a stable order

  local doc, msg, code = read_checked(path, opts)
  local create = false
  if not doc then
    if code ~= "ENOENT" or not opts.create then return nil, msg, code end
    doc, create = M.parse(""), true
    doc.path = path
  end

  local report = { changed = {}, added = {}, removed = {}, written = false }
  for _, k in ipairs(keys) do
    local v, old = changes[k], doc:get(k)
    if v == false then
      if old ~= nil then
        doc:delete(k)
        report.removed[#report.removed + 1] = k
      end
    else
      if opts.secret then opts.secret(v, k) end
      if old == nil then
        doc:set(k, v)
        report.added[#report.added + 1] = k
      elseif old ~= v then
        local _, note = doc:set(k, v)
        if note then doc.warnings[#doc.warnings + 1] = ("dotenv: %s: %s"):format(path, note) end
        report.changed[#report.changed + 1] = k
      end
    end
  end
  if create or #report.changed + #report.added + #report.removed > 0 then
    local fs = require("runbook.fs")
    local ok
    ok, msg, code = fs.write_atomic(path, M.render(doc), { mode = MODE_0600, nofollow = true })
    if ok == nil and msg ~= nil then
      if code == "ELOOP" then return nil, symlink_refusal(path), "ELOOP" end
      return nil, msg, code
    end
    report.written = true
  end
  return doc, report
end

return M
