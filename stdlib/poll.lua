-- poll.lua — wait until a condition holds: bounded by a timeout, with
-- backoff, and honouring a server's Retry-After (capped). Used outside a
-- runbook (the daemon, helpers); inside a step use ctx:poll, which adds the
-- mode rules (no waiting on a simulated write).

local M = {}

---@param check fun(): boolean, string|nil, number|nil  ok, why, retry_after seconds
---@param o table|nil { every = 1, timeout = 30, backoff = 1.5, max_every = 30, retry_after_cap = 60, sleep, clock }
---@return boolean ok, string|nil last_why, integer attempts
function M.wait(check, o)
  o = o or {}
  local term = require("runbook.term.core")
  local sleep = o.sleep or term.sleep
  local clock = o.clock or term.monotonic
  local every, timeout = o.every or 1, o.timeout or 30
  local cap = o.retry_after_cap or 60
  local t_end = clock() + timeout
  local attempts = 0
  while true do
    attempts = attempts + 1
    local ok, why, retry_after = check()
    if ok then return true, nil, attempts end
    local last = why
    local wait = every
    if retry_after then wait = math.min(math.max(retry_after, 0), cap) end
    if clock() + wait > t_end then return false, last, attempts end
    sleep(wait)
    every = math.min(every * (o.backoff or 1.5), o.max_every or 30)
  end
end

---Seconds from a Retry-After header (delta-seconds; an HTTP date counts as 60).
function M.retry_after(headers)
  local v = headers and headers["retry-after"]
  if not v then return nil end
  return tonumber(v) or 60
end

return M
