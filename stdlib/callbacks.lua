-- callbacks.lua — seed 003's signed worker callbacks, the same scheme the
-- hub enforces (examples/hub/src/runs.js):
--   x-worker-timestamp: <unix seconds>
--   x-worker-signature: hex(HMAC-SHA256(secret, "<timestamp>.<body>"))
-- the timestamp within a tolerance window (WORKER_CALLBACK_SIGNATURE_
-- TOLERANCE_SEC, 300 s by default) and the body's eventId never delivered
-- twice. Runbooks and specs use it to send valid callbacks and deliberately
-- invalid ones, and to check a signature the way the receiver does.
--
--   local cb = require("stdlib.callbacks")
--   local body, headers = cb.signed(secret, { eventId = "e1", runId = "r1", type = "run.started" })
--   local ok, why = cb.verify(secret, headers, body)

local crypto = require("runbook.crypto")

local M = {}

M.DEFAULT_TOLERANCE = 300

---The signature of a body at a timestamp (64 lower-case hex characters).
---@param secret string
---@param timestamp string|integer  unix seconds
---@param body string
function M.sign(secret, timestamp, body)
  return crypto.hmac_sha256_hex(secret, tostring(timestamp) .. "." .. body)
end

---A JSON body and the headers that sign it.
---@param secret string
---@param event table|string  encoded unless already a string
---@param o table|nil { timestamp = unix s (default now), signature = override (e.g. a wrong one) }
---@return string body, table headers
function M.signed(secret, event, o)
  o = o or {}
  local body = type(event) == "string" and event or require("cjson").encode(event)
  local ts = tostring(math.tointeger(o.timestamp) or o.timestamp or os.time())
  return body, {
    ["Content-Type"] = "application/json",
    ["x-worker-timestamp"] = ts,
    ["x-worker-signature"] = o.signature or M.sign(secret, ts, body),
  }
end

---Check a received callback as the hub does. Header names in any case.
---@param secret string
---@param headers table
---@param body string
---@param o table|nil { tolerance = seconds, now = unix s }
---@return boolean ok, string|nil reason  the hub's reason words
function M.verify(secret, headers, body, o)
  o = o or {}
  local h = {}
  for k, v in pairs(headers or {}) do h[k:lower()] = v end
  local ts = h["x-worker-timestamp"] or ""
  local sig = (h["x-worker-signature"] or ""):lower():gsub("^%s+", ""):gsub("%s+$", "")
  sig = sig:gsub("^sha256=", "")
  if ts == "" or sig == "" then return false, "missing signature" end
  if not ts:match("^%d+$") or #ts > 12 then return false, "bad timestamp" end
  local tol = o.tolerance or M.DEFAULT_TOLERANCE
  if math.abs((o.now or os.time()) - tonumber(ts)) > tol then return false, "timestamp outside tolerance" end
  if not crypto.equal(sig, M.sign(secret, ts, body)) then return false, "invalid signature" end
  return true
end

---A signature that is well-formed but wrong for this body.
function M.wrong_signature(secret, timestamp, body)
  return M.sign(secret .. "-not-the-secret", timestamp, body)
end

return M
