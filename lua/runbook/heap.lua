-- heap.lua — the public face of runbook.heap.core (see docs/HOST.md,
-- "heap"): have memory backed before a burst of allocation uses it.

local core = require("runbook.heap.core")

local M = {}

---Back the next `bytes` (at most 16 MiB) of this thread's heap with memory
---now, in one call, instead of a page fault per page as each is first
---touched (~12 µs each on the VMs runbook is measured on, ~1 µs populated
---in bulk). For code about to grow the heap by megabytes. false and why
---when the kernel cannot (before Linux 5.14); nothing else changes then.
---@param bytes integer
---@return boolean ok, string|nil reason
M.reserve = core.reserve

return M
