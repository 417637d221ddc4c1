/*
 * fuzz/http.c — libFuzzer harness for the response-header handling of
 * host/http.c: on_header (the callback libcurl calls once per header line)
 * and push_headers (the Lua headers table built from what it kept).
 *
 * The input is a raw header block.  It is cut at every LF, LF kept, and each
 * piece is handed to on_header as libcurl would (a final piece without LF is
 * a line too: a server that never sends CRLF).  The table push_headers builds
 * is then compared with a model of docs/HOST.md written in Lua (below), and
 * checked for being well-formed on its own: names non-empty lower-case
 * tokens, values without CR or LF and without surrounding spaces.  Any
 * difference aborts, naming the header.
 *
 * The static functions are reached by including the module itself.
 */
#include "../http.c"

#include <lualib.h>

#include <stdint.h>
#include <stdio.h>

#include "fuzz.h"

/* The model: what the headers table of a response with these header lines
 * must be.  Written from the spec, not from the C code. */
static const char MODEL[] =
    "local input, got = ...\n"
    "local lines = {}\n"
    "for l in input:gmatch('[^\\n]*\\n?') do if l ~= '' then lines[#lines + 1] = l end end\n"
    /* only the final response counts: it starts at the last status line;
     * its first line (the status line) is not a header */
    "local start = 1\n"
    "for i, l in ipairs(lines) do if l:sub(1, 5) == 'HTTP/' then start = i end end\n"
    "local want, last = {}, nil\n"
    "local function trim(s) return (s:gsub('^[ \\t]+', ''):gsub('[ \\t]+$', '')) end\n"
    "local function join(old, new, sep)\n"
    "  if old == nil or old == '' then return new end\n"
    "  if new == '' then return old end\n"
    "  return old .. sep .. new\n"
    "end\n"
    "for i = start + 1, #lines do\n"
    /* without its LF and the CR before it; a bare CR reads as a space */
    "  local l = lines[i]:gsub('\\n$', ''):gsub('\\r$', ''):gsub('\\r', ' ')\n"
    "  if l:find('^[ \\t]') then\n"
    /* obsolete line folding: more of the previous header's value */
    "    if last then want[last] = join(want[last], trim(l), ' ') end\n"
    "  else\n"
    "    local name, value = l:match('^([^:]*):(.*)$')\n"
    "    name = name and name:gsub('[ \\t]+$', '')\n"
    "    if name and name:find(\"^[%w!#$%%&'*+%-.^_`|~]+$\") then\n"
    "      last = name:lower()\n"
    "      want[last] = join(want[last], trim(value), ', ')\n"
    "    else\n"
    "      last = nil\n" /* not a header: neither is a folded line after it */
    "    end\n"
    "  end\n"
    "end\n"
    "for k, v in pairs(got) do\n"
    "  if type(k) ~= 'string' or not k:find(\"^[%l%d!#$%%&'*+%-.^_`|~]+$\") then\n"
    "    return ('bad name %q'):format(tostring(k)) end\n"
    "  if type(v) ~= 'string' or v:find('[\\r\\n]') or v:find('^[ \\t]') or v:find('[ \\t]$') then\n"
    "    return ('bad value for %s: %q'):format(k, tostring(v)) end\n"
    "  if want[k] ~= v then return ('%s: got %q, want %q'):format(k, v, tostring(want[k])) end\n"
    "end\n"
    "for k, v in pairs(want) do\n"
    "  if got[k] == nil then return ('%s: missing, want %q'):format(k, v) end\n"
    "end\n"
    "return nil\n";

static lua_State *L;

static int run_push(lua_State *S) {
  push_headers(S, lua_touserdata(S, 1));
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* a fresh state per input, closed at the end: whatever libFuzzer sees
   * still allocated afterwards is a real leak */
  L = luaL_newstate();
  luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  lua_settop(L, 0);
  slot_t s;
  memset(&s, 0, sizeof s);
  const char *p = (const char *)data, *end = p + size;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
    if (on_header((char *)p, 1, n, &s) != n) {
      fprintf(stderr, "on_header refused a %zu-byte line\n", n);
      abort();
    }
    p += n;
  }

  if (luaL_loadbuffer(L, MODEL, sizeof MODEL - 1, "=model") != LUA_OK) {
    fprintf(stderr, "model: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pushlstring(L, (const char *)data, size);
  lua_pushcfunction(L, run_push);
  lua_pushlightuserdata(L, &s.head);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "push_headers raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    fprintf(stderr, "model raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  if (!lua_isnil(L, -1)) {
    fprintf(stderr, "headers table differs from the spec: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_close(L);
  buf_free(&s.head);
  return 0;
}
