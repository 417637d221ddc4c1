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
 * kv-audit finds ".put" / ".get" / ".delete" / ".list" this way: a
 * string.find loop per needle stops at every dot of a JavaScript file once
 * per needle, and numbering lines costs a string.find per newline.  Here,
 * when every needle starts with the same byte, memchr jumps from one such
 * byte to the next (else a table of first bytes is tested at each byte),
 * and newlines are counted with memchr only up to the last occurrence.
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

int luaopen_runbook_text_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"find_all", t_find_all},
      {NULL, NULL},
  };
  luaL_newlib(L, fns);
  return 1;
}
