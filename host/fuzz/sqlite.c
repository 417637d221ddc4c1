/*
 * fuzz/sqlite.c — libFuzzer harness for the SQL text handling of
 * host/sqlite.c: sql_summary (the start of the SQL quoted in error
 * messages) and db:prepare's "exactly one statement" rule.
 *
 * sql_summary(x), x up to its first NUL:
 *   - whitespace runs become one space, none at either end;
 *   - when that fits in SUMMARY_MAX bytes it is the summary, whole;
 *   - otherwise the summary is a prefix of it (no trailing space, at most
 *     4 bytes shorter than SUMMARY_MAX) followed by "...";
 *   - valid UTF-8 stays valid UTF-8 (a character is never cut in two).
 * db:prepare(x) on an in-memory database:
 *   - returns a statement only when x holds exactly one statement: after
 *     it, sqlite itself finds nothing but whitespace, ';' and comments;
 *   - raises "more than one statement" only when sqlite finds more there,
 *     and "no SQL statement" only when there is none at all;
 *   - otherwise returns nil, "sqlite: <summary>: <errmsg>", "SQLITE_*".
 */
#include "../sqlite.c"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"

/* Structurally valid UTF-8: every lead byte has its continuation bytes. */
static int valid_utf8(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t k;
    if (c < 0x80)
      k = 0;
    else if (c >= 0xC2 && c <= 0xDF)
      k = 1;
    else if ((c & 0xF0) == 0xE0)
      k = 2;
    else if (c >= 0xF0 && c <= 0xF4)
      k = 3;
    else
      return 0;
    for (size_t j = 1; j <= k; j++)
      if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
        return 0;
    i += k + 1;
  }
  return 1;
}

static void check_summary(const char *sql) {
  /* the model: collapse whitespace */
  size_t n = strlen(sql);
  char *want = malloc(n + 1);
  if (want == NULL)
    abort();
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (isspace((unsigned char)sql[i])) {
      if (w > 0 && want[w - 1] != ' ')
        want[w++] = ' ';
    } else {
      want[w++] = sql[i];
    }
  }
  if (w > 0 && want[w - 1] == ' ')
    w--;

  char out[SUMMARY_MAX + 4];
  memset(out, 'X', sizeof out);
  sql_summary(sql, out);
  const char *nul = memchr(out, '\0', sizeof out);
  if (nul == NULL)
    FAIL("summary not terminated");
  size_t olen = (size_t)(nul - out);
  if (w <= SUMMARY_MAX) {
    if (olen != w || memcmp(out, want, w) != 0)
      FAIL("summary of a short SQL is not the SQL: got [%s]", out);
  } else {
    if (olen < 3 || memcmp(out + olen - 3, "...", 3) != 0)
      FAIL("summary of a long SQL does not end in ...: [%s]", out);
    size_t plen = olen - 3;
    if (plen > SUMMARY_MAX || plen + 4 < SUMMARY_MAX || memcmp(out, want, plen) != 0)
      FAIL("summary [%s] is not a prefix of the SQL of %d to %d bytes", out, SUMMARY_MAX - 4,
           SUMMARY_MAX);
    if (plen > 0 && out[plen - 1] == ' ')
      FAIL("summary ends in a space before ...: [%s]", out);
    if (valid_utf8((const unsigned char *)want, w) && !valid_utf8((const unsigned char *)out, olen))
      FAIL("summary cuts a UTF-8 character: [%s]", out);
  }
  free(want);
}

/* What sqlite reads after the first statement: 0 nothing (whitespace as
 * isspace() has it, comments, ';'), 1 another statement or an error. */
static int tail_has_more(sqlite3 *db, const char *tail) {
  while (tail != NULL && (isspace((unsigned char)*tail) || *tail == ';'))
    tail++;
  while (tail != NULL && *tail != '\0') {
    sqlite3_stmt *st = NULL;
    const char *next = NULL;
    if (sqlite3_prepare_v2(db, tail, -1, &st, &next) != SQLITE_OK)
      return 1;
    if (st != NULL) {
      sqlite3_finalize(st);
      return 1;
    }
    if (next == tail) /* no progress: only possible at the end */
      break;
    tail = next;
  }
  return 0;
}

static void check_prepare(const char *sql, size_t len) {
  lua_State *L = luaL_newstate();
  luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L, "core", luaopen_runbook_sqlite_core, 1);
  lua_settop(L, 0);
  static const char chunk[] =
      "local core, sql = ...\n"
      "local db = assert(core.open(':memory:'))\n"
      "assert(db:exec('CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)'))\n"
      "local ok, st, msg, code = pcall(db.prepare, db, sql)\n"
      "if ok and st then st:close() end\n"
      "db:close()\n"
      "return ok, st, msg, code\n";
  if (luaL_loadbuffer(L, chunk, sizeof chunk - 1, "=prepare") != LUA_OK)
    FAIL("chunk: %s", lua_tostring(L, -1));
  lua_getglobal(L, "core");
  lua_pushlstring(L, sql, len);
  if (lua_pcall(L, 2, 4, 0) != LUA_OK)
    FAIL("setup raised: %s", lua_tostring(L, -1));
  int ok = lua_toboolean(L, 1);
  const char *err = ok ? NULL : lua_tostring(L, 2);

  /* what sqlite itself makes of the text */
  sqlite3 *db = NULL;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
      sqlite3_exec(db, "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)", NULL, NULL, NULL) != SQLITE_OK)
    FAIL("sqlite3_open: %s", sqlite3_errmsg(db));
  sqlite3_stmt *st = NULL;
  const char *tail = NULL;
  int rc = sqlite3_prepare_v2(db, sql, (int)len + 1, &st, &tail);
  int none = rc == SQLITE_OK && st == NULL;
  int more = rc == SQLITE_OK && st != NULL && tail_has_more(db, tail);
  sqlite3_finalize(st);
  sqlite3_close(db);

  if (ok && lua_isnil(L, 2)) { /* expected failure */
    const char *msg = lua_tostring(L, 3), *code = lua_tostring(L, 4);
    if (rc == SQLITE_OK)
      FAIL("prepare failed though sqlite prepares it: %s", msg ? msg : "?");
    if (msg == NULL || strncmp(msg, "sqlite: ", 8) != 0 || code == NULL ||
        strncmp(code, "SQLITE_", 7) != 0)
      FAIL("bad failure: %s %s", msg ? msg : "nil", code ? code : "nil");
  } else if (ok) {
    if (rc != SQLITE_OK || none || more)
      FAIL("prepare accepted text that is %s", rc != SQLITE_OK ? "an error" : none ? "empty" : "two statements");
  } else if (err != NULL && strstr(err, "more than one statement") != NULL) {
    if (!more)
      FAIL("refused as two statements, but sqlite finds only one");
  } else if (err != NULL && strstr(err, "no SQL statement") != NULL) {
    if (!none)
      FAIL("refused as empty, but sqlite finds a statement");
  } else {
    FAIL("prepare raised: %s", err ? err : "?");
  }
  lua_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *sql = malloc(size + 1);
  if (sql == NULL)
    abort();
  memcpy(sql, data, size);
  sql[size] = '\0';
  check_summary(sql);
  if (memchr(data, '\0', size) == NULL && size < INT_MAX)
    check_prepare(sql, size);
  free(sql);
  return 0;
}
