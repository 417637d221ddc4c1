-- stdlib/wrangler's failures as an operator reads them: one line naming
-- what failed and wrangler's reason, no terminal colour codes, a read asked
-- once more, and no secret in the error or the log — also when wrangler's
-- colour codes cut a secret in two, which masking the raw output would miss.
local wrangler = require("stdlib.wrangler")
local redact = require("runbook.redact")
local crypto = require("runbook.crypto.core")

-- a context that answers every command with the next of `answers` and keeps
-- what was logged
local function fake_ctx(answers)
  local ctx = { env = {}, logged = {}, runs = 0 }
  function ctx:run()
    self.runs = self.runs + 1
    return answers[math.min(self.runs, #answers)]
  end
  function ctx:log(fmt, ...)
    self.logged[#self.logged + 1] = redact.mask(select("#", ...) > 0 and fmt:format(...) or fmt)
  end
  function ctx.sleep() end
  return ctx
end

describe("stdlib.wrangler failures", function()
  local secret
  before_each(function()
    redact.clear()
    secret = "tok-" .. crypto.hex(crypto.random(12))
    redact.add(secret)
  end)

  -- wrangler printing the secret with a colour code inside it
  local function failing()
    local cut = secret:sub(1, 8) .. "\27[1m" .. secret:sub(9) .. "\27[0m"
    return { code = 1, stdout = "", stderr = "\n\27[31m✘ \27[41;31m[\27[41;97mERROR\27[41;31m]\27[0m " ..
      "\27[1mAuthentication failed:\27[0m\n\n  token " .. cut .. " was refused\n  see the dashboard\n" }
  end

  it("names the reason in one line without colour codes, asks once more, and never shows the secret", function()
    local ctx = fake_ctx({ failing() })
    local names, err = wrangler.secret_list(ctx, { name = "hub" })
    assert.is_nil(names)
    assert.equals(2, ctx.runs)
    assert.matches("^wrangler secret list failed %(exit 1%): Authentication failed: token %[sha256:%x+%] was refused$", err)
    assert.matches("asking once more", table.concat(ctx.logged, "\n"))
    for _, text in ipairs({ err, table.concat(ctx.logged, "\n") }) do
      assert.is_nil(text:find(secret, 1, true), "the secret reached: " .. text)
      assert.is_nil(text:find("\27", 1, true), "a colour code reached: " .. text)
    end
    -- the rest of wrangler's output is on record, masked
    assert.matches("wrangler: see the dashboard", table.concat(ctx.logged, "\n"))
  end)

  it("takes the second answer of a read that failed once", function()
    local ctx = fake_ctx({ failing(), { code = 0, stdout = '[{"name":"B"},{"name":"A"}]', stderr = "" } })
    assert.same({ "A", "B" }, wrangler.secret_list(ctx, { name = "hub" }))
    assert.equals(2, ctx.runs)
  end)

  it("does not repeat a write", function()
    local ctx = fake_ctx({ failing() })
    local ok, err = wrangler.secret_put(ctx, { name = "hub", key = "QUEUE_KEY", value = secret })
    assert.is_nil(ok)
    assert.equals(1, ctx.runs)
    assert.is_nil(err:find(secret, 1, true))
  end)
end)
