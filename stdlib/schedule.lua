-- schedule.lua — run a runbook every N minutes: emits a cron line, a
-- systemd service + timer pair, or a launchd plist (the seeds used a
-- LaunchAgent that synced the queue keys every 30 minutes). Emits text; it
-- installs nothing, so an operator sees exactly what will run.

local M = {}

local function xml(s)
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }))
end

local function shq(s)
  if s:match("^[%w%-%._/:=@,+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

---@param o table { runbook, every (seconds), bin, env, args = {...}, log, format, label, workdir }
---@return string|nil text, string|nil err
function M.render(o)
  local every = o.every
  if type(every) ~= "number" or every < 60 or every % 60 ~= 0 then
    return nil, "--every must be a whole number of minutes (at least 1m)"
  end
  local minutes = every // 60
  local argv = { o.bin or "runbook", "run", o.runbook }
  if o.env then argv[#argv + 1] = "--env" argv[#argv + 1] = o.env end
  argv[#argv + 1] = "--yes"
  for _, a in ipairs(o.args or {}) do argv[#argv + 1] = a end
  local label = o.label or ("runbook." .. o.runbook .. (o.env and ("." .. o.env) or ""))
  local log = o.log or ("/tmp/" .. label .. ".log")
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = shq(a) end
  local cmd = table.concat(quoted, " ")
  local fmt = o.format or "cron"
  if fmt == "cron" then
    local spec
    if minutes < 60 and 60 % minutes == 0 then
      spec = ("*/%d * * * *"):format(minutes)
    elseif minutes % 60 == 0 and minutes <= 1440 and 24 % (minutes // 60) == 0 then
      spec = ("0 */%d * * *"):format(minutes // 60)
    else
      return nil, ("cron cannot express every %d minutes evenly; use --format systemd or launchd"):format(minutes)
    end
    local cd = o.workdir and ("cd " .. shq(o.workdir) .. " && ") or ""
    return ("# %s: every %dm\n%s %s%s >> %s 2>&1\n"):format(label, minutes, spec, cd, cmd, shq(log))
  elseif fmt == "systemd" then
    return table.concat({
      "# " .. label .. ".service",
      "[Unit]",
      "Description=runbook " .. o.runbook .. (o.env and (" on " .. o.env) or ""),
      "",
      "[Service]",
      "Type=oneshot",
      o.workdir and ("WorkingDirectory=" .. o.workdir) or nil,
      "ExecStart=" .. cmd,
      "",
      "# " .. label .. ".timer",
      "[Unit]",
      "Description=every " .. minutes .. " minutes: runbook " .. o.runbook,
      "",
      "[Timer]",
      "OnBootSec=" .. minutes .. "min",
      "OnUnitActiveSec=" .. minutes .. "min",
      "Persistent=true",
      "",
      "[Install]",
      "WantedBy=timers.target",
      "",
    }, "\n")
  elseif fmt == "launchd" then
    local args = {}
    for _, a in ipairs(argv) do args[#args + 1] = "    <string>" .. xml(a) .. "</string>" end
    return table.concat({
      '<?xml version="1.0" encoding="UTF-8"?>',
      '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
      '<plist version="1.0">',
      "<dict>",
      "  <key>Label</key>",
      "  <string>" .. xml(label) .. "</string>",
      "  <key>ProgramArguments</key>",
      "  <array>",
      table.concat(args, "\n"),
      "  </array>",
      o.workdir and ("  <key>WorkingDirectory</key>\n  <string>" .. xml(o.workdir) .. "</string>") or nil,
      "  <key>StartInterval</key>",
      "  <integer>" .. every .. "</integer>",
      "  <key>StandardOutPath</key>",
      "  <string>" .. xml(log) .. "</string>",
      "  <key>StandardErrorPath</key>",
      "  <string>" .. xml(log) .. "</string>",
      "</dict>",
      "</plist>",
      "",
    }, "\n")
  end
  return nil, "unknown format " .. tostring(fmt) .. " (cron, systemd or launchd)"
end

return M
