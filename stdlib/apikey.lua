-- apikey.lua — the hub's API key (X-API-Key) as runbooks other than the key
-- rotations need it: read from the environment's canonical env file (seed
-- 000: one canonical file every client reads), registered as a secret,
-- never journaled. A runbook declares `reload = { key = apikey.read }` so a
-- resumed run reads it again from the same file.
local secrets = require("stdlib.secrets")

local M = {}

M.NAME = "ASSISTANT_API_KEY"

---The key, or the step fails saying which file lacks it. Offline (nothing
---is sent) a missing file or key yields a placeholder.
---@param ctx table
---@return string
function M.read(ctx)
  local p = ctx.env.canonical
  if not p then ctx:fail("environment '%s' names no canonical env file (canonical = ... in runbook.lua)", ctx.env.name) end
  local doc, err = secrets.read_env_file(ctx, p, { missing_ok = ctx.offline })
  if not doc then ctx:fail("%s", err) end
  local k = doc:get(M.NAME)
  if (not k or k == "") and ctx.offline then return "offline-placeholder-key" end
  if not k or k == "" then
    ctx:fail("%s has no %s: run rotate-queue-key or sync-queue-keys first", p, M.NAME)
  end
  return ctx:secret(k)
end

return M
