-- verify-deployment — what seed 003's scripts/verify-deployment.sh and seed
-- 002's "Deployment verification" do after a promotion: the API, the worker
-- and the web front end each answer; the API is ready (its database and
-- store, not only the process); the answers carry the fields clients read;
-- an authenticated smoke request goes through. Every check runs at once and
-- prints one line with its status and time, so a slow or broken component
-- is named rather than hidden behind the first failure. Then seed 003's
-- callback security: a bad signature, a stale timestamp and a replayed
-- eventId must each be refused, a correctly signed callback accepted.
--
-- Base URLs: -p api_url/worker_url/web_url, else the environment's url,
-- worker_url and web_url (runbook.lua) — the seed's API_BASE_URL,
-- WORKER_BASE_URL and WEB_BASE_URL.
local rb = require("runbook")
local callbacks = require("stdlib.callbacks")
local health = require("stdlib.health")
local ops = require("stdlib.ops")
local slo = require("stdlib.slo")

-- name, base, path, expectation, offline fixture
local CHECKS = {
  { name = "api health", base = "api", path = "/api/health",
    exp = { json = { status = "ok" }, fields = { "worker", "time" } },
    fixture = { status = 200, json = { status = "ok", worker = "orchestrator-hub", time = "2026-01-01T00:00:00Z" } } },
  { name = "api readiness", base = "api", path = "/api/ready",
    exp = { json = { status = "ok", d1 = true, kv = true } },
    fixture = { status = 200, json = { status = "ok", d1 = true, kv = true } } },
  { name = "worker health", base = "worker", path = "/api/health",
    exp = { json = { status = "ok" }, fields = { "worker" } },
    fixture = { status = 200, json = { status = "ok", worker = "orchestrator-hub", time = "2026-01-01T00:00:00Z" } } },
  { name = "web front end", base = "web", path = "/", content_type = "text/html",
    fixture = { status = 200, headers = { ["content-type"] = "text/html" }, body = "<!doctype html><title>x</title>" } },
  { name = "ops metrics", base = "api", path = "/ops/metrics", exp = { fields = slo.FIELDS },
    fixture = slo.FIXTURE },
  { name = "smoke: queue read with key", base = "api", path = "/api/queue/peek", key = true,
    exp = { fields = { "store", "pending" } },
    fixture = { status = 200, json = { store = "d1", pending = 0 } } },
}

local function check_for(c)
  return rb.check(c.name .. " answers as expected", function(ctx)
    local r = (ctx:get("results") or {})[c.name]
    if not r then return false, "not checked" end
    return r.ok, r.why
  end)
end

local verify = {}
for i, c in ipairs(CHECKS) do verify[i] = check_for(c) end

-- Seed 003's callback security, probed in order (the replay needs the
-- delivery before it): name, how to sign, the answer the receiver must give.
local PROBES = {
  { name = "bad signature refused", sign = "wrong", status = 401, reason = "invalid signature" },
  { name = "stale timestamp refused", sign = "stale", status = 401, reason = "timestamp outside tolerance" },
  { name = "signed callback accepted", sign = "ok", status = 200 },
  { name = "replayed eventId refused", sign = "ok", status = 409, reason = "replay" },
}

local function probe_check(p)
  return rb.check(p.name, function(ctx)
    local r = (ctx:get("probes") or {})[p.name]
    if not r then return false, "not probed" end
    return r.ok, r.why
  end)
end

local probe_checks = {}
for i, p in ipairs(PROBES) do probe_checks[i] = probe_check(p) end

return rb.runbook {
  name = "verify-deployment",
  summary = "Check API, worker and web health, readiness, JSON fields, a smoke request and callback signing",
  params = {
    { name = "api_url", type = "url", help = "API base URL (default: the environment's url)" },
    { name = "worker_url", type = "url", help = "worker base URL (default: the environment's worker_url)" },
    { name = "web_url", type = "url", help = "web base URL (default: the environment's web_url)" },
    { name = "timeout", type = "duration", default = "10s", help = "per-request timeout" },
    { name = "callbacks", type = "bool", default = true,
      help = "probe callback signing (sends 4 callbacks; one run-less probe event is recorded)" },
  },
  steps = {
    rb.step "Resolve the three base URLs" {
      run = function(ctx)
        local bases = { api = ops.base(ctx, "api_url", "url"), worker = ops.base(ctx, "worker_url", "worker_url"),
          web = ops.base(ctx, "web_url", "web_url") }
        ctx:set("bases", bases)
        ctx:log("API:    %s", bases.api)
        ctx:log("worker: %s", bases.worker)
        ctx:log("web:    %s", bases.web)
      end,
      verify = {
        rb.check("every base is an http(s) URL", function(ctx)
          for k, v in pairs(ctx:get("bases")) do
            if not v:match("^https?://[^/]+") then return false, k .. " URL is not http(s): " .. v end
          end
          return true
        end),
      },
    },
    rb.step "Check every endpoint at once" {
      run = function(ctx)
        local bases = ctx:get("bases")
        local key = ops.queue_key(ctx)
        local reqs = {}
        for i, c in ipairs(CHECKS) do
          reqs[i] = { method = "GET", url = bases[c.base] .. c.path, timeout = ctx.params.timeout,
            headers = c.key and { ["X-API-Key"] = key } or nil, fixture = c.fixture }
        end
        local res = ctx:batch(reqs, { concurrency = #reqs })
        local results, failed = {}, 0
        for i, c in ipairs(CHECKS) do
          local resp = res[i]
          local r = health.judge(resp, c.exp)
          if r.ok and c.content_type then
            local ct = resp.headers and resp.headers["content-type"] or ""
            if not ct:find(c.content_type, 1, true) then
              r.ok, r.why = false, ("content-type is %s, expected %s"):format(ct ~= "" and ct or "missing", c.content_type)
            end
          end
          if not r.ok and resp and resp.status and resp.status ~= (c.exp and c.exp.status or 200) then
            r.why = r.why .. ": " .. ops.reason(resp)
          end
          r.name = c.name
          ctx:log("%s", health.format(r) .. "  " .. reqs[i].url)
          results[c.name] = { ok = r.ok, why = r.why, status = r.status, ms = r.ms }
          if not r.ok then failed = failed + 1 end
        end
        ctx:set("results", results)
        ctx:log("%d of %d checks ok", #CHECKS - failed, #CHECKS)
      end,
      verify = verify,
      hint = "Readiness failing names the binding (d1/kv) that failed; health failing: is the Worker deployed to " ..
        "that URL? smoke 401: the canonical key and the Worker's secrets differ (runbook run sync-queue-keys).",
    },
    rb.step "Check callback signing is enforced" {
      when = function(ctx) return ctx.params.callbacks end,
      run = function(ctx)
        local secret = ops.callback_secret(ctx)
        local url = ctx:get("bases").worker .. "/callbacks/worker"
        -- run-less: the receiver records the eventId and changes no run
        local event = { eventId = "verify-deployment-" .. ctx.run_id, type = "deployment.probe" }
        local now = os.time()
        local results = {}
        for _, p in ipairs(PROBES) do
          local o = { timestamp = now }
          if p.sign == "stale" then o.timestamp = now - 2 * 86400 end -- beyond any tolerance the hub allows
          if p.sign == "wrong" then o.signature = callbacks.wrong_signature(secret, now, require("cjson").encode(event)) end
          local body, headers = callbacks.signed(secret, event, o)
          local resp = ctx:http({ method = "POST", url = url, headers = headers, body = body, timeout = ctx.params.timeout })
          if resp.simulated then
            ctx:log("%s: not sent (%s)", p.name, ctx.mode)
          else
            local why = resp.status >= 400 and ops.reason(resp) or ""
            -- the hub's word is its error (replay) or its reason (the 401s)
            local answer = require("cjson.safe").decode(resp.body or "")
            local said = type(answer) == "table" and { answer.error, answer.reason } or {}
            local ok = resp.status == p.status and (not p.reason or said[1] == p.reason or said[2] == p.reason)
            local ms = resp.time and resp.time.total and ("%.0f ms"):format(resp.time.total * 1000) or ""
            ctx:log("%s %-28s %d %s  %s", ok and "ok  " or "FAIL", p.name, resp.status, ms, why)
            results[p.name] = { ok = ok, why = not ok and ("HTTP %d %s, expected %d%s"):format(resp.status, why,
              p.status, p.reason and (" " .. p.reason) or "") or nil }
          end
        end
        ctx:set("probes", results)
      end,
      verify = probe_checks,
      hint = "A bad signature or stale timestamp accepted: the Worker has no WORKER_CALLBACK_SECRET (signing off). " ..
        "A correctly signed callback refused with 'invalid signature': the secret in the environment's " ..
        "callback_secret_file differs from the Worker's.",
    },
  },
}
