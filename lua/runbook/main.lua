-- main.lua — the entry point the C host calls with the command-line words.
-- Cheap commands (--version, exec) are handled here before anything heavy
-- (argparse, the engine) is loaded, so they start as fast as plain Lua.
-- Returns the process exit code.

local function exec(args)
  local file = args[2]
  if not file then
    io.stderr:write("runbook exec: missing FILE (usage: runbook exec FILE.lua [ARGS...])\n")
    return 2
  end
  local chunk, err = loadfile(file)
  if not chunk then
    io.stderr:write("runbook exec: ", err, "\n")
    return 2
  end
  -- the script sees arg[0] = FILE, arg[1..] = its own arguments, like lua5.4
  local script_arg = { [0] = file }
  for i = 3, #args do script_arg[#script_arg + 1] = args[i] end
  _G.arg = script_arg
  local ok, res = xpcall(chunk, debug.traceback, table.unpack(script_arg))
  if not ok then
    io.stderr:write("runbook exec: ", tostring(res), "\n")
    return 1
  end
  if math.type(res) == "integer" then return res end
  return 0
end

return function(args)
  local cmd = args[1]
  if cmd == "--version" or cmd == "version" then
    io.stdout:write("runbook ", package.runbook_version, " (", _VERSION, ")\n")
    return 0
  elseif cmd == "exec" then
    return exec(args)
  end
  -- every other command loads the CLI, and `run` the engine and the
  -- journal: ~1 MB of heap, backed in one call instead of ~250 page faults
  -- (see runbook.heap)
  require("runbook.heap").reserve(1 << 20)
  local ok, cli = pcall(require, "runbook.cli")
  if not ok then
    io.stderr:write("runbook: this build has no command line yet (try --version or exec FILE)\n")
    return 2
  end
  return cli.main(args)
end
