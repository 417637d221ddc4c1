-- rotate-provider-key — seed 002's "Key Rotation" of a provider secret
-- (ANTHROPIC_API_KEY, OPENAI_API_KEY, ...), executable.
--
-- The processing worker and the main worker each have their own wrangler
-- config (wrangler.processing.toml, wrangler.toml), and the key lives in
-- stage (the top-level env) and production (--env production): four
-- `wrangler secret put`s, the value on stdin, never in argv. The
-- environment's `provider_workers` in runbook.lua lists them; without it
-- its `workers` are used (locally: the hub's .dev.vars, then a restart so
-- wrangler dev reads it). Then a smoke test, then the step the seed ends
-- with and people forget: revoke the old key at the provider — which needs
-- a typed confirmation.
--
-- The value comes from $PROVIDER_KEY_VALUE, -p value_env=VAR (another
-- environment variable holding it), or a no-echo prompt on a terminal;
-- `runbook run` refuses -p value=... (the process list would show it). It
-- is never journaled: a resumed run asks for it again the same way.
local rb = require("runbook")
local crypto = require("runbook.crypto")
local secrets = require("stdlib.secrets")
local health = require("stdlib.health")

local VALUE_ENV = "PROVIDER_KEY_VALUE"

local function targets(ctx)
  local list = ctx.env.provider_workers or ctx.env.workers or {}
  if #list == 0 then
    ctx:fail("environment '%s' names no worker to hold provider keys (provider_workers = {...} in runbook.lua)",
      ctx.env.name)
  end
  return list
end

local function from_terminal()
  local term = require("runbook.term")
  return term.isatty(0) and os.getenv("CI") ~= "true"
end

-- The new value, from (in this order) $PROVIDER_KEY_VALUE, the variable
-- -p value_env names, a no-echo prompt. Registered as a secret.
local function new_value(ctx)
  local name = ctx.params.name
  local v = ctx.params.value
  if not v and ctx.params.value_env then
    v = os.getenv(ctx.params.value_env)
    if not v or v == "" then
      ctx:fail("$%s (named by -p value_env) is unset or empty; export the new %s in it", ctx.params.value_env, name)
    end
  end
  if not v and ctx.mode == "run" and from_terminal() then
    local err
    v, err = require("runbook.term").prompt_secret(("New value of %s (not echoed): "):format(name))
    if not v then ctx:fail("could not read the new %s from the terminal: %s", name, tostring(err)) end
  end
  if not v and ctx.mode ~= "run" then
    ctx:log("no value given: %s uses a random placeholder", ctx.mode)
    v = "placeholder-" .. crypto.random_hex(16)
  end
  if not v then
    ctx:fail("no value for %s: export it in $%s or in a variable named by -p value_env=VAR, or run on a terminal "
      .. "to be asked", name, VALUE_ENV)
  end
  v = v:gsub("[\r\n]+$", "")
  ctx:secret(v)
  if v:find("[\r\n]") then ctx:fail("the new %s spans several lines; a provider key is one line", name) end
  if #v < 8 then ctx:fail("the new %s is %d characters long; that is not a provider key", name, #v) end
  return v
end

local function listed(ctx, t, name)
  local names, err = secrets.list(ctx, t,
    { fixture = { code = 0, stdout = ('[{"name":"%s","type":"secret_text"}]'):format(name) } })
  if not names then return nil, err end
  for _, n in ipairs(names) do if n == name then return true end end
  return false
end

local function health_checks(ctx)
  local out = {}
  for _, w in ipairs({ { "api", ctx.env.url }, { "processing worker", ctx.env.worker_url or ctx.env.url } }) do
    if w[2] then out[#out + 1] = { name = w[1], url = w[2] .. "/api/health", json = { status = "ok" } } end
  end
  return out
end

return rb.runbook {
  name = "rotate-provider-key",
  summary = "Put a new provider key (e.g. ANTHROPIC_API_KEY) on every worker config, smoke-test, then revoke the old one",
  params = {
    { name = "name", type = "string", default = "ANTHROPIC_API_KEY", pattern = "^[A-Z][A-Z0-9_]*$",
      help = "the secret's name on the workers" },
    { name = "value_env", type = "string", pattern = "^[%a_][%w_]*$",
      help = "name of an environment variable holding the new value" },
    { name = "value", type = "secret", env = VALUE_ENV,
      help = "the new value: set $" .. VALUE_ENV .. " (-p is refused: the process list would show it)" },
  },
  fixtures = {
    ["GET /api/health"] = { status = 200, json = { status = "ok", worker = "orchestrator-hub" } },
  },
  reload = { value = new_value },
  steps = {
    rb.step "Show what will change" {
      run = function(ctx)
        local v = new_value(ctx)
        ctx:set("value", v)
        ctx:log("secret:     %s = %s", ctx.params.name, crypto.fingerprint(v))
        for _, t in ipairs(targets(ctx)) do ctx:log("holder:     %s", secrets.label(t)) end
        ctx:log("smoke test: %s/api/health, %s/api/health", ctx.env.url, ctx.env.worker_url or ctx.env.url)
      end,
      no_verify = "shows only (no holder, or no value, fails the step); nothing changes yet",
    },
    rb.step "Put the key on every worker config" {
      run = function(ctx)
        local name, v = ctx.params.name, ctx:get("value")
        for _, t in ipairs(targets(ctx)) do
          secrets.put(ctx, t, { [name] = v })
          ctx:log("%s: %s set", secrets.label(t), name)
        end
      end,
      verify = {
        -- Cloudflare lists names only; a local .dev.vars shows the value too
        rb.check("every holder has the secret (a local .dev.vars: the new value)", function(ctx)
          local name, v = ctx.params.name, ctx:get("value")
          for _, t in ipairs(targets(ctx)) do
            local ok, err = listed(ctx, t, name)
            if not ok then return false, secrets.label(t) .. (err and (": " .. err) or (" does not list " .. name)) end
            local vals = secrets.values(ctx, t)
            if vals and vals[name] ~= v then
              return false, ("%s holds %s"):format(secrets.label(t), vals[name] and crypto.fingerprint(vals[name]) or "nothing")
            end
          end
          return true
        end),
      },
      hint = "For deployed workers `wrangler whoami` must show the right account; a failed put leaves the others " ..
        "as they are — run this again (puts are idempotent).",
    },
    rb.step "Smoke test: both workers answer" {
      run = function(ctx)
        local res = health.many(ctx, health_checks(ctx))
        for _, r in ipairs(res) do ctx:log("%s", health.format(r)) end
        ctx:set("smoke", res)
      end,
      verify = {
        rb.check("every worker answers /api/health with status ok", function(ctx)
          for _, r in ipairs(ctx:get("smoke")) do
            if not r.ok then return false, r.name .. ": " .. r.why end
          end
          return true
        end),
      },
      hint = "Do not revoke the old key yet: a worker is not healthy with the new one. Put the old value back " ..
        "the same way if it was working, and look at the worker's logs.",
    },
    rb.step "Revoke the old key in the provider's dashboard" {
      confirm = "Revoke the OLD provider key in the provider's dashboard now; the new one is on every worker and " ..
        "they are healthy. Until it is revoked, whoever holds the old key can still use it.",
      run = function(ctx)
        ctx:log("revoke the previous %s at the provider (the new one is %s)", ctx.params.name,
          crypto.fingerprint(ctx:get("value")))
      end,
      no_verify = "revoking happens in the provider's dashboard, which this runbook cannot see",
    },
  },
}
