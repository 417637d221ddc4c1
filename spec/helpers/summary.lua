-- summary.lua — busted output handler: the usual terminal report, then one
-- closing line "N passed, N failed[, N skipped]" computed from busted's own
-- counts (errors count as failed), which `make test` ends with.
return function(options)
  local busted = require("busted")
  local term = require("term")
  local tty = io.type(io.stdout) == "file" and term.isatty(io.stdout)
  local inner = require(tty and "busted.outputHandlers.utfTerminal"
    or "busted.outputHandlers.plainTerminal")(options)
  local handler = require("busted.outputHandlers.base")()

  local function closing()
    local passed = handler.successesCount
    local failed = handler.failuresCount + handler.errorsCount
    local skipped = handler.pendingsCount
    local line = ("%d passed, %d failed"):format(passed, failed)
    if skipped > 0 then line = line .. (", %d skipped"):format(skipped) end
    io.stdout:write(line, "\n")
    io.stdout:flush()
    return nil, true
  end

  local subscribe = inner.subscribe
  inner.subscribe = function(self, opts)
    subscribe(self, opts)
    handler:subscribe(opts)
    busted.subscribe({ "exit" }, closing, { priority = 100 })
  end
  return inner
end
