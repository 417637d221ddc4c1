-- term.lua — the public face of runbook.term.core (terminal and clocks).
-- Re-exports the core and adds the terminal policy: whether to use colour
-- (NO_COLOR, TERM=dumb, not a tty) and a width that honours $COLUMNS.

local core = require("runbook.term.core")

local M = {}

--- Is the fd (or Lua file such as io.stdout) a terminal?
---@param fd integer|file*
---@return boolean
M.isatty = core.isatty

--- One line read from /dev/tty with echo off (without the newline), or
--- nil, msg, "ENOTTY" without a terminal ("EOF", "EINTR" when ^D / ^C).
---@param prompt string|nil
---@return string|nil line, string? msg, string? code
M.prompt_secret = core.prompt_secret

--- Wall-clock seconds since the epoch (float).
---@return number
M.now = core.now

--- Monotonic seconds (float; for durations and deadlines).
---@return number
M.monotonic = core.monotonic

--- Sleep; false when cut short by a trapped SIGINT/SIGTERM.
---@param seconds number
---@return boolean
M.sleep = core.sleep

--- Columns to format for: $COLUMNS when it is a positive integer, else the
--- terminal's width on fd (default stdout), else nil.
---@param fd integer|file*|nil
---@return integer|nil
function M.width(fd)
  local cols = tonumber(os.getenv("COLUMNS") or "")
  if cols and cols > 0 and math.type(cols) == "integer" then return cols end
  return core.width(fd)
end

--- Should output to `stream` (default io.stdout) be coloured? Not when
--- NO_COLOR is set to anything non-empty (no-color.org), not when
--- TERM=dumb, not when the stream is not a terminal.
---@param stream integer|file*|nil
---@return boolean
function M.color_enabled(stream)
  local no = os.getenv("NO_COLOR")
  if no and no ~= "" then return false end
  if os.getenv("TERM") == "dumb" then return false end
  return core.isatty(stream or io.stdout)
end

return M
