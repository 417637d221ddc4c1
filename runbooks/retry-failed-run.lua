-- retry-failed-run — seed 003's "Failed Run Retry": POST
-- /api/job-sources/runs/:id/retry as the run's owner. The server allows it
-- only for the owner and only for FAILED runs, and creates a new run linked
-- by retry_of_run_id while the original stays as it was. The runbook does
-- not second-guess those rules: it asks, reports the server's refusal word
-- for word, and proves the link and the unchanged original afterwards.
local rb = require("runbook")
local ops = require("stdlib.ops")

local cjson = require("cjson.safe")

local function run_url(ctx, id)
  return ctx:get("base") .. "/api/job-sources/runs/" .. id:gsub("[^%w%-%._~]", function(c)
    return ("%%%02X"):format(c:byte())
  end)
end

-- GET one run: the decoded run table, or fail naming what was asked.
local function fetch_run(ctx, id, fixture)
  local url = run_url(ctx, id)
  local resp, err = ctx:try_http({ url = url, timeout = 10, fixture = fixture })
  if not resp then ctx:fail("%s", err) end
  if resp.status == 404 then ctx:fail("run %s not found on %s (check the id: GET /api/job-sources/runs?status=FAILED)", id, ctx:get("base")) end
  if resp.status ~= 200 then ctx:fail("GET %s answered HTTP %d: %s", url, resp.status, ops.reason(resp)) end
  local run = ops.json(ctx, resp, "GET " .. url).run
  if type(run) ~= "table" then ctx:fail("GET %s: no run in the answer", url) end
  return run
end

-- The fields that must not change on the original.
local KEEP = { "id", "owner", "status", "retry_of_run_id", "heartbeat_at", "created_at" }

local function snapshot(run)
  local s = {}
  for _, k in ipairs(KEEP) do
    local v = run[k]
    s[k] = (v ~= nil and v ~= cjson.null) and v or false
  end
  return s
end

local function offline_run(ctx)
  return { status = 200, json = { run = { id = ctx.params.run, owner = ctx.params.user, status = "FAILED",
    created_at = "2026-01-01T00:00:00.000Z" } } }
end

return rb.runbook {
  name = "retry-failed-run",
  summary = "Retry a FAILED job-source run as its owner; verify the new run links back and the original is unchanged",
  params = {
    { name = "run", type = "string", required = true, example = "run-example", help = "id of the FAILED run" },
    { name = "user", type = "string", required = true, example = "alice", help = "who retries (must own the run)" },
    { name = "url", type = "url", help = "API base URL (default: the environment's url)" },
  },
  steps = {
    rb.step "Read the run" {
      run = function(ctx)
        ctx:set("base", ops.base(ctx, "url", "url"))
        local run = fetch_run(ctx, ctx.params.run, offline_run(ctx))
        ctx:set("original", snapshot(run))
        ctx:log("run %s: status %s, owner %s%s", run.id, tostring(run.status), tostring(run.owner),
          type(run.retry_of_run_id) == "string" and (", itself a retry of " .. run.retry_of_run_id) or "")
        if run.status ~= "FAILED" then ctx:log("note: only FAILED runs can be retried; expect the server to refuse") end
        if run.owner ~= ctx.params.user then
          ctx:log("note: %s does not own this run; expect the server to refuse", ctx.params.user)
        end
      end,
      verify = {
        rb.check("the run exists", function(ctx) return ctx:get("original").id == ctx.params.run end),
      },
    },
    rb.step "Ask the server to retry it" {
      run = function(ctx)
        local url = run_url(ctx, ctx.params.run) .. "/retry"
        local resp = ctx:http({ method = "POST", url = url, headers = { ["X-User"] = ctx.params.user },
          body = "", timeout = 15, simulate = { status = 201, json = { run = {
            id = "run-simulated", owner = ctx.params.user, status = "QUEUED", retry_of_run_id = ctx.params.run } } } })
        if resp.status ~= 201 then
          ctx:fail("the server refused to retry run %s for %s: %s (HTTP %d)", ctx.params.run, ctx.params.user,
            ops.reason(resp), resp.status)
        end
        local new = ops.json(ctx, resp, "POST " .. url).run
        if type(new) ~= "table" or type(new.id) ~= "string" then ctx:fail("POST %s: no new run in the answer", url) end
        ctx:set("new_id", new.id)
        ctx:set("simulated", resp.simulated and true or false)
        ctx:log("new run %s (status %s, retry_of_run_id %s)", new.id, tostring(new.status), tostring(new.retry_of_run_id))
      end,
      verify = {
        rb.check("the server created a new run", function(ctx)
          return ctx:get("new_id") ~= ctx.params.run, "the answer names the original run"
        end),
      },
      hint = "Only the run's owner may retry it, and only while it is FAILED (seed 003). " ..
        "Check the owner with GET /api/job-sources/runs/<id>; a run that already succeeded needs no retry.",
    },
    rb.step "Verify the new run links back and the original is unchanged" {
      -- a dry-run's retry was not made: there is no new run to read
      when = function(ctx) return not (ctx:get("simulated") and ctx.dry_run) end,
      run = function(ctx)
        local new = fetch_run(ctx, ctx:get("new_id"), { status = 200, json = { run = {
          id = ctx:get("new_id"), owner = ctx.params.user, status = "QUEUED", retry_of_run_id = ctx.params.run } } })
        ctx:set("new_link", type(new.retry_of_run_id) == "string" and new.retry_of_run_id or false)
        ctx:set("new_owner", new.owner)
        ctx:set("after", snapshot(fetch_run(ctx, ctx.params.run, offline_run(ctx))))
      end,
      verify = {
        rb.check("the new run's retry_of_run_id is the original", function(ctx)
          return ctx:get("new_link") == ctx.params.run, "retry_of_run_id is " .. tostring(ctx:get("new_link"))
        end),
        rb.check("the new run has the same owner", function(ctx)
          return ctx:get("new_owner") == ctx:get("original").owner, "owner is " .. tostring(ctx:get("new_owner"))
        end),
        rb.check("the original run is unchanged", function(ctx)
          local before, after = ctx:get("original"), ctx:get("after")
          for _, k in ipairs(KEEP) do
            if before[k] ~= after[k] then
              return false, ("%s changed from %s to %s"):format(k, tostring(before[k]), tostring(after[k]))
            end
          end
          return true
        end),
      },
      hint = "A retry must leave the original immutable (seed 003); report this to the API's owners.",
    },
  },
}
