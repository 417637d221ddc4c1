-- worker.lua — the public face of runbook.worker.core: run a Lua function
-- in another thread, in a Lua state of its own (see docs/HOST.md, "worker").
-- For pure computation only (reading files, analysing text): the worker
-- shares the process — its environment, working directory and signal
-- handlers — with the main thread, and must leave them alone.

local core = require("runbook.worker.core")

local M = {}

---Start require(module)[fname](...) in a new thread. Arguments and the
---result are copied: nil, booleans, numbers, strings, counters and tables
---of those.
---@param module string
---@param fname string
---@return userdata worker  with :join() -> result (raises the worker's error)
M.start = core.start

---A counter every thread it is passed to shares: counter:next() returns
---1, 2, 3, ... across all of them (threads take items from one list, none
---twice); counter:value() how many were taken. The one userdata a
---worker's arguments may hold.
---@return userdata counter
M.counter = core.counter

---CPUs this process may run on.
---@return integer
M.cpus = core.cpus

return M
