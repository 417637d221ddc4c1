-- Parameters are refused before anything runs, with a message naming them.
local params = require("runbook.params")

local function decl(list) return (params.declare(list, "t")) end

describe("params", function()
  local list = decl({
    { name = "limit", type = "int", default = 200, min = 1, max = 1000, help = "page size" },
    { name = "url", type = "url", required = true },
    { name = "mode", type = "enum", values = { "fast", "safe" }, default = "safe" },
    { name = "every", type = "duration", default = "30m" },
    { name = "token", type = "secret", env = "T_TOKEN" },
    { name = "cleanup", type = "bool", default = false },
  })

  it("resolves defaults, converts types and strips a trailing slash from URLs", function()
    local v = assert(params.resolve(list, { url = "http://127.0.0.1:8787/", limit = "50" },
      { getenv = function() return nil end }))
    assert.equals(50, v.limit)
    assert.equals("http://127.0.0.1:8787", v.url)
    assert.equals("safe", v.mode)
    assert.equals(1800, v.every)
    assert.is_false(v.cleanup)
    assert.is_nil(v.token)
  end)

  it("names a missing required parameter and how to pass it", function()
    local v, err = params.resolve(list, {}, { getenv = function() return nil end })
    assert.is_nil(v)
    assert.matches("missing parameter 'url'", err)
    assert.matches("%-p url=", err)
  end)

  it("rejects a bad value naming the parameter, the value and the rule", function()
    local _, err = params.resolve(list, { url = "ftp://x" })
    assert.matches("invalid parameter 'url' 'ftp://x'", err)
    _, err = params.resolve(list, { url = "http://a", limit = "abc" })
    assert.matches("'limit'.*whole number", err)
    _, err = params.resolve(list, { url = "http://a", limit = "5000" })
    assert.matches("'limit' = 5000: must be between 1 and 1000", err)
    _, err = params.resolve(list, { url = "http://a", mode = "yolo" })
    assert.matches("one of fast, safe", err)
    _, err = params.resolve(list, { url = "http://a", nope = "1" })
    assert.matches("unknown parameter 'nope'.*it takes: limit, url", err)
  end)

  it("reads a secret from its env var and never echoes a bad secret", function()
    local v = assert(params.resolve(list, { url = "http://a" }, { getenv = function(k)
      return k == "T_TOKEN" and "s3cr3t-value" or nil end }))
    assert.equals("s3cr3t-value", v.token)
    local red = params.redacted(list, v)
    assert.equals("(secret)", red.token)
    local secret_int = decl({ { name = "k", type = "secret", validate = function() return false, "too short" end } })
    local _, err = params.resolve(secret_int, { k = "hunter2-secret" })
    assert.not_matches("hunter2", err)
  end)

  it("parses durations and refuses nonsense", function()
    assert.equals(5400, params.duration("1h30m"))
    assert.equals(0.25, params.duration("250ms"))
    assert.equals(90, params.duration("90"))
    assert.is_nil((params.duration("5 minutes")))
    assert.is_nil((params.duration("")))
  end)

  it("refuses a misspelt field instead of ignoring it", function()
    local ok, err = pcall(params.declare, { { name = "limit", type = "int", requried = true } }, "rb")
    assert.is_false(ok)
    assert.matches("rb: parameter limit: unknown field 'requried'", err)
  end)

  it("splits -p words and refuses malformed ones", function()
    assert.same({ a = "1", b = "x=y" }, params.parse_words({ "a=1", "b=x=y" }))
    local v, err = params.parse_words({ "novalue" })
    assert.is_nil(v)
    assert.matches("write it as %-p name=value", err)
    -- a mistyped or bare secret is never echoed, not even in part
    for _, secret in ipairs({ "token:s3cr3t-value-123", "ghp_abcDEF1234567890secret", "sk_live_51Habc" }) do
      v, err = params.parse_words({ "a=1", secret })
      assert.is_nil(v)
      assert.matches("%-p number 2 %(" .. #secret .. " bytes, not shown%)", err)
      assert.is_nil(err:find(secret:sub(1, 6), 1, true), err)
    end
  end)

  it("refuses malformed declarations", function()
    assert.has_error(function() decl({ { name = "bad name" } }) end)
    assert.has_error(function() decl({ { name = "x", type = "float" } }) end)
    assert.has_error(function() decl({ { name = "x" }, { name = "x" } }) end)
  end)
end)
