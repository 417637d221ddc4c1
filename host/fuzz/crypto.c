/*
 * fuzz/crypto.c — libFuzzer harness for the codecs of host/crypto.c:
 * hex/unhex and b64/unb64, through their Lua entry points.
 *
 * For any input bytes:
 *   - unhex(hex(x)) == x, hex(x) is 2n lower-case hex digits;
 *   - unb64(b64(x)) == x, b64(x) is the padded standard alphabet, 4 per 3;
 *   - unhex(x) succeeds exactly when x is an even number of hex digits
 *     (either case), and then hex(unhex(x)) == lower(x);
 *   - unb64(x) succeeds exactly when x is strict base64 as docs/HOST.md
 *     defines it (decided here by a separate decoder), returns the same
 *     bytes as that decoder, and b64(unb64(x)) == x (one accepted form);
 *   - a refusal is nil, one of the fixed messages, "EINVAL": the input is
 *     never quoted.
 */
#include "../crypto.c"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"

static lua_State *L;

/* f(s) with the results left on the stack; returns how many. */
static int call(lua_CFunction f, const char *s, size_t n) {
  lua_settop(L, 0);
  lua_pushcfunction(L, f);
  lua_pushlstring(L, s, n);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK)
    FAIL("raised: %s", lua_tostring(L, -1));
  return lua_gettop(L);
}

static void expect_refusal(int nres, const char *fname, const char *const msgs[]) {
  if (nres != 3 || !lua_isnil(L, 1) || lua_type(L, 2) != LUA_TSTRING ||
      strcmp(lua_tostring(L, 3), "EINVAL") != 0)
    FAIL("%s: a refusal must be nil, msg, EINVAL", fname);
  for (int i = 0; msgs[i] != NULL; i++)
    if (strcmp(lua_tostring(L, 2), msgs[i]) == 0)
      return;
  FAIL("%s: unexpected message %s", fname, lua_tostring(L, 2));
}

static char *dup_result(size_t *n) {
  if (lua_type(L, 1) != LUA_TSTRING)
    FAIL("expected a string result");
  const char *s = lua_tolstring(L, 1, n);
  char *c = malloc(*n + 1);
  if (c == NULL)
    abort();
  memcpy(c, s, *n);
  return c;
}

static int b64index(unsigned char c) {
  static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *p = c ? strchr(A, c) : NULL;
  return p ? (int)(p - A) : -1;
}

/* Strict RFC 4648 decoding, bit by bit: returns the length or -1. */
static long ref_unb64(const unsigned char *s, size_t n, unsigned char *out) {
  if (n % 4 != 0)
    return -1;
  size_t pad = 0;
  while (pad < 2 && pad < n && s[n - 1 - pad] == '=')
    pad++;
  unsigned long acc = 0;
  int bits = 0;
  long o = 0;
  for (size_t i = 0; i < n - pad; i++) {
    int v = b64index(s[i]);
    if (v < 0)
      return -1;
    acc = (acc << 6) | (unsigned long)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1ul << bits) - 1;
    }
  }
  /* leftover bits must be zero and exactly what the padding implies */
  if (acc != 0 || (pad == 0 && bits != 0) || (pad == 1 && bits != 2) || (pad == 2 && bits != 4))
    return -1;
  return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const hex_msgs[] = {"unhex: odd number of hex digits", "unhex: not a hex digit",
                                         NULL};
  static const char *const b64_msgs[] = {"unb64: length is not a multiple of 4",
                                         "unb64: not a base64 character",
                                         "unb64: non-canonical padding", "unb64: not valid base64",
                                         NULL};
  /* a fresh state per input, closed at the end: whatever libFuzzer sees
   * still allocated afterwards is a real leak */
  L = luaL_newstate();
  const char *in = (const char *)data;
  size_t n;

  /* hex round trip */
  call(c_hex, in, size);
  char *h = dup_result(&n);
  if (n != 2 * size)
    FAIL("hex: %zu chars for %zu bytes", n, size);
  for (size_t i = 0; i < n; i++)
    if (!strchr("0123456789abcdef", h[i]) || h[i] == '\0')
      FAIL("hex: not lower-case hex at %zu", i);
  call(c_unhex, h, n);
  free(h);
  h = dup_result(&n);
  if (n != size || memcmp(h, in, size) != 0)
    FAIL("unhex(hex(x)) ~= x");
  free(h);

  /* b64 round trip */
  call(c_b64, in, size);
  char *b = dup_result(&n);
  if (n != 4 * ((size + 2) / 3))
    FAIL("b64: %zu chars for %zu bytes", n, size);
  call(c_unb64, b, n);
  free(b);
  b = dup_result(&n);
  if (n != size || memcmp(b, in, size) != 0)
    FAIL("unb64(b64(x)) ~= x");
  free(b);

  /* unhex on arbitrary text */
  int ok = size % 2 == 0;
  for (size_t i = 0; ok && i < size; i++)
    ok = isxdigit((unsigned char)in[i]) != 0;
  int nres = call(c_unhex, in, size);
  if (!ok) {
    expect_refusal(nres, "unhex", hex_msgs);
  } else {
    char *raw = dup_result(&n);
    call(c_hex, raw, n);
    free(raw);
    const char *again = lua_tostring(L, 1);
    for (size_t i = 0; i < size; i++)
      if (again[i] != tolower((unsigned char)in[i]))
        FAIL("hex(unhex(x)) ~= lower(x)");
  }

  /* unb64 on arbitrary text, against the reference decoder */
  unsigned char *want = malloc(size + 1);
  if (want == NULL)
    abort();
  long wlen = ref_unb64(data, size, want);
  nres = call(c_unb64, in, size);
  if (wlen < 0) {
    if (!lua_isnil(L, 1))
      FAIL("unb64 accepted what strict base64 refuses");
    expect_refusal(nres, "unb64", b64_msgs);
  } else {
    if (lua_isnil(L, 1))
      FAIL("unb64 refused valid base64: %s", lua_tostring(L, 2));
    char *raw = dup_result(&n);
    if ((long)n != wlen || memcmp(raw, want, n) != 0)
      FAIL("unb64 decoded %zu bytes differently from the reference (%ld bytes)", n, wlen);
    call(c_b64, raw, n);
    free(raw);
    size_t blen;
    const char *again = lua_tolstring(L, 1, &blen);
    if (blen != size || memcmp(again, in, size) != 0)
      FAIL("b64(unb64(x)) ~= x");
  }
  free(want);
  lua_close(L);
  return 0;
}
