-- daemon.lua — the seeds' second key holder (the Mac mini's assistant
-- daemon), small enough to read: it loads its own .env once at start, polls
-- GET <QUEUE_URL>/api/queue with X-API-Key, records every poll in
-- <STATE_DIR>/status.json, and reports a failing poll to the notification
-- sink no more often than MIN_NOTIFY_INTERVAL_SEC (default 3600) — so a
-- drifted key means one message an hour, not one per poll. Every kind of
-- failure shares one dedup key: a key drift usually arrives with a restart
-- of the hub (refused connections, then 401s), and that is one incident.
-- The last-sent time is kept in <STATE_DIR>/daemon.db, so a restarted
-- daemon does not notify again within the interval either.
--
-- Run:  runbook exec examples/daemon/daemon.lua ENV_FILE
-- Like the real daemon, it reads ENV_FILE only at start: after the key
-- changes it must be restarted (examples/daemon/daemonctl.lua restart).
local dotenv = require("stdlib.dotenv")
local notify = require("stdlib.notify")
local http = require("runbook.http")
local fs = require("runbook.fs")
local proc = require("runbook.proc.core")
local term = require("runbook.term.core")
local cjson = require("cjson")

local env_file = arg and arg[1]
if not env_file then
  io.stderr:write("usage: runbook exec examples/daemon/daemon.lua ENV_FILE\n")
  return 2
end

local doc, err = dotenv.read(env_file)
if not doc then
  io.stderr:write("daemon: ", err, "\n")
  return 1
end
local function cfg(k, default)
  local v = doc:get(k)
  if v == nil or v == "" then return default end
  return v
end

local key = cfg("ASSISTANT_API_KEY")
local queue_url = assert(cfg("QUEUE_URL"), "daemon: QUEUE_URL is not set in " .. env_file)
local notify_url = cfg("NOTIFY_URL")
local interval = tonumber(cfg("POLL_INTERVAL_SEC", "60"))
local min_notify = tonumber(cfg("MIN_NOTIFY_INTERVAL_SEC", "3600"))
local state_dir = cfg("STATE_DIR", (env_file:match("^(.*)/[^/]*$") or ".") .. "/state")
fs.mkdir_p(state_dir, tonumber("700", 8))

local journal = assert(require("runbook.journal").open(state_dir .. "/daemon.db"))
local fp = key and require("runbook.crypto").fingerprint(key) or "none"
local started = term.now()
local polls, failures = 0, 0

proc.trap_signals()
io.stdout:write(("daemon: pid %d polling %s/api/queue every %g s with key %s\n"):format(
  proc.getpid(), queue_url, interval, fp))
io.stdout:flush()

local function record(status, why)
  local s = cjson.encode({ pid = proc.getpid(), started_at = started, at = term.now(), status = status,
    error = why, polls = polls, failures = failures, key_fingerprint = fp, url = queue_url })
  fs.write_atomic(state_dir .. "/status.json", s, { mode = tonumber("600", 8) })
end

while true do
  polls = polls + 1
  local resp, perr = http.request({ method = "GET", url = queue_url .. "/api/queue",
    headers = { ["X-API-Key"] = key }, timeout = 10 })
  local status = resp and resp.status or 0
  if status ~= 200 then
    failures = failures + 1
    local what = resp and ("HTTP " .. status) or perr
    record(status, what)
    if notify_url then
      local r = notify.send_direct(journal, { url = notify_url, min_interval = min_notify,
        dedup_key = "daemon-poll-failing",
        text = ("Workers Hub 異常 / %s / %s/api/queue"):format(what, queue_url) })
      -- an undelivered notification (the channel down too) is retried on the
      -- next failing poll: notify.send_direct does not count it as sent
      io.stdout:write(("daemon: poll %d failed (%s); notification %s\n"):format(polls, what,
        r.sent and "sent" or (r.suppressed_for and "suppressed")
          or ("not delivered (" .. tostring(r.error or ("HTTP " .. tostring(r.status))) .. ")")))
    end
  else
    record(200)
  end
  io.stdout:flush()
  -- sleep in slices so SIGTERM stops us within a fraction of a second
  local t_end = term.monotonic() + interval
  while term.monotonic() < t_end do
    if proc.pending_signal() then
      journal:close()
      io.stdout:write("daemon: stopping\n")
      return 0
    end
    term.sleep(math.min(0.1, t_end - term.monotonic()))
  end
  if proc.pending_signal() then journal:close() return 0 end
end
