-- queue.lua — the seeds' Queue API probe: GET <url>/api/queue with or
-- without X-API-Key, answering just the status. 401 means the key does not
-- match either of the Worker's QUEUE_API_KEY / ASSISTANT_API_KEY.

local M = {}

---Status of /api/queue with this key (nil key: no header), or 0 and why.
---@return integer status, string|nil why
function M.probe(ctx, url, key, o)
  local headers = key and { ["X-API-Key"] = key } or nil
  local fixture = o and o.fixture
  if fixture == nil and ctx.offline then
    -- offline: a key we know is current answers 200, anything else 401
    fixture = { status = (key and o and o.expect_ok) and 200 or 401, body = "" }
  end
  local r, err = ctx:try_http({ url = url .. "/api/queue", headers = headers, timeout = (o and o.timeout) or 10,
    fixture = fixture })
  if not r then return 0, err end
  return r.status
end

---Poll until the probe answers `want` (secret propagation takes a moment).
function M.expect(ctx, url, key, want, o)
  local last
  ctx:poll({ what = ("/api/queue to answer %d %s"):format(want, key and "with the key" or "without a key"),
    every = 0.25, backoff = 1.5, max_every = 3, timeout = (o and o.timeout) or 30,
    check = function()
      local s, why = M.probe(ctx, url, key, { expect_ok = want == 200 })
      last = s
      return s == want, why or ("HTTP " .. s)
    end })
  return last
end

return M
