/*
 * fuzz/text.c — libFuzzer harness for find_all (host/text.c), which walks
 * a string with memchr and pointer arithmetic.
 *
 * Input: byte 0 picks how many needles (1..4); each needle is a length
 * byte (1..8) and that many bytes; the rest is the text.  find_all's four
 * arrays must equal a naive model: at every position, in order, the first
 * needle that matches there; its 1-based line (newlines before it + 1) and
 * the position after the last newline before it.
 *
 * Then last_of, with the first needle as the set, at every init from -1 to
 * #text+1, a stop and inside/outside taken from byte 0, must equal a naive
 * backward loop over the clamped range.
 */
#include "../text.c"

#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"

static lua_Integer geti(lua_State *L, int t, lua_Integer i) {
  lua_rawgeti(L, t, i);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t at = 0;
  int k = data[at++] % 4 + 1;
  const char *nd[4];
  size_t nl[4];
  for (int i = 0; i < k; i++) {
    if (at >= size)
      return 0;
    nl[i] = data[at++] % 8 + 1;
    if (at + nl[i] > size)
      return 0;
    nd[i] = (const char *)data + at;
    at += nl[i];
  }
  const char *s = (const char *)data + at;
  size_t len = size - at;

  lua_State *L = luaL_newstate();
  if (L == NULL)
    abort();
  lua_pushcfunction(L, t_find_all);
  lua_pushlstring(L, s, len);
  lua_createtable(L, k, 0);
  for (int i = 0; i < k; i++) {
    lua_pushlstring(L, nd[i], nl[i]);
    lua_rawseti(L, -2, i + 1);
  }
  if (lua_pcall(L, 2, 4, 0) != LUA_OK)
    FAIL("find_all raised: %s", lua_tostring(L, -1));
  int t = lua_gettop(L) - 3;
  lua_Integer n = (lua_Integer)lua_rawlen(L, t);
  for (int j = 1; j < 4; j++)
    if ((lua_Integer)lua_rawlen(L, t + j) != n)
      FAIL("find_all: arrays of different lengths");

  lua_Integer seen = 0, line = 1;
  size_t ls = 0;
  for (size_t p = 0; p < len; p++) {
    int hit = -1;
    for (int i = 0; i < k && hit < 0; i++)
      if (nl[i] <= len - p && memcmp(s + p, nd[i], nl[i]) == 0)
        hit = i;
    if (hit >= 0) {
      seen++;
      if (seen > n)
        FAIL("find_all missed the occurrence at %zu", p + 1);
      if (geti(L, t, seen) != (lua_Integer)p + 1 || geti(L, t + 1, seen) != hit + 1 ||
          geti(L, t + 2, seen) != line || geti(L, t + 3, seen) != (lua_Integer)ls + 1)
        FAIL("find_all hit %lld: pos %lld needle %lld line %lld lstart %lld, expected %zu %d %lld %zu",
             (long long)seen, (long long)geti(L, t, seen), (long long)geti(L, t + 1, seen),
             (long long)geti(L, t + 2, seen), (long long)geti(L, t + 3, seen), p + 1, hit + 1,
             (long long)line, ls + 1);
    }
    if (s[p] == '\n') {
      line++;
      ls = p + 1;
    }
  }
  if (seen != n)
    FAIL("find_all found %lld occurrences, expected %lld", (long long)n, (long long)seen);

  int outside = (data[0] >> 2) & 1;
  lua_Integer stop = (lua_Integer)(data[0] >> 3) % 5 - 1; /* -1 .. 3 */
  for (lua_Integer init = -1; init <= (lua_Integer)len + 1; init++) {
    lua_settop(L, 0);
    lua_pushcfunction(L, t_last_of);
    lua_pushlstring(L, s, len);
    lua_pushlstring(L, nd[0], nl[0]);
    lua_pushinteger(L, init);
    lua_pushinteger(L, stop);
    lua_pushboolean(L, outside);
    if (lua_pcall(L, 5, 1, 0) != LUA_OK)
      FAIL("last_of raised: %s", lua_tostring(L, -1));
    lua_Integer got = lua_isnil(L, -1) ? 0 : lua_tointeger(L, -1), want = 0;
    lua_Integer hi = init > (lua_Integer)len ? (lua_Integer)len : init, lo = stop < 1 ? 1 : stop;
    for (lua_Integer i = hi; i >= lo && want == 0; i--) {
      int in = memchr(nd[0], s[i - 1], nl[0]) != NULL;
      if (in != outside)
        want = i;
    }
    if (got != want)
      FAIL("last_of(init %lld, stop %lld, outside %d) = %lld, expected %lld", (long long)init,
           (long long)stop, outside, (long long)got, (long long)want);
  }
  lua_close(L);
  return 0;
}
