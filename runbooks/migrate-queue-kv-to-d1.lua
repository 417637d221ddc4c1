-- migrate-queue-kv-to-d1 — seed 004's one-off move of the task queue out of
-- KV (queue:task:<id>, queue:result:<id>) into D1 (queue_tasks,
-- queue_results), executable.
--
-- KV's daily write/list limits are what stopped production; the queue is
-- its hottest user. The copy runs page by page through the hub's migrate
-- endpoints ("KV list has a daily limit, so cut it small"), tasks first,
-- then results; every page's cursor is journaled before the next page, so a
-- killed run resumes where it stopped (`runbook resume RUN_ID`) without
-- re-reading a page it finished. KV is only read until the counts
-- reconcile — every KV id present in D1 — and is cleaned up only then, and
-- only when asked (-p cleanup=true).
local rb = require("runbook")
local ops = require("stdlib.ops")
local migration = require("stdlib.migration")

local COUNTS = { kv = { tasks = 3, results = 2 }, d1 = { tasks = 0, results = 0 },
  reconcile = { tasks = { kv = 3, in_d1 = 3, missing = 0, missing_ids = {} },
    results = { kv = 2, in_d1 = 2, missing = 0, missing_ids = {} } } }

-- The D1 the hub uses (resolved and journaled in step 1).
local function d1(ctx) return ctx:get("d1") end

local function counts(ctx, reconcile)
  local c, err = migration.counts(ctx, ctx:get("key"), { reconcile = reconcile })
  if not c then ctx:fail("%s", err) end
  return c
end

local function migrate_step(kind)
  return rb.step("Copy " .. kind .. " from KV to D1, page by page") {
    run = function(ctx)
      local total = ctx:get("kv_before")[kind]
      local st = migration.pages(ctx, { kind = kind, key = ctx:get("key"), limit = ctx.params.limit,
        total = total, cleanup = false })
      ctx:set(kind .. "_pages", st)
      if not st.simulated then ctx:log("%s", migration.summary(kind, st)) end
    end,
    verify = {
      rb.check("the hub reported the last page", function(ctx)
        local st = ctx:get(kind .. "_pages")
        return st.done, ("stopped after page %d with a cursor still to follow"):format(st.pages)
      end),
      rb.check("KV was not changed", function(ctx)
        return ctx:get(kind .. "_pages").cleaned == 0, "keys were deleted before the counts reconciled"
      end),
    },
    hint = "A 401 means the canonical key is not the hub's (run recover-queue-401); a 5xx that outlasted the " ..
      "retries: fix the hub, then `runbook resume RUN_ID` continues after the last journaled page.",
  }
end

local function cleanup_step(kind)
  return rb.step("Delete migrated " .. kind .. " from KV") {
    when = function(ctx) return ctx.params.cleanup end,
    run = function(ctx)
      if ctx:get("reconciled") ~= true and ctx:get("reconciled") ~= "simulated" then
        ctx:fail("the counts did not reconcile; KV is not cleaned up")
      end
      local st = migration.pages(ctx, { kind = kind, key = ctx:get("key"), limit = ctx.params.limit,
        total = ctx:get("kv_before")[kind], cleanup = true, checkpoint = "cleanup" })
      ctx:set(kind .. "_cleanup", st)
      if not st.simulated then ctx:log("%s", migration.summary(kind, st)) end
    end,
    verify = {
      rb.check("KV keeps only what D1 lacks", function(ctx)
        local c = counts(ctx, true)
        ctx:set("counts_after_" .. kind, c)
        local r = c.reconcile[kind]
        return r.kv == r.missing, ("%d %s still in KV although D1 holds them"):format(r.in_d1, kind)
      end),
      rb.check("D1 still holds every migrated id", function(ctx)
        local c = ctx:get("counts_after_" .. kind)
        return c.d1[kind] >= ctx:get("d1_reconciled")[kind],
          ("D1 has %d %s, %d before the clean-up"):format(c.d1[kind], kind, ctx:get("d1_reconciled")[kind])
      end),
    },
    hint = "The hub deletes only ids D1 confirms; resume the run to finish the clean-up.",
  }
end

return rb.runbook {
  name = "migrate-queue-kv-to-d1",
  summary = "Move the task queue from KV to D1 page by page, resumably; reconcile, then optionally clean KV",
  params = {
    { name = "limit", type = "int", default = 200, min = 1, max = 1000,
      help = "keys per page (each page costs the hub one KV list)" },
    { name = "cleanup", type = "bool", default = false,
      help = "delete migrated keys from KV once the counts reconcile" },
    { name = "wrangler_env", type = "string", pattern = "^[%w_%-]*$",
      help = "wrangler --env of the deployed hub, for its D1 (default: the environment's wrangler_env; "
        .. "empty = top-level Worker); not used for the hub on this machine" },
  },
  fixtures = {
    ["GET /api/admin/queue/counts"] = { status = 200, json = COUNTS },
  },
  reload = { key = ops.queue_key },
  steps = {
    rb.step "Show the target and what is in KV and D1" {
      run = function(ctx)
        if not ctx.env.url then ctx:fail("environment '%s' has no url in runbook.lua", ctx.env.name) end
        local t, terr = migration.hub_d1(ctx, ctx.params.wrangler_env)
        if not t then ctx:fail("%s", terr) end
        ctx:set("d1", t)
        ctx:set("key", ops.queue_key(ctx))
        ctx:log("hub:      %s", ctx.env.url)
        ctx:log("d1:       %s", migration.describe_where(t))
        ctx:log("pages:    %d keys each%s", ctx.params.limit,
          ctx.params.cleanup and "; KV cleaned up after the counts reconcile" or "; KV left as it is")
        local c = counts(ctx)
        ctx:set("kv_before", c.kv)
        ctx:set("d1_before", c.d1)
        ctx:log("KV:       %d tasks, %d results", c.kv.tasks, c.kv.results)
        ctx:log("D1:       %d tasks, %d results", c.d1.tasks, c.d1.results)
      end,
      no_verify = "reads only (the counts failing fails the step); the reconcile step compares them",
      hint = "401: the canonical key is not the hub's — run recover-queue-401. A deployed hub's D1 is the one of "
        .. "its wrangler env: set wrangler_env in runbook.lua or pass -p wrangler_env=.",
    },
    rb.step "Apply the queue's D1 migration if it is missing" {
      run = function(ctx)
        local pending, err = migration.apply_pending(ctx, d1(ctx))
        if not pending then ctx:fail("%s", err) end
        ctx:set("migrations_pending", pending)
      end,
      verify = {
        migration.none_pending(d1),
        rb.check("D1 answers with queue tables", function(ctx)
          local c = counts(ctx)
          return type(c.d1.tasks) == "number" and type(c.d1.results) == "number"
        end),
      },
      hint = "Run it by hand in the hub's directory: wrangler d1 migrations apply DB --local (add --persist-to " ..
        "as the hub was started with); for a deployed Worker --remote.",
    },
    migrate_step("tasks"),
    migrate_step("results"),
    rb.step "Reconcile: every KV id is in D1" {
      run = function(ctx)
        -- after a simulated copy (dry-run) there is nothing to reconcile:
        -- the poll is skipped and the check below is listed, not run
        local c
        local _, skipped = ctx:poll({ what = "the hub's per-id counts", every = 1, timeout = 10,
          check = function()
            c = counts(ctx, true)
            return true
          end })
        if skipped then
          ctx:set("reconciled", "simulated")
          return
        end
        ctx:set("d1_reconciled", c.d1)
        local rec, bad = {}, {}
        for _, kind in ipairs(migration.KINDS) do
          local r = c.reconcile[kind]
          local invalid = (ctx:get(kind .. "_pages") or {}).invalid or 0
          ctx:log("%-8s KV %d, in D1 %d, missing %d (reported not migratable: %d); D1 total %d", kind, r.kv, r.in_d1,
            r.missing, invalid, c.d1[kind])
          if r.missing > 0 then
            ctx:log("  missing %s: %s%s", kind, table.concat(r.missing_ids, ", "), r.missing > #r.missing_ids and " …" or "")
          end
          rec[kind] = r
          if r.missing > invalid then bad[#bad + 1] = ("%d %s"):format(r.missing - invalid, kind) end
        end
        ctx:set("reconcile", rec)
        ctx:set("reconciled", #bad == 0)
        ctx:set("reconcile_gap", table.concat(bad, ", "))
      end,
      verify = {
        rb.check("KV count = D1 count for the migrated ids", function(ctx)
          return ctx:get("reconciled"), ctx:get("reconcile_gap") .. " in KV but not in D1"
        end),
      },
      hint = "Keys written to KV after their page was read are not in D1: run the migration again (it skips " ..
        "what D1 holds). KV is not cleaned up until this passes.",
    },
    cleanup_step("tasks"),
    cleanup_step("results"),
  },
}
