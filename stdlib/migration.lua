-- migration.lua — seed 004's one-off move of the queue from KV to D1, as
-- steps can drive it: the D1 schema (`wrangler d1 migrations list/apply`,
-- always --local or --remote, never a default), one page of the hub's
-- migrate-{tasks,results}-kv-to-d1 endpoints (retried on 429/5xx and dropped
-- connections, honouring Retry-After), the page loop with its cursor checkpointed after every page,
-- and the counts that say whether KV and D1 reconcile.
--
--   local migration = require("stdlib.migration")
--   migration.pages(ctx, { kind = "tasks", key = key, limit = 200, total = n })
--
-- The cursor is the hub's KV list cursor; a page is journaled as done (the
-- checkpoint) before the next one is asked for, so a resumed run continues
-- after the last journaled page and never re-reads it. A page cut off
-- between the hub's answer and the checkpoint is asked for again, which is
-- harmless: the hub inserts per id with INSERT OR IGNORE.

local cjson = require("cjson.safe")
local wrangler = require("stdlib.wrangler")
local project = require("runbook.project")

local M = {}

M.KINDS = { "tasks", "results" }
M.DATABASE = "DB"

local function path(ctx, p) return p and project.path(ctx.project, p) or nil end

-- The local hub's D1 (env.hub_dir): its wrangler dev state is in
-- env.hub_state/wrangler, as examples/hub/hubctl.lua starts it.
local function local_d1(ctx)
  local env = ctx.env
  local t = { where = "local", database = env.d1_database or M.DATABASE,
    cwd = path(ctx, env.hub_dir) or path(ctx, env.wrangler_cwd) }
  if env.hub_state then t.persist_to = path(ctx, env.hub_state) .. "/wrangler" end
  return t
end

---The wrangler to run: the environment's, else (local hub) the hub's own
---node_modules copy run by node, else `wrangler` on PATH. It is set on this
---run's copy of the environment, which stdlib/wrangler reads.
function M.use_hub_wrangler(ctx)
  if ctx.env.wrangler or os.getenv("RUNBOOK_WRANGLER") then return end
  local dir = path(ctx, ctx.env.hub_dir)
  if dir and require("runbook.fs").exists(dir .. "/node_modules/wrangler/bin/wrangler.js") then
    ctx.env.wrangler = { "node", dir .. "/node_modules/wrangler/bin/wrangler.js" }
  end
end

---D1 migrations not yet applied (file names), or nil, err.
function M.pending(ctx, t)
  M.use_hub_wrangler(ctx)
  return wrangler.d1_migrations_list(ctx, { database = t.database, where = t.where, env = t.env,
    persist_to = t.persist_to, cwd = t.cwd, fixture = { code = 0, stdout = "✅ No migrations to apply!\n" } })
end

---Apply the pending migrations. A write.
function M.apply(ctx, t)
  M.use_hub_wrangler(ctx)
  return wrangler.d1_migrations_apply(ctx, { database = t.database, where = t.where, env = t.env,
    persist_to = t.persist_to, cwd = t.cwd })
end

---List the pending migrations of t, say which (LOCAL/REMOTE first), and
---apply them if there are any: the names that were pending (empty: nothing
---was applied), or nil, err.
function M.apply_pending(ctx, t)
  local pending, err = M.pending(ctx, t)
  if not pending then return nil, err end
  ctx:log("%s: %s", t.where == "local" and "LOCAL" or "REMOTE",
    #pending == 0 and "no migrations pending" or ("pending: " .. table.concat(pending, ", ")))
  if #pending > 0 then
    local ok, aerr = M.apply(ctx, t)
    if not ok then return nil, aerr end
  end
  return pending
end

---The check every step that applies migrations ends with: wrangler lists
---none pending for the D1 target(ctx) gives.
---@param target fun(ctx): table
function M.none_pending(target)
  return require("runbook").check("no migration is pending", function(ctx)
    local pending, err = M.pending(ctx, target(ctx))
    if not pending then return false, err end
    return #pending == 0, "still pending: " .. table.concat(pending, ", ")
  end)
end

---The D1 target for a `where` the operator stated ("local" or "remote"),
---or nil, err when the environment is the other kind: --local needs the hub
---on this machine (hub_dir), --remote a deployed environment. Seed 004:
---without --remote a migration is local even with --env, so the two are
---never inferred from each other. o.env: the wrangler --env (default the
---environment's wrangler_env; never used for --local).
function M.d1_target_where(ctx, where, o)
  o = o or {}
  local env = ctx.env
  local is_local = env.hub_dir ~= nil and env.d1 ~= "remote"
  if where == "local" and not is_local then
    return nil, ("-p where=local, but environment '%s' has no hub on this machine (no hub_dir in runbook.lua): "
      .. "a --local apply would change a wrangler dev state nothing serves; use --env local, or -p where=remote "
      .. "to change %s's D1"):format(env.name, env.name)
  elseif where == "remote" and not is_local then
    local t = { where = "remote", database = env.d1_database or M.DATABASE, cwd = path(ctx, env.wrangler_cwd) }
    local e = o.env
    if e == nil then e = env.wrangler_env end
    if e ~= nil and e ~= "" then t.env = e end
    return t
  elseif where == "remote" then
    return nil, ("-p where=remote, but environment '%s' is the hub on this machine (hub_dir in runbook.lua): "
      .. "pick a deployed environment (--env stage or production), or -p where=local"):format(env.name)
  end
  return local_d1(ctx)
end

---The D1 the environment's hub uses, for a runbook that works through that
---hub: its wrangler dev state when the hub runs on this machine, else the
---deployed database of the environment's wrangler env, which must be known
---(wrangler_env given, or in runbook.lua; "" is the top-level Worker): a
---remote apply without --env changes the top-level Worker's database, which
---may not be this hub's. Returns the target, or nil, err.
---@param wrangler_env string|nil
function M.hub_d1(ctx, wrangler_env)
  local env = ctx.env
  if env.hub_dir ~= nil and env.d1 ~= "remote" then return local_d1(ctx) end
  local e = wrangler_env
  if e == nil then e = env.wrangler_env end
  if e == nil then
    return nil, ("environment '%s' names no wrangler_env in runbook.lua, so which deployed D1 its hub uses is not "
      .. "known (--remote without --env is the top-level Worker's); pass -p wrangler_env=NAME, or "
      .. "-p wrangler_env= for the top-level Worker"):format(env.name)
  end
  return M.d1_target_where(ctx, "remote", { env = e })
end

---"LOCAL (...)" or "REMOTE (...)": the first thing an operator reads before
---a D1 write. o.account: who wrangler is logged in as (remote).
function M.describe_where(t, o)
  o = o or {}
  if t.where == "local" then
    return ("LOCAL (wrangler dev state in %s; hub %s; D1 %s --local)"):format(
      t.persist_to or "the hub's .wrangler/state", t.cwd or "(current directory)", t.database)
  end
  -- o.account: the account wrangler acts for (false: it names none; nil:
  -- not asked, not shown)
  local account = o.account == nil and "" or ("account " .. (o.account or "(wrangler names none)") .. "; ")
  return ("REMOTE (%sD1 database %s --remote; %s)"):format(account,
    t.database, t.env and ("wrangler --env " .. t.env) or "top-level wrangler env (no --env)")
end

local function headers(key)
  return { ["X-API-Key"] = key, ["Content-Type"] = "application/json" }
end

local function body_error(resp)
  local b = cjson.decode(resp.body or "")
  if type(b) == "table" then
    local e = tostring(b.error or "")
    if b.reason then e = e .. ": " .. tostring(b.reason) end
    if e ~= "" then return e end
  end
  return ((resp.body or ""):sub(1, 80):gsub("%c", " "))
end

---The hub's counts: {kv = {tasks, results}, d1 = {tasks, results}[, reconcile = {...}]}.
---A read (it costs the hub one KV list per 1,000 keys).
function M.counts(ctx, key, o)
  o = o or {}
  local url = ctx.env.url .. "/api/admin/queue/counts" .. (o.reconcile and "?reconcile=1" or "")
  local resp, err = ctx:try_http({ url = url, headers = headers(key), timeout = o.timeout or 120,
    fixture = o.fixture })
  if not resp then return nil, "GET " .. url .. ": " .. err end
  if resp.status ~= 200 then
    return nil, ("GET %s answered %d: %s"):format(url, resp.status, body_error(resp))
  end
  local b = cjson.decode(resp.body or "")
  if type(b) ~= "table" or type(b.kv) ~= "table" or type(b.d1) ~= "table" then
    return nil, "GET " .. url .. ": the answer has no kv/d1 counts"
  end
  return b
end

---One page: POST {limit, cleanup, cursor}. A 429/5xx or a dropped
---connection is retried (ctx:try_http: o.attempts, backoff from o.every
---seconds, Retry-After capped at 30 s) — safe, the hub inserts per id with
---INSERT OR IGNORE; a 401 or any other answer fails at once. Returns the
---decoded page or nil, err.
function M.page(ctx, o)
  local url = ("%s/api/admin/queue/migrate-%s-kv-to-d1"):format(ctx.env.url, o.kind)
  local body = cjson.encode({ limit = o.limit, cleanup = o.cleanup == true, cursor = o.cursor or cjson.null })
  local resp, err = ctx:try_http({ method = "POST", url = url, headers = headers(o.key), body = body,
    timeout = o.timeout or 120,
    retry = { attempts = o.attempts or 4, base = o.every or 1, cap = 15, max_wait = 30, transport = true },
    -- dry-run/offline: the hub is not asked; the loop ends after one page
    simulate = { status = 200, json = { kind = o.kind, migrated = 0, skipped = 0, invalid = 0, scanned = 0,
      cleaned = 0, cursor = cjson.null, done = true, simulated = true } } })
  if not resp then return nil, ("POST %s: %s"):format(url, err) end
  if resp.status ~= 200 then
    return nil, ("POST %s: HTTP %d %s%s"):format(url, resp.status, body_error(resp),
      (resp.attempts or 1) > 1 and (" (%d attempts)"):format(resp.attempts) or "")
  end
  local page = cjson.decode(resp.body or "")
  if type(page) ~= "table" then return nil, ("POST %s: HTTP 200 but the answer is not JSON"):format(url) end
  return page
end

---A fresh page loop state.
function M.new_state()
  return { cursor = nil, pages = 0, migrated = 0, skipped = 0, invalid = 0, scanned = 0, cleaned = 0, done = false }
end

---Walk every page of one kind, checkpointing the state after each page
---(checkpoint key `o.checkpoint`, default "pages"): a resumed step starts
---after the last journaled page. o = { kind, key, limit, cleanup, total,
---max_pages }. Returns the final state.
function M.pages(ctx, o)
  local ck = o.checkpoint or "pages"
  local st = ctx:checkpointed(ck)
  if st then
    if st.done then
      ctx:log("%s: already done in this run (%d pages journaled)", o.kind, st.pages)
      return st
    end
    ctx:log("%s: resuming after page %d (%d scanned so far), from the journaled cursor", o.kind, st.pages, st.scanned)
  else
    st = M.new_state()
  end
  local total = o.total
  -- bounded: the KV count says how many pages there should be; allow for
  -- keys added while the migration runs, then stop with a clear error
  local max_pages = o.max_pages or (math.ceil(((total or 0) + 1) / o.limit) * 2 + 100)
  while not st.done do
    if st.pages >= max_pages then
      ctx:fail("%s: %d pages and the hub still has a next cursor; the KV keyspace grows faster than it is migrated — stop the writers first",
        o.kind, st.pages)
    end
    local page, err = M.page(ctx, { kind = o.kind, key = o.key, limit = o.limit, cleanup = o.cleanup,
      cursor = st.cursor })
    if not page then
      ctx:fail("%s page %d: %s (%s)", o.kind, st.pages + 1, err, st.pages == 0 and "no page of it is done yet"
        or ("pages 1-%d are journaled; resuming continues after them"):format(st.pages))
    end
    if page.simulated then
      ctx:log("%s: would POST page after page by cursor, %d keys a page%s", o.kind, o.limit,
        o.cleanup and ", deleting from KV what D1 confirms" or "")
      st.simulated = true
      return st
    end
    st.pages = st.pages + 1
    for _, f in ipairs({ "migrated", "skipped", "invalid", "scanned", "cleaned" }) do
      st[f] = st[f] + (math.tointeger(page[f]) or 0)
    end
    st.done = page.done == true
    st.cursor = (not st.done and type(page.cursor) == "string") and page.cursor or nil
    if not st.done and not st.cursor then
      ctx:fail("%s page %d: the hub said not done but gave no cursor", o.kind, st.pages)
    end
    -- durable before the next page is asked for
    ctx:checkpoint(ck, st)
    if total and st.scanned > total then total = st.scanned end
    ctx:progress(st.scanned, total, o.kind)
  end
  return st
end

---"tasks: 2500 pages ... " — the totals of a loop, one line.
function M.summary(kind, st)
  return ("%s: %d pages, %d scanned, %d migrated, %d already in D1, %d not migratable%s"):format(kind, st.pages,
    st.scanned, st.migrated, st.skipped - st.invalid, st.invalid,
    st.cleaned > 0 and (", " .. st.cleaned .. " deleted from KV") or "")
end

return M
