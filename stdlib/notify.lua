-- notify.lua — post a message to a webhook (Slack or the hub's sink) at most
-- once per `min_interval` per dedup key. The last-sent time lives in the
-- journal, so the interval holds across runs and restarts — the seeds' cure
-- for a monitor that spammed Slack on every 401.

local M = {}

M.DEFAULT_INTERVAL = 3600

---Inside a step: returns { sent = bool, suppressed_for = seconds|nil, status }.
---@param ctx table
---@param o table { url, text, dedup_key, min_interval }
function M.send(ctx, o)
  assert(o.url and o.text, "notify.send needs url and text")
  local key = o.dedup_key or o.text
  local interval = o.min_interval or M.DEFAULT_INTERVAL
  if ctx.mode ~= "run" then
    local resp = ctx:post(o.url, "{}", { simulate = { status = 200 }, notification = true })
    return { sent = false, simulated = true, status = resp.status }
  end
  local ok, wait, prev = ctx._J:notify_gate(key, interval)
  if not ok then
    ctx:log("notification suppressed (same key sent %.0f s ago; next allowed in %.0f s)", interval - wait, wait)
    return { sent = false, suppressed_for = wait }
  end
  local cjson = require("cjson")
  local resp, err = ctx:try_http({ method = "POST", url = o.url, notification = true,
    body = cjson.encode({ text = o.text, dedup_key = key }), headers = { ["Content-Type"] = "application/json" }, timeout = 10 })
  local sent = resp ~= nil and resp.status >= 200 and resp.status < 300
  -- an undelivered message does not count against the interval
  if not sent then ctx._J:notify_release(key, prev) end
  return { sent = sent, status = resp and resp.status, error = err }
end

---Outside a runbook (the daemon): same gate on a journal handle.
---@param journal table  runbook.journal handle
function M.send_direct(journal, o)
  local key = o.dedup_key or o.text
  local ok, wait, prev = journal:notify_gate(key, o.min_interval or M.DEFAULT_INTERVAL)
  if not ok then return { sent = false, suppressed_for = wait } end
  local cjson = require("cjson")
  local resp, err = require("runbook.http").request({ method = "POST", url = o.url,
    headers = { ["Content-Type"] = "application/json" },
    body = cjson.encode({ text = o.text, dedup_key = key }), timeout = 10 })
  local sent = resp ~= nil and resp.status >= 200 and resp.status < 300
  if not sent then journal:notify_release(key, prev) end
  return { sent = sent, status = resp and resp.status, error = err }
end

return M
