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
---With follow (one byte), only the occurrences that byte comes after,
---blanks allowed between (follow "(": calls), and a fifth array: where it is.
---@param follow string|nil
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

---The parts of JavaScript/TypeScript source that are not code, up to
---limit: comments and the insides of string, template (not its ${...}) and
---regex literals, as sorted inclusive ranges S[i]..E[i] (E < S: an empty
---literal). A literal starting at or before limit is given whole.
---@param s string
---@param limit integer|nil  default #s
---@return integer[] S, integer[] E, integer n
M.js_lex = core.js_lex

---For each of the ascending positions, whether js_lex puts it in code (not
---in a comment or a literal): one pass that stops once all are decided.
---@param s string
---@param positions integer[]
---@return boolean[]
M.js_in_code = core.js_in_code

---The top-level arguments of the call whose "(" is at open, strings,
---templates, regexes, comments and brackets skipped whole: a flat array
---{first1, last1, first2, last2, ...} of each argument without its blanks
---(first > last: blank) and the closing ")". close is nil when the call does
---not close within window bytes (default 8000); ranges then holds the
---arguments a comma ended.
---@param s string
---@param open integer
---@param window integer|nil
---@return integer[] ranges, integer|nil close
M.js_args = core.js_args

---Going back from p: the first "{" whose block holds p (braces on the way
---balanced), and how many braces were looked at; nil (and that count) when
---the text starts first or budget braces (default 400) were looked at.
---Braces in strings and comments count: a cheap outline, not a parse.
---@return integer|nil pos, integer used
M.js_open_before = core.js_open_before

---The head of the block whose "{" follows position e, without blanks: back
---to the last ";", "{", "}" or newline, across lines when its line is empty
---or closes a parenthesis opened earlier (at most 6 lines back).
---@return integer first, integer last  (first > last: empty)
M.js_block_head = core.js_block_head

---From just inside a "{" or "${": the position after the "}" closing it
---(#s + 1 when none does).
---@return integer
M.js_expr_end = core.js_expr_end

---The closing quote of the '...' or "..." literal opened at q, or the
---newline that cuts it off (#s + 1 at the end).
---@return integer
M.js_quote_end = core.js_quote_end

return M
