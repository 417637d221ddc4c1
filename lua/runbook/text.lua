-- text.lua — the public face of runbook.text.core: byte searches over a
-- string in one C pass (see docs/HOST.md, "text").

local core = require("runbook.text.core")

local M = {}

---Every occurrence of any of the needles (plain bytes, 1 to 16 non-empty
---strings) in s, in position order, with its line: like `grep -bn -F`.
---@param s string
---@param needles string[]
---@return integer[] pos 1-based positions
---@return integer[] which index of the needle found there (the first listed wins)
---@return integer[] line 1-based line numbers
---@return integer[] lstart position of each line's first byte
M.find_all = core.find_all

---The last position in s[stop..init] (default all of s) whose byte is one
---of set's bytes — with outside, none of them: strrchr for a set of bytes,
---or a backward strspn (the start of a run is last_of(...,true) + 1).
---@param s string
---@param set string  the bytes to look for
---@param init integer|nil  where to start, going backwards (default #s)
---@param stop integer|nil  the lowest position looked at (default 1)
---@param outside boolean|nil  look for a byte not in set
---@return integer|nil pos
M.last_of = core.last_of

return M
