-- crypto: the core primitives against published vectors, and the face's
-- hex / url-safe / fingerprint helpers (runbook.crypto over libcrypto).
local core = require("runbook.crypto.core")
local crypto = require("runbook.crypto")

local function bytes(...) return string.char(...) end

-- every byte value once, in a scrambled order, to catch sign/shift mistakes
local all_bytes = {}
for i = 0, 255 do all_bytes[#all_bytes + 1] = string.char((i * 167 + 13) % 256) end
all_bytes = table.concat(all_bytes)

describe("crypto.sha256", function()
  it("matches the NIST vectors", function()
    assert.equals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      core.hex(core.sha256("abc")))
    assert.equals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      crypto.sha256_hex(""))
    assert.equals("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      crypto.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
  end)

  it("returns 32 raw bytes and hashes embedded NULs", function()
    local d = crypto.sha256("a\0b")
    assert.equals(32, #d)
    assert.not_equals(crypto.sha256("a"), d)
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() core.sha256({}) end)
  end)
end)

describe("crypto.hmac_sha256", function()
  it("matches RFC 4231 test case 1", function()
    assert.equals("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      crypto.hmac_sha256_hex(("\x0b"):rep(20), "Hi There"))
  end)

  it("matches RFC 4231 test case 2", function()
    assert.equals("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      core.hex(core.hmac_sha256("Jefe", "what do ya want for nothing?")))
  end)

  it("matches RFC 4231 test case 6 (key longer than the block)", function()
    assert.equals("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      crypto.hmac_sha256_hex(("\xaa"):rep(131),
        "Test Using Larger Than Block-Size Key - Hash Key First"))
  end)

  it("accepts an empty key and depends on the key", function()
    assert.equals(32, #crypto.hmac_sha256("", "m"))
    assert.not_equals(crypto.hmac_sha256("k1", "m"), crypto.hmac_sha256("k2", "m"))
  end)

  it("raises when the message is missing", function()
    assert.has_error(function() core.hmac_sha256("k") end)
  end)
end)

describe("crypto.hex / unhex", function()
  it("encodes lower-case and round-trips every byte value", function()
    assert.equals("00ff10", crypto.hex(bytes(0, 255, 16)))
    assert.equals("", crypto.hex(""))
    assert.equals(all_bytes, crypto.unhex(crypto.hex(all_bytes)))
  end)

  it("decodes either case", function()
    assert.equals(bytes(0xde, 0xad, 0xbe, 0xef), crypto.unhex("DEADbeef"))
    assert.equals("", crypto.unhex(""))
  end)

  it("rejects odd length with EINVAL", function()
    local v, msg, code = crypto.unhex("abc")
    assert.is_nil(v)
    assert.matches("^unhex: ", msg)
    assert.equals("EINVAL", code)
  end)

  it("rejects non-hex characters with EINVAL", function()
    for _, bad in ipairs({ "0g", "zz", "0x12", "12 3", "ab\0c" }) do
      local v, _, code = crypto.unhex(bad)
      assert.is_nil(v, bad)
      assert.equals("EINVAL", code)
    end
  end)
end)

describe("crypto.b64 / unb64", function()
  it("matches RFC 4648 vectors", function()
    local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
      fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
    for plain, enc in pairs(vectors) do
      assert.equals(enc, crypto.b64(plain))
      assert.equals(plain, crypto.unb64(enc))
    end
  end)

  it("uses the standard alphabet and never breaks lines", function()
    local enc = crypto.b64(all_bytes:rep(4))
    assert.is_nil(enc:find("\n", 1, true))
    assert.truthy(enc:find("[+/]"))
    assert.equals(all_bytes:rep(4), crypto.unb64(enc))
  end)

  it("round-trips random binary of every length mod 3", function()
    for n = 0, 40 do
      local r = crypto.random(n)
      assert.equals(r, crypto.unb64(crypto.b64(r)))
    end
  end)

  it("rejects invalid input with EINVAL", function()
    for _, bad in ipairs({ "Zg=", "Zg", "Z===", "Zm9v\n", "Zm 9", "Zm9-", "Zm9_", "=Zg=", "Zg=a", "Zh==" }) do
      local v, msg, code = crypto.unb64(bad)
      assert.is_nil(v, bad)
      assert.matches("^unb64: ", msg)
      assert.equals("EINVAL", code)
    end
  end)
end)

describe("crypto.b64url / unb64url", function()
  it("uses - and _ and drops padding", function()
    assert.equals("-_8", crypto.b64url(bytes(0xfb, 0xff)))
    assert.equals("Zg", crypto.b64url("f"))
    assert.equals("eyJhbGciOiJIUzI1NiJ9", crypto.b64url('{"alg":"HS256"}'))
  end)

  it("round-trips random binary, padded or not", function()
    for n = 0, 40 do
      local r = crypto.random(n)
      local enc = crypto.b64url(r)
      assert.is_nil(enc:find("[+/=]"))
      assert.equals(r, crypto.unb64url(enc))
      local padded = enc .. ("="):rep((4 - #enc % 4) % 4)
      assert.equals(r, crypto.unb64url(padded))
    end
  end)

  it("rejects the standard alphabet, bad lengths and bad padding with EINVAL", function()
    for _, bad in ipairs({ "+_8", "/w", "Z", "Zg=", "Zh", "a b" }) do
      local v, _, code = crypto.unb64url(bad)
      assert.is_nil(v, bad)
      assert.equals("EINVAL", code)
    end
  end)

  it("raises on a non-string", function()
    assert.has_error(function() crypto.unb64url(nil) end)
  end)
end)

describe("crypto.equal", function()
  it("is true for equal strings, false otherwise", function()
    assert.is_true(crypto.equal("secret", "secret"))
    assert.is_true(crypto.equal("", ""))
    assert.is_false(crypto.equal("secret", "secreT"))
    assert.is_false(crypto.equal("a\0b", "a\0c"))
  end)

  it("is false when the lengths differ, even for a prefix", function()
    assert.is_false(crypto.equal("secret", "secret2"))
    assert.is_false(crypto.equal("", "x"))
  end)

  it("raises on non-strings", function()
    assert.has_error(function() crypto.equal("a", nil) end)
  end)
end)

describe("crypto.random", function()
  it("returns exactly n bytes", function()
    for _, n in ipairs({ 0, 1, 16, 32, 1000 }) do
      assert.equals(n, #crypto.random(n))
    end
  end)

  it("differs across calls", function()
    assert.not_equals(crypto.random(32), crypto.random(32))
  end)

  it("random_hex gives 2n lower-case hex characters, different each call", function()
    local a, b = crypto.random_hex(32), crypto.random_hex(32)
    assert.matches("^[0-9a-f]+$", a)
    assert.equals(64, #a)
    assert.not_equals(a, b)
  end)

  it("raises on a negative or absurd count", function()
    assert.has_error(function() crypto.random(-1) end)
    assert.has_error(function() crypto.random(1 << 40) end)
    assert.has_error(function() crypto.random_hex("x") end)
  end)
end)

describe("crypto.fingerprint", function()
  it("is sha256: and the first 8 hex characters of the digest", function()
    assert.equals("sha256:ba7816bf", crypto.fingerprint("abc"))
    assert.matches("^sha256:[0-9a-f]+$", crypto.fingerprint(crypto.random(32)))
    assert.equals(15, #crypto.fingerprint("x"))
  end)

  it("does not contain the secret", function()
    local secret = crypto.random_hex(32)
    assert.is_nil(crypto.fingerprint(secret):find(secret:sub(1, 8), 1, true))
  end)
end)
