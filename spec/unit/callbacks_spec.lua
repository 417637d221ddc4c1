-- stdlib/callbacks: seed 003's signing scheme, as the hub checks it.
local callbacks = require("stdlib.callbacks")
local crypto = require("runbook.crypto")

describe("stdlib.callbacks", function()
  local secret = "s3cret-for-tests"

  it("signs hex(HMAC-SHA256(secret, timestamp.body))", function()
    -- independent computation through the raw digest
    local want = crypto.hex(crypto.hmac_sha256(secret, "1700000000.{\"eventId\":\"e1\"}"))
    assert.equals(want, callbacks.sign(secret, 1700000000, "{\"eventId\":\"e1\"}"))
    assert.equals(64, #want)
  end)

  it("builds a body and headers that verify", function()
    local body, h = callbacks.signed(secret, { eventId = "e1", runId = "r1" }, { timestamp = 1700000000 })
    assert.equals("1700000000", h["x-worker-timestamp"])
    assert.equals("application/json", h["Content-Type"])
    assert.is_true(callbacks.verify(secret, h, body, { now = 1700000100 }))
    -- header names in any case, a sha256= prefix, as the hub accepts them
    local upper = { ["X-Worker-Timestamp"] = h["x-worker-timestamp"],
      ["X-Worker-Signature"] = "sha256=" .. h["x-worker-signature"]:upper() }
    assert.is_true(callbacks.verify(secret, upper, body, { now = 1700000100 }))
  end)

  it("refuses with the hub's reasons", function()
    local body, h = callbacks.signed(secret, { eventId = "e1" }, { timestamp = 1700000000 })
    local function why(headers, b, now, o)
      local ok, reason = callbacks.verify(secret, headers, b or body, { now = now or 1700000000, tolerance = o })
      assert.is_false(ok)
      return reason
    end
    assert.equals("missing signature", why({ ["x-worker-timestamp"] = "1700000000" }))
    assert.equals("bad timestamp", why({ ["x-worker-timestamp"] = "soon", ["x-worker-signature"] = "ab" }))
    assert.equals("timestamp outside tolerance", why(h, nil, 1700000301))
    assert.equals("timestamp outside tolerance", why(h, nil, 1700000011, 10))
    assert.equals("invalid signature", why(h, body .. " "))
    local _, wrong = callbacks.signed(secret, { eventId = "e1" },
      { timestamp = 1700000000, signature = callbacks.wrong_signature(secret, 1700000000, body) })
    assert.equals("invalid signature", why(wrong))
    -- the other secret's signature is refused under this one
    assert.is_false(callbacks.verify("another", h, body, { now = 1700000000 }))
  end)
end)
