-- kv-audit — seed 004's KV audit, executable: inventory every Workers KV
-- put/get/delete/list in a JS/TS repository, classify each site (A control
-- plane, B high frequency, C cache), report what to move first (Durable
-- Object or D1) and keep a baseline so CI fails when a TTL-less put or a new
-- list creeps in ("KV put() limit exceeded for the day" stopped production
-- automation once; the cure is fewer puts, not cleaning).
--
-- It only reads local files, so --offline and --dry-run behave like a run;
-- the one write (the baseline) is printed instead of done in both.
local rb = require("runbook")
local kvaudit = require("stdlib.kvaudit")

-- Scan results stay in memory (they can be large); the journal keeps counts.
-- A resumed run scans again: it is cheap and reads only.
local results = {}

local function scan(ctx)
  local p = ctx.params
  local r, err = kvaudit.scan(p.root, {
    exclude = p.exclude, bindings = kvaudit.list_option(p.bindings),
    progress = function(done, total) ctx:progress(done, total, "files") end,
  })
  if not r then ctx:fail("%s", err) end
  results[ctx.run_id] = r
  return r
end

local function scanned(ctx)
  local r = results[ctx.run_id]
  if not r then
    r = scan(ctx)
    kvaudit.classify(r)
  end
  return r
end

return rb.runbook {
  name = "kv-audit",
  summary = "Audit Workers KV put/get/delete/list in a repository: categories, migration candidates, baseline gate",
  params = {
    { name = "action", type = "enum", values = { "scan", "check" }, default = "scan",
      help = "scan: report; check: also fail on regressions against -p baseline=FILE" },
    { name = "root", type = "path", default = ".", help = "the repository to audit" },
    { name = "write_baseline", type = "path",
      help = "write the JSON baseline here (printed, not written, with --dry-run/--offline)" },
    { name = "baseline", type = "path", help = "baseline JSON to check against (action=check)" },
    { name = "allow_total_increase", type = "int", default = 0, min = 0,
      help = "how many more KV sites than the baseline pass the check" },
    { name = "allow_puts_increase", type = "int", default = 0, min = 0,
      help = "how many more puts than the baseline pass the check" },
    { name = "exclude", type = "string", help = "comma-separated path globs to leave out, e.g. test/**,*.spec.ts" },
    { name = "bindings", type = "string",
      help = "comma-separated KV binding names to add to those wrangler.toml/kvaudit.json declare" },
  },
  steps = {
    rb.step "Scan the tree for KV call sites" {
      run = function(ctx)
        local p = ctx.params
        if p.action == "check" then
          if not p.baseline then
            ctx:fail("action=check needs -p baseline=FILE (write one first with -p write_baseline=FILE)")
          end
          if p.write_baseline == p.baseline then
            ctx:fail("write_baseline and baseline are both %s: the check would compare the tree with itself; drop -p write_baseline",
              p.baseline)
          end
          -- refuse early, before a long scan, when the baseline is missing
          local raw = ctx:read_file(p.baseline, { missing_ok = true })
          if not raw then
            ctx:fail("baseline %s does not exist; write it with -p write_baseline=%s on a known-good tree", p.baseline, p.baseline)
          end
        end
        local r = scan(ctx)
        local t = kvaudit.totals(r)
        ctx:log("%s: %d JS/TS files, %.1f MB", p.root, r.files, r.bytes / 1e6)
        for _, w in ipairs(r.wrangler) do ctx:log("bindings from %s", w) end
        if r.config then ctx:log("configuration from %s", r.config) end
        ctx:log("%d KV sites, %d lookalikes left out (Cache API, Map, Headers, R2, comments...)", t.sites, t.excluded)
        for _, e in ipairs(r.errors) do ctx:log("unreadable: %s: %s", e.file, e.message) end
        ctx:set("files", r.files)
        ctx:set("sites", t.sites)
        ctx:set("unreadable", #r.errors)
      end,
      verify = {
        rb.check("the root holds JS/TS sources", function(ctx)
          return ctx:get("files") > 0, ("no .js/.ts files under %s; is -p root right?"):format(ctx.params.root)
        end),
        rb.check("every file was read", function(ctx)
          local r = scanned(ctx)
          if #r.errors == 0 then return true end
          local e = r.errors[1]
          return false, ("%d unreadable, first %s: %s; fix it or leave it out with -p exclude=GLOB"):format(
            #r.errors, e.file, e.message)
        end),
      },
      hint = "The root must be a directory; node_modules, .git, dist, build and the like are never entered.",
    },

    rb.step "Classify each site: A control plane, B high frequency, C cache" {
      run = function(ctx)
        local r = kvaudit.classify(scanned(ctx))
        local t = kvaudit.totals(r)
        ctx:log("A control plane %d · B high frequency %d · C cache %d", t.A, t.B, t.C)
        ctx:set("A", t.A)
        ctx:set("B", t.B)
        ctx:set("C", t.C)
      end,
      no_verify = "classification happens in memory; nothing outside changes (spec/kvaudit checks the rules)",
    },

    rb.step "Report: totals, puts without TTL, lists on hot paths, migration candidates" {
      run = function(ctx)
        local r = scanned(ctx)
        for _, line in ipairs(kvaudit.report(r)) do ctx:log("%s", line) end
        local t = kvaudit.totals(r)
        ctx:set("put_without_ttl", t.put_without_ttl)
        ctx:set("list_hot", t.list_hot)
      end,
      no_verify = "prints what the scan found; nothing outside changes",
    },

    rb.step "Write the baseline" {
      when = function(ctx) return ctx.params.write_baseline ~= nil end,
      run = function(ctx)
        local r = scanned(ctx)
        local t = kvaudit.totals(r)
        ctx:log("baseline: %d sites (put %d, get %d, delete %d, list %d; %d puts without TTL)",
          t.sites, t.put, t.get, t.delete, t.list, t.put_without_ttl)
        ctx:write_file(ctx.params.write_baseline, kvaudit.encode_baseline(r))
      end,
      verify = {
        rb.check("the baseline reads back with the same sites", function(ctx)
          local path = ctx.params.write_baseline
          local base, err = kvaudit.decode_baseline(ctx:read_file(path), path)
          if not base then return false, err end
          return #base.sites == #scanned(ctx).sites, ("%s holds %d sites, the scan found %d"):format(
            path, #base.sites, #scanned(ctx).sites)
        end),
      },
      hint = "The baseline's directory must exist and be writable.",
    },

    rb.step "Check against the baseline" {
      when = function(ctx) return ctx.params.action == "check" end,
      run = function(ctx)
        local p = ctx.params
        local base, err = kvaudit.decode_baseline(ctx:read_file(p.baseline), p.baseline)
        if not base then ctx:fail("%s", err) end
        local cmp = kvaudit.compare(base, scanned(ctx),
          { total = p.allow_total_increase, puts = p.allow_puts_increase })
        ctx:log("baseline %s: %d sites (put %d); now %d (put %d); %d new, %d gone", p.baseline,
          cmp.base_totals.sites or 0, cmp.base_totals.put or 0, cmp.totals.sites, cmp.totals.put, #cmp.new, #cmp.removed)
        for i = 1, math.min(#cmp.new, 20) do ctx:log("new:  %s", kvaudit.describe(cmp.new[i])) end
        for i = 1, math.min(#cmp.removed, 20) do ctx:log("gone: %s", kvaudit.describe(cmp.removed[i])) end
        local rules = {}
        for _, rule in ipairs(cmp.rules) do rules[#rules + 1] = { ok = rule.ok, message = rule.message or "" } end
        ctx:set("check_rules", rules)
      end,
      verify = {
        rb.check("no new put without a TTL", function(ctx)
          local r = ctx:get("check_rules")[1]
          return r.ok, r.message
        end),
        rb.check("no new list call", function(ctx)
          local r = ctx:get("check_rules")[2]
          return r.ok, r.message
        end),
        rb.check("KV sites grew no more than allow_total_increase", function(ctx)
          local r = ctx:get("check_rules")[3]
          return r.ok, r.message
        end),
        rb.check("puts grew no more than allow_puts_increase", function(ctx)
          local r = ctx:get("check_rules")[4]
          return r.ok, r.message
        end),
      },
      hint = "Add expirationTtl, or move the site to D1/a Durable Object (docs/KVAUDIT.md); "
        .. "if the change is reviewed and wanted, refresh the baseline with -p write_baseline=FILE.",
    },
  },
}
