-- Secrets are masked in every encoding a tool or server might echo.
local redact = require("runbook.redact")
local crypto = require("runbook.crypto.core")

local function urlenc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

describe("redact", function()
  before_each(function() redact.clear() end)

  it("masks the raw value and shows a fingerprint instead", function()
    local s = "k3y-" .. crypto.hex(crypto.random(16))
    redact.add(s)
    local out = redact.mask("key is " .. s .. ".")
    assert.not_matches(s, out, 1, true)
    assert.equals("key is [" .. redact.fingerprint(s) .. "].", out)
    assert.matches("^sha256:%x%x%x%x%x%x%x%x$", redact.fingerprint(s))
  end)

  it("masks hex, URL-encoded and base64 forms, at any alignment, with prefix and suffix", function()
    for _ = 1, 50 do
      local s = crypto.random(math.random(8, 40))
      redact.clear()
      redact.add(s)
      for _, form in ipairs({ crypto.hex(s), crypto.hex(s):upper(), urlenc(s) }) do
        assert.not_matches(form, redact.mask("x" .. form .. "y"), 1, true)
      end
      for pre = 0, 2 do
        local blob = crypto.b64(("p"):rep(pre) .. s .. "suffix")
        local masked = redact.mask(blob)
        local marker = "[" .. redact.fingerprint(s) .. "]"
        local i, j = masked:find(marker, 1, true)
        assert.is_truthy(i)
        -- what is left around the marker is the prefix, the suffix and at
        -- most two partial groups: too little to recover the secret
        local left = #masked - (j - i + 1)
        assert.is_true(left <= #crypto.b64(("p"):rep(pre) .. "suffix") + 8)
      end
    end
  end)

  it("masks the value escaped inside JSON and URL-encoded the ways clients do", function()
    local s = "tok/" .. crypto.hex(crypto.random(8)) .. "+a b\"c\\d!*'()"
    redact.add(s)
    local js = require("cjson").encode({ v = s })
    assert.truthy(js:find("\\/", 1, true)) -- cjson escapes the slash
    assert.equals('{"v":"[' .. redact.fingerprint(s) .. ']"}', redact.mask(js))
    local function enc(keep, fmt, plus)
      return (s:gsub(keep, function(ch)
        if plus and ch == " " then return "+" end
        return fmt:format(ch:byte())
      end))
    end
    for _, form in ipairs({
      enc("[^%w%-%._~]", "%%%02X"), enc("[^%w%-%._~]", "%%%02x"), enc("[^%w%-%._~]", "%%%02X", true),
      enc("[^%w%-%._~!'()*]", "%%%02X"), -- encodeURIComponent
      enc("[^%w%-%._~!'()*]", "%%%02x", true),
    }) do
      assert.equals("q=[" .. redact.fingerprint(s) .. "]&", redact.mask("q=" .. form .. "&"), form)
    end
  end)

  it("masks inside nested tables, keys included, without touching the original", function()
    local s = "hunter2-hunter2"
    redact.add(s)
    local t = { a = { s, "ok" }, [s] = 1 }
    local m = redact.mask_deep(t)
    assert.equals("ok", m.a[2])
    assert.not_equals(s, m.a[1])
    assert.is_nil(m[s])
    assert.equals(s, t.a[1])
  end)

  it("ignores values too short to mask safely", function()
    redact.add("abc")
    assert.equals("abc def", redact.mask("abc def"))
    assert.is_false(redact.any())
  end)
end)
