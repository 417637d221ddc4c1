-- stdlib/slo: seed 003's alert thresholds.
local slo = require("stdlib.slo")
local null = require("cjson").null

describe("stdlib.slo", function()
  local function by_name(results)
    local t = {}
    for _, r in ipairs(results) do t[r.name] = r end
    return t
  end

  it("breaches strictly beyond each threshold, in the seed's direction", function()
    local r = by_name(slo.evaluate({ heartbeat_stale_ratio = 0.25, callback_failed_ratio = 0.11,
      retry_success_rate = 0.70, scrape_success_rate = 0.89 }))
    assert.is_false(r.heartbeat_stale_ratio.breach) -- alert at > 0.25
    assert.is_true(r.callback_failed_ratio.breach)  -- alert at > 0.10
    assert.is_false(r.retry_success_rate.breach)    -- alert at < 0.70
    assert.is_true(r.scrape_success_rate.breach)    -- alert at < 0.90
    assert.equals(2, #slo.breaches(slo.evaluate({ heartbeat_stale_ratio = 0.26, callback_failed_ratio = 0.1,
      retry_success_rate = 0.69, scrape_success_rate = 0.9 })))
  end)

  it("treats null (nothing to rate) as no data, never a breach", function()
    local r = by_name(slo.evaluate({ heartbeat_stale_ratio = null, retry_success_rate = null }))
    assert.is_nil(r.heartbeat_stale_ratio.value)
    assert.is_false(r.heartbeat_stale_ratio.breach)
    assert.matches("^nodata retry success rate +no data %(alert when < 0%.7%)", slo.format(r.retry_success_rate))
  end)

  it("prints value and threshold on every line", function()
    local r = by_name(slo.evaluate({ heartbeat_stale_ratio = 0.4, callback_failed_ratio = 0.05,
      retry_success_rate = 1.0, scrape_success_rate = 0.85 }))
    assert.matches("^BREACH heartbeat stale ratio +0%.4 > 0%.25 +%(heartbeat_stale_ratio; alert window 5 min%)",
      slo.format(r.heartbeat_stale_ratio))
    assert.matches("^ok +callback failed ratio +0%.05 %(alert when > 0%.1%)", slo.format(r.callback_failed_ratio))
    assert.matches("^ok +retry success rate +1 %(alert when < 0%.7%)", slo.format(r.retry_success_rate))
    assert.matches("^BREACH scrape success rate +0%.85 < 0%.9", slo.format(r.scrape_success_rate))
  end)

  it("keys a set of breaches the same whatever their order", function()
    local a = slo.breaches(slo.evaluate({ heartbeat_stale_ratio = 0.9, scrape_success_rate = 0.1 }))
    local b = { a[2], a[1] }
    assert.equals("p:heartbeat_stale_ratio,scrape_success_rate", slo.breach_key("p", a))
    assert.equals(slo.breach_key("p", a), slo.breach_key("p", b))
    assert.not_equals(slo.breach_key("p", a), slo.breach_key("p", { a[1] }))
  end)
end)
