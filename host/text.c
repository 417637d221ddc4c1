/*
 * text.c — runbook.text.core: one pass over a Lua string for what would
 * otherwise cost a Lua-level call per byte of interest.
 *
 *   find_all(s, needles) -> pos, which, line, lstart
 *       Every occurrence of any of the needles (plain bytes, 1 to 16
 *       non-empty strings) in s, in ascending position order, like
 *       `grep -bn` with fixed strings: pos[i] is its 1-based position,
 *       which[i] the index of the needle found there (the first in the list
 *       when several match at one position), line[i] its 1-based line
 *       number and lstart[i] the position of that line's first byte.
 *       Occurrences may overlap.
 *
 *   last_of(s, set, init [, stop [, outside]]) -> pos | nil
 *       The last position in s[stop..init] (default s[1..#s]) whose byte
 *       is one of the bytes of set — or, with outside, is none of them —
 *       like strrchr for a set of bytes, or a backward strspn.  nil when
 *       there is none (and when init < stop).
 *
 * kv-audit finds ".put" / ".get" / ".delete" / ".list" this way: a
 * string.find loop per needle stops at every dot of a JavaScript file once
 * per needle, and numbering lines costs a string.find per newline.  Here,
 * when every needle starts with the same byte, memchr jumps from one such
 * byte to the next (else a table of first bytes is tested at each byte),
 * and newlines are counted with memchr only up to the last occurrence.
 * It reads backwards from a call with last_of — the receiver before the
 * dot, the braces enclosing it, the head of each block — where Lua would
 * have to reverse the text (a copy of the file) or try an anchored match
 * at every position.
 */
#define _GNU_SOURCE
#include <string.h>

#include "host.h"

#define MAX_NEEDLES 16

static int t_find_all(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer k = luaL_len(L, 2);
  luaL_argcheck(L, k >= 1 && k <= MAX_NEEDLES, 2, "1 to 16 needles");
  const char *nd[MAX_NEEDLES];
  size_t nl[MAX_NEEDLES];
  unsigned char first[256] = {0}, second[256] = {0};
  int distinct = 0, short_needle = 0;
  for (int i = 0; i < (int)k; i++) {
    lua_rawgeti(L, 2, i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_argerror(L, 2, "needles must be non-empty strings");
    nd[i] = lua_tolstring(L, -1, &nl[i]); /* kept alive by the needles table */
    if (nl[i] == 0)
      return luaL_argerror(L, 2, "needles must be non-empty strings");
    lua_pop(L, 1);
    if (!first[(unsigned char)nd[i][0]]++)
      distinct++;
    if (nl[i] == 1)
      short_needle = 1;
    else
      second[(unsigned char)nd[i][1]] = 1;
  }
  lua_createtable(L, 8, 0); /* pos */
  lua_createtable(L, 8, 0); /* which */
  lua_createtable(L, 8, 0); /* line */
  lua_createtable(L, 8, 0); /* lstart */
  int base = lua_gettop(L) - 3;
  const char *end = s + len;
  const char *nlp = memchr(s, '\n', len); /* the next newline not yet counted */
  lua_Integer line = 1, out = 0;
  size_t ls = 0; /* 0-based start of the current line */
  const unsigned char only = (unsigned char)nd[0][0];
  for (const char *p = s; p < end; p++) {
    if (distinct == 1) {
      p = memchr(p, only, (size_t)(end - p));
      if (p == NULL)
        break;
    } else if (!first[(unsigned char)*p]) {
      continue;
    }
    size_t left = (size_t)(end - p);
    /* most candidate bytes (a dot) are followed by no needle's 2nd byte */
    if (!short_needle && (left < 2 || !second[(unsigned char)p[1]]))
      continue;
    int hit = -1;
    for (int i = 0; i < (int)k && hit < 0; i++) {
      const char *n = nd[i];
      size_t m = nl[i];
      if (n[0] != *p || m > left)
        continue;
      if (m > 1 && n[1] != p[1])
        continue;
      if (m <= 2 || memcmp(p + 2, n + 2, m - 2) == 0)
        hit = i;
    }
    if (hit < 0)
      continue;
    while (nlp != NULL && nlp < p) {
      line++;
      ls = (size_t)(nlp - s) + 1;
      nlp = memchr(nlp + 1, '\n', (size_t)(end - nlp - 1));
    }
    out++;
    lua_pushinteger(L, (lua_Integer)(p - s) + 1);
    lua_rawseti(L, base, out);
    lua_pushinteger(L, hit + 1);
    lua_rawseti(L, base + 1, out);
    lua_pushinteger(L, line);
    lua_rawseti(L, base + 2, out);
    lua_pushinteger(L, (lua_Integer)ls + 1);
    lua_rawseti(L, base + 3, out);
  }
  return 4;
}

static int t_last_of(lua_State *L) {
  size_t len, n;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *set = luaL_checklstring(L, 2, &n);
  lua_Integer init = luaL_optinteger(L, 3, (lua_Integer)len);
  lua_Integer stop = luaL_optinteger(L, 4, 1);
  int outside = lua_toboolean(L, 5);
  if (init > (lua_Integer)len)
    init = (lua_Integer)len;
  if (stop < 1)
    stop = 1;
  if (init < stop) {
    lua_pushnil(L);
    return 1;
  }
  if (n == 1 && !outside) {
    const char *p = memrchr(s + stop - 1, set[0], (size_t)(init - stop + 1));
    if (p == NULL)
      lua_pushnil(L);
    else
      lua_pushinteger(L, (lua_Integer)(p - s) + 1);
    return 1;
  }
  unsigned char in[256] = {0};
  for (size_t i = 0; i < n; i++)
    in[(unsigned char)set[i]] = 1;
  unsigned char want = outside ? 0 : 1;
  for (lua_Integer i = init; i >= stop; i--) {
    if (in[(unsigned char)s[i - 1]] == want) {
      lua_pushinteger(L, i);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

int luaopen_runbook_text_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"find_all", t_find_all},
      {"last_of", t_last_of},
      {NULL, NULL},
  };
  luaL_newlib(L, fns);
  return 1;
}
