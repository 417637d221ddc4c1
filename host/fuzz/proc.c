/*
 * fuzz/proc.c — libFuzzer harness for the line splitter behind
 * proc.run{ stdout = function(line) ... } (feed_lines in host/proc.c).
 *
 * The input is a child's output stream.  It is fed to the splitter three
 * ways: in one piece, one byte at a time, and in chunks whose sizes come
 * from a PRNG seeded by the input (a pipe can cut the stream anywhere).
 * Each way must deliver exactly the pieces docs/HOST.md promises, computed
 * here independently: every line without its "\n" (CR and NUL are ordinary
 * bytes), the final unterminated line too, and a line longer than MAX_LINE
 * in MAX_LINE pieces.  So the result never depends on where reads end.
 *
 * MAX_LINE is made small so that long lines are cheap to reach.
 */
#define MAX_LINE ((size_t)16)
#include "../proc.c"

#include <stdio.h>

#include "fuzz.h"

static lua_State *L;

/* stdout callback: append the line to the table in upvalue 1 */
static int collect(lua_State *S) {
  luaL_checktype(S, 1, LUA_TSTRING);
  lua_pushvalue(S, 1);
  lua_rawseti(S, lua_upvalueindex(1), (lua_Integer)lua_rawlen(S, lua_upvalueindex(1)) + 1);
  return 0;
}

static uint32_t rng(uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

/* Feed data in chunks (mode 0: whole, 1: bytes, 2: random sizes); leaves
 * the table of delivered lines on top of the stack. */
static void feed(const uint8_t *data, size_t size, int mode, uint32_t seed) {
  lua_settop(L, 0);
  lua_createtable(L, 0, 1); /* 1: the option table deliver_line reads */
  lua_newtable(L);          /* 2: the lines */
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, collect, 1);
  lua_setfield(L, 1, "stdout");

  struct run r;
  memset(&r, 0, sizeof r);
  r.child[0] = r.child[1] = r.child[2] = r.in_fd = -1;
  r.out[0].fd = r.out[1].fd = -1;
  r.out[0].mode = OUT_LINES;
  struct stream *s = &r.out[0];
  size_t off = 0;
  while (off < size) {
    size_t n = size - off;
    if (mode == 1)
      n = 1;
    else if (mode == 2 && n > 1)
      n = 1 + rng(&seed) % (n < 3 * MAX_LINE ? n : 3 * MAX_LINE);
    reserve(L, &r, s, n);
    memcpy(s->buf + s->len, data + off, n);
    s->len += n;
    off += n;
    feed_lines(L, &r, 0, 0);
    if (s->len > MAX_LINE) {
      fprintf(stderr, "splitter holds %zu bytes without delivering (MAX_LINE %zu)\n", s->len,
              MAX_LINE);
      abort();
    }
  }
  feed_lines(L, &r, 0, 1); /* EOF */
  run_release(&r);
  lua_settop(L, 2);
}

static void check(const uint8_t *data, size_t size, const char *how) {
  lua_Integer k = 0, got = (lua_Integer)lua_rawlen(L, -1);
  const uint8_t *p = data, *end = data + size;
  while (p < end) {
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    size_t off = 0;
    do { /* an empty line is one empty piece */
      size_t n = len - off < MAX_LINE ? len - off : MAX_LINE;
      k++;
      lua_rawgeti(L, -1, k);
      size_t glen = 0;
      const char *g = lua_tolstring(L, -1, &glen);
      if (g == NULL || glen != n || memcmp(g, p + off, n) != 0) {
        fprintf(stderr, "fed %s: piece %lld is %s (%zu bytes), want %zu bytes at offset %zu\n", how,
                (long long)k, g ? "different" : "missing", glen, n, (size_t)(p + off - data));
        abort();
      }
      lua_pop(L, 1);
      off += n;
    } while (off < len);
    p += len + (nl ? 1 : 0);
  }
  if (got != k) {
    fprintf(stderr, "fed %s: %lld pieces delivered, want %lld\n", how, (long long)got, (long long)k);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* a fresh state per input, closed at the end: whatever libFuzzer sees
   * still allocated afterwards is a real leak */
  L = luaL_newstate();
  uint32_t seed = 2463534242u;
  for (size_t i = 0; i < size && i < 8; i++)
    seed = seed * 31 + data[i];
  if (seed == 0)
    seed = 1;
  feed(data, size, 0, seed);
  check(data, size, "whole");
  feed(data, size, 1, seed);
  check(data, size, "a byte at a time");
  feed(data, size, 2, seed);
  check(data, size, "in random chunks");
  lua_close(L);
  return 0;
}
