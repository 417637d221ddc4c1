-- wrangler.lua — the wrangler commands the runbooks need, each declared
-- read or write so dry-run and offline know what to do with it. Secret
-- values go on stdin, never in argv; `--env` is always spelled out when a
-- Worker environment is named, and D1 commands always say --local or
-- --remote, so no command silently targets a default.
--
-- The wrangler binary comes from the environment (`wrangler = {"npx",
-- "wrangler"}` in runbook.lua) or $RUNBOOK_WRANGLER, else `wrangler` on PATH.

local redact = require("runbook.redact")

local M = {}

local function base(ctx)
  local w = ctx.env and ctx.env.wrangler
  if type(w) == "table" then
    local t = {}
    for i, a in ipairs(w) do t[i] = a end
    return t
  end
  return { os.getenv("RUNBOOK_WRANGLER") or w or "wrangler" }
end

local function wcwd(ctx)
  local d = ctx.env and ctx.env.wrangler_cwd
  return d and require("runbook.project").path(ctx.project, d) or nil
end

local function argv(ctx, ...)
  local a = base(ctx)
  for _, x in ipairs({ ... }) do a[#a + 1] = x end
  return a
end

local function target(a, t)
  if t.config then a[#a + 1] = "-c" a[#a + 1] = t.config end
  if t.name then a[#a + 1] = "--name" a[#a + 1] = t.name end
  if t.env and t.env ~= "" then a[#a + 1] = "--env" a[#a + 1] = t.env end
  return a
end

-- wrangler's output as the lines that are not blank, without terminal
-- colour codes (it colours errors even under NO_COLOR), masked — after the
-- codes are gone, so a code inside a secret cannot hide it from the mask
local function lines(text)
  text = redact.mask((((text or ""):gsub("\27%[[%d;?]*[%a]", "")):gsub("\r", "")))
  local t = {}
  for l in text:gmatch("[^\n]+") do
    if l:find("%S") then t[#t + 1] = l:match("^%s*(.-)%s*$") end
  end
  return t
end

-- A failed wrangler command as one line: what failed and wrangler's first
-- error line, with the line after it when that one only introduces it
-- ("...falsy value:"). With ctx, the rest of what wrangler printed (masked)
-- goes to the step's log, so the whole error is on record.
local function check(r, what, ctx)
  if r.code == 0 then return r end
  local t = lines(r.stderr)
  if #t == 0 then t = lines(r.stdout) end
  local msg, used = (t[1] or ("exit " .. tostring(r.code))):gsub("^✘%s*", ""):gsub("^%[ERROR%]%s*", ""), 1
  if msg:find(":$") and t[2] then msg, used = msg .. " " .. t[2], 2 end
  if #msg > 300 then msg = msg:sub(1, 297) .. "..." end
  if ctx and #t > used then
    for i = math.max(1, #t - 19), #t do ctx:log("  wrangler: %s", t[i]) end
  end
  return nil, what .. " failed (exit " .. tostring(r.code) .. "): " .. msg
end

-- A read that failed is asked once more, a second apart, saying so: local
-- wrangler sometimes fails a read for reasons of its own (seen: an
-- internal assert while its runtime starts under load) and a read is safe
-- to repeat. What the second try says is the answer.
local function read_retrying(ctx, a, o, what)
  local r, err = check(ctx:run(a, o), what, ctx)
  if r then return r end
  ctx:log("%s; asking once more", err)
  ctx:sleep(1)
  return check(ctx:run(a, o), what, ctx)
end

---Put a secret on a Worker (value on stdin). A write.
---@param t table { name = worker, config = wrangler.toml path or nil, env = wrangler env or nil, key = NAME, value = v }
function M.secret_put(ctx, t)
  local a = target(argv(ctx, "secret", "put", t.key), t)
  local r = ctx:run(a, { stdin = t.value, cwd = wcwd(ctx), timeout = t.timeout or 60 })
  return check(r, "wrangler secret put " .. t.key, ctx)
end

---Names of a Worker's secrets (values are never shown by Cloudflare). A read.
function M.secret_list(ctx, t)
  local a = target(argv(ctx, "secret", "list"), t)
  a[#a + 1] = "--format"
  a[#a + 1] = "json"
  local fixture = t.fixture or { code = 0, stdout = "[]" }
  local r, err = read_retrying(ctx, a, { read = true, cwd = wcwd(ctx), fixture = fixture },
    "wrangler secret list")
  if not r then return nil, err end
  local list = require("cjson.safe").decode(r.stdout:match("%[.*%]") or "")
  if type(list) ~= "table" then return nil, "wrangler secret list: output is not a JSON list" end
  local names = {}
  for _, s in ipairs(list) do names[#names + 1] = s.name end
  table.sort(names)
  return names
end

---The account wrangler is logged into. A read.
function M.whoami(ctx, t)
  t = t or {}
  local r, err = read_retrying(ctx, argv(ctx, "whoami"), { read = true, cwd = wcwd(ctx),
    fixture = t.fixture or { code = 0, stdout = "You are logged in with an API Token, associated with the email offline@example.com.\n" } },
    "wrangler whoami")
  if not r then return nil, err end
  local email = r.stdout:match("associated with the email ([^%s]+)%.?")
  local account = r.stdout:match("│%s*([^│]-)%s*│%s*%x+%s*│")
  return { email = email and email:gsub("%.$", ""), account = account, raw = r.stdout_masked or r.stdout }
end

---Who wrangler acts as: the account name, else the login email; fails the
---step when wrangler cannot say.
function M.account(ctx)
  local who, err = M.whoami(ctx)
  if not who then ctx:fail("%s", err) end
  return who.account or who.email
end

---Deploy a Worker environment. A write.
function M.deploy(ctx, t)
  local a = argv(ctx, "deploy")
  if t.env and t.env ~= "" then a[#a + 1] = "--env" a[#a + 1] = t.env end
  return check(ctx:run(a, { cwd = wcwd(ctx), timeout = t.timeout or 300 }), "wrangler deploy", ctx)
end

---The Worker script a deploy of `worker` (wrangler.toml's name) reaches:
---wrangler names a named environment's script "<name>-<env>" (seed 004: a
---deploy with --env canary reaches orchestrator-hub-canary, without --env
---orchestrator-hub).
function M.script_name(worker, env)
  if env and env ~= "" then return worker .. "-" .. env end
  return worker
end

---The script a *.workers.dev URL serves (its first label), else nil.
function M.workers_dev_script(url)
  local host = (url or ""):match("^https?://([^/:]+)")
  return host and host:match("^([^.]+)%.[^.]+%.workers%.dev$") or nil
end

---What `wrangler deploy` printed: { script, url, version } (each nil when
---it did not say).
function M.deployed(stdout)
  stdout = stdout or ""
  return { script = stdout:match("Uploaded ([%w%-_]+)") or stdout:match("Deployed ([%w%-_]+)"),
    url = stdout:match("(https://[%w%.%-]+%.workers%.dev)"),
    version = stdout:match("Current Version ID: ([%w%-]+)") }
end

---Apply D1 migrations; `where` must be "local" or "remote". A write.
function M.d1_migrations_apply(ctx, t)
  assert(t.where == "local" or t.where == "remote", "d1_migrations_apply: where must be 'local' or 'remote'")
  local a = argv(ctx, "d1", "migrations", "apply", t.database, "--" .. t.where)
  if t.env and t.env ~= "" then a[#a + 1] = "--env" a[#a + 1] = t.env end
  if t.persist_to then a[#a + 1] = "--persist-to" a[#a + 1] = t.persist_to end
  return check(ctx:run(a, { cwd = t.cwd or wcwd(ctx), stdin = "y\n", timeout = t.timeout or 120,
    env_add = { CI = "true" } }), "wrangler d1 migrations apply", ctx)
end

---List D1 migrations not yet applied. A read.
function M.d1_migrations_list(ctx, t)
  assert(t.where == "local" or t.where == "remote", "d1_migrations_list: where must be 'local' or 'remote'")
  local a = argv(ctx, "d1", "migrations", "list", t.database, "--" .. t.where)
  if t.env and t.env ~= "" then a[#a + 1] = "--env" a[#a + 1] = t.env end
  if t.persist_to then a[#a + 1] = "--persist-to" a[#a + 1] = t.persist_to end
  local r, err = read_retrying(ctx, a, { read = true, cwd = t.cwd or wcwd(ctx),
    fixture = t.fixture or { code = 0, stdout = "No migrations to apply!" }, env_add = { CI = "true" } },
    "wrangler d1 migrations list")
  if not r then return nil, err end
  local pending = {}
  for name in r.stdout:gmatch("(%d%d%d%d_[%w_%-]+%.sql)") do pending[#pending + 1] = name end
  return pending, r.stdout
end

return M
