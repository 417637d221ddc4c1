-- crypto.lua — the public face of runbook.crypto.core (libcrypto).
-- Re-exports the core primitives and adds the hex / url-safe forms runbooks
-- and the stdlib (JWT, signed callbacks, secret fingerprints) want.
-- Expected failures (bad hex or base64 input) return nil, msg, "EINVAL".

-- libcrypto is loaded on first use, not on require: a runbook that requires
-- this face at its top costs `runbook list` / `show` nothing.
local core = setmetatable({}, { __index = function(t, k)
  local c = require("runbook.crypto.core")
  setmetatable(t, { __index = c })
  return c[k]
end })

local M = {}
local REEXPORTED = {}

--- `n` cryptographically random bytes (0 <= n <= 1 MiB).
---@param n integer
---@return string|nil bytes, string? msg, string? code
REEXPORTED.random = true

--- Lower-case hex of a byte string.
---@param s string
---@return string
REEXPORTED.hex = true

--- Bytes from hex (either case); nil, msg, "EINVAL" on odd length or a non-hex character.
---@param s string
---@return string|nil bytes, string? msg, string? code
REEXPORTED.unhex = true

--- Standard base64 with padding, no line breaks.
---@param s string
---@return string
REEXPORTED.b64 = true

--- Bytes from standard padded base64; nil, msg, "EINVAL" on anything else.
---@param s string
---@return string|nil bytes, string? msg, string? code
REEXPORTED.unb64 = true

--- Raw 32-byte SHA-256 digest.
---@param s string
---@return string
REEXPORTED.sha256 = true

--- Raw 32-byte HMAC-SHA256 of `msg` under `key`.
---@param key string
---@param msg string
---@return string
REEXPORTED.hmac_sha256 = true

--- Constant-time comparison (false when the lengths differ).
---@param a string
---@param b string
---@return boolean
REEXPORTED.equal = true

--- SHA-256 as 64 lower-case hex characters.
---@param s string
---@return string
function M.sha256_hex(s)
  return core.hex(core.sha256(s))
end

--- HMAC-SHA256 as 64 lower-case hex characters.
---@param key string
---@param msg string
---@return string
function M.hmac_sha256_hex(key, msg)
  return core.hex(core.hmac_sha256(key, msg))
end

--- `n` random bytes as 2*n hex characters (a 32-byte key is random_hex(32)).
---@param n integer
---@return string|nil hex, string? msg, string? code
function M.random_hex(n)
  local bytes, msg, code = core.random(n)
  if not bytes then return nil, msg, code end
  return core.hex(bytes)
end

local to_url = { ["+"] = "-", ["/"] = "_" }
local from_url = { ["-"] = "+", ["_"] = "/" }

--- URL-safe base64 without padding (RFC 4648 §5, as JWT uses it).
---@param s string
---@return string
function M.b64url(s)
  return (core.b64(s):gsub("[+/]", to_url):gsub("=+$", ""))
end

--- Bytes from URL-safe base64; padding optional; nil, msg, "EINVAL" on
--- anything else (including characters of the standard alphabet `+` `/`).
---@param s string
---@return string|nil bytes, string? msg, string? code
function M.unb64url(s)
  if type(s) ~= "string" then
    error(("bad argument #1 to 'unb64url' (string expected, got %s)"):format(type(s)), 2)
  end
  local body = s:gsub("=+$", "", 1)
  if body:find("[^%w%-_]") then
    return nil, "unb64url: not a base64url character", "EINVAL"
  end
  if #body % 4 == 1 then
    return nil, "unb64url: impossible length", "EINVAL"
  end
  if #s ~= #body and #s % 4 ~= 0 then
    return nil, "unb64url: wrong padding", "EINVAL"
  end
  local std = body:gsub("[-_]", from_url) .. ("="):rep((4 - #body % 4) % 4)
  local bytes = core.unb64(std)
  if not bytes then
    return nil, "unb64url: non-canonical encoding", "EINVAL"
  end
  return bytes
end

--- A short, comparable, non-reversible tag for a secret: "sha256:" and the
--- first 8 hex characters of its SHA-256 (how secrets are shown in output).
---@param s string
---@return string
function M.fingerprint(s)
  return "sha256:" .. core.hex(core.sha256(s)):sub(1, 8)
end

-- the primitives themselves, resolved (and libcrypto loaded) on first access
setmetatable(M, { __index = function(t, k)
  if not REEXPORTED[k] then return nil end
  local f = core[k]
  rawset(t, k, f)
  return f
end })

return M
