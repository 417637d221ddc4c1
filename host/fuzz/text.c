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
 *
 * Then the JS outline functions on the text as source: js_lex's ranges
 * must be sorted, apart and inside the text (a literal may end at #text);
 * js_in_code at every position must agree with them; js_args from every
 * "(" must give ranges between it and its close (or the window), in order;
 * js_open_before must land on a "{" before p, js_block_head inside 1..e,
 * js_expr_end and js_quote_end inside 1..#text+1.
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

static lua_Integer call_int(lua_State *L, lua_CFunction f, const char *s, size_t len, lua_Integer a,
                            lua_Integer b, int nres, lua_Integer *second) {
  lua_settop(L, 0);
  lua_pushcfunction(L, f);
  lua_pushlstring(L, s, len);
  lua_pushinteger(L, a);
  lua_pushinteger(L, b);
  if (lua_pcall(L, 3, nres, 0) != LUA_OK)
    FAIL("js function raised: %s", lua_tostring(L, -1));
  if (second)
    *second = lua_isnil(L, -1) ? -1 : lua_tointeger(L, -1);
  return lua_isnil(L, -nres) ? 0 : lua_tointeger(L, -nres);
}

static void js_checks(lua_State *L, const char *s, size_t len) {
  lua_Integer n = (lua_Integer)len;
  /* js_lex: sorted, apart, inside */
  lua_settop(L, 0);
  lua_pushcfunction(L, t_js_lex);
  lua_pushlstring(L, s, len);
  if (lua_pcall(L, 1, 3, 0) != LUA_OK)
    FAIL("js_lex raised: %s", lua_tostring(L, -1));
  lua_Integer k = lua_tointeger(L, 3), prev = 0;
  char *in = calloc(len + 2, 1);
  if (in == NULL)
    abort();
  for (lua_Integer i = 1; i <= k; i++) {
    lua_Integer a = geti(L, 1, i), b = geti(L, 2, i);
    if (a < 1 || a > n + 1 || b > n || b < a - 1 || a <= prev)
      FAIL("js_lex range %lld: %lld..%lld after %lld in %lld bytes", (long long)i, (long long)a,
           (long long)b, (long long)prev, (long long)n);
    for (lua_Integer p = a; p <= b; p++)
      in[p] = 1;
    prev = b >= a ? b : a - 1;
  }
  /* js_in_code at every position agrees */
  lua_settop(L, 0);
  lua_pushcfunction(L, t_js_in_code);
  lua_pushlstring(L, s, len);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer p = 1; p <= n; p++) {
    lua_pushinteger(L, p);
    lua_rawseti(L, -2, p);
  }
  if (lua_pcall(L, 2, 1, 0) != LUA_OK)
    FAIL("js_in_code raised: %s", lua_tostring(L, -1));
  for (lua_Integer p = 1; p <= n; p++) {
    lua_rawgeti(L, 1, p);
    int code = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (code == in[p])
      FAIL("js_in_code(%lld) = %d, js_lex says %s", (long long)p, code, in[p] ? "literal" : "code");
  }
  free(in);
  for (lua_Integer p = 1; p <= n; p++) {
    char c = s[p - 1];
    if (c == '(') {
      lua_Integer close = -1;
      call_int(L, t_js_args, s, len, p, 64, 2, &close);
      lua_Integer m = (lua_Integer)lua_rawlen(L, 1), last = p;
      for (lua_Integer i = 1; i <= m; i += 2) {
        lua_Integer a = geti(L, 1, i), b = geti(L, 1, i + 1);
        if (a <= last || (close > 0 && b >= close) || b > n || b < a - 1 - 64)
          FAIL("js_args(%lld) range %lld..%lld after %lld, close %lld", (long long)p, (long long)a,
               (long long)b, (long long)last, (long long)close);
        last = b > a ? b : a;
      }
      if (close > 0 && (close <= p || close > n || s[close - 1] != ')'))
        FAIL("js_args(%lld) closes at %lld", (long long)p, (long long)close);
    }
    lua_Integer used = 0, q = call_int(L, t_js_open_before, s, len, p, 400, 2, &used);
    if (q && (q > p || s[q - 1] != '{'))
      FAIL("js_open_before(%lld) = %lld", (long long)p, (long long)q);
    lua_Integer last = 0, first = call_int(L, t_js_block_head, s, len, p, 0, 2, &last);
    if (first < 1 || last > p || (first <= last && (first > p)))
      FAIL("js_block_head(%lld) = %lld..%lld", (long long)p, (long long)first, (long long)last);
    lua_Integer e = call_int(L, t_js_expr_end, s, len, p, 0, 1, NULL);
    if (e < p || e > n + 1)
      FAIL("js_expr_end(%lld) = %lld", (long long)p, (long long)e);
    if (c == '"' || c == '\'') {
      e = call_int(L, t_js_quote_end, s, len, p, 0, 1, NULL);
      if (e <= p || e > n + 1 || (e <= n && s[e - 1] != c && s[e - 1] != '\n'))
        FAIL("js_quote_end(%lld) = %lld", (long long)p, (long long)e);
    }
  }
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
  js_checks(L, s, len);
  lua_close(L);
  return 0;
}
