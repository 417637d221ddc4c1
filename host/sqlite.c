/*
 * sqlite.c — runbook.sqlite.core: sqlite3 connections (Db) and prepared
 * statements (Stmt) as Lua handles, for the journal and the runbooks.
 *
 * Ownership: a Db keeps an intrusive list of its live statements, so that
 * closing the Db finalizes them first and marks them closed; a Stmt used
 * after that raises instead of touching a finalized sqlite3_stmt.  Each
 * Stmt also holds its Db userdata in a user value, so the garbage collector
 * never closes a Db while one of its statements is still reachable.
 *
 * Connections are opened with SQLITE_OPEN_NOMUTEX (a Lua state is single
 * threaded) and extended result codes; the code returned to Lua is the
 * primary code's name ("SQLITE_BUSY"), the stable part.  Error messages are
 * "sqlite: <path or start of the SQL>: <sqlite3_errmsg>" and never contain
 * bound values (they may be secrets).
 */
#include <ctype.h>
#include <limits.h>
#include <string.h>

#include <sqlite3.h>

#include "host.h"

int luaopen_runbook_sqlite_core(lua_State *L);

#define DB_MT "runbook.sqlite.Db"
#define STMT_MT "runbook.sqlite.Stmt"

typedef struct Stmt Stmt;

typedef struct Db {
  sqlite3 *db;  /* NULL once closed */
  Stmt *stmts;  /* live statements, most recent first */
} Db;

struct Stmt {
  sqlite3_stmt *st; /* NULL once closed (by itself or by its Db) */
  Db *owner;        /* NULL once closed */
  Stmt *prev, *next;
  int orphaned;     /* closed because the Db was closed */
};

/* ------------------------------------------------------------ errors */

static const char *code_name(int rc) {
  switch (rc & 0xff) {
#define C(x) case SQLITE_##x: return "SQLITE_" #x;
    C(ERROR) C(INTERNAL) C(PERM) C(ABORT) C(BUSY) C(LOCKED) C(NOMEM)
    C(READONLY) C(INTERRUPT) C(IOERR) C(CORRUPT) C(NOTFOUND) C(FULL)
    C(CANTOPEN) C(PROTOCOL) C(EMPTY) C(SCHEMA) C(TOOBIG) C(CONSTRAINT)
    C(MISMATCH) C(MISUSE) C(NOLFS) C(AUTH) C(FORMAT) C(RANGE) C(NOTADB)
    C(NOTICE) C(WARNING)
#undef C
  default: return "SQLITE_UNKNOWN";
  }
}

/* A one-line summary of SQL for messages: whitespace collapsed, cut at
 * SUMMARY_MAX bytes (never inside a UTF-8 character, never after a space)
 * and then marked "...".  SQL text is the caller's, values are bound, so
 * this shows no secrets. */
#define SUMMARY_MAX 60
static void sql_summary(const char *sql, char out[SUMMARY_MAX + 4]) {
  size_t j = 0;
  if (sql == NULL) sql = "";
  while (isspace((unsigned char)*sql)) sql++;
  while (*sql != '\0') {
    if (isspace((unsigned char)*sql)) {
      while (isspace((unsigned char)*sql)) sql++;
      if (*sql == '\0' || j == SUMMARY_MAX) break;
      out[j++] = ' ';
      continue;
    }
    if (j == SUMMARY_MAX) break;
    out[j++] = *sql++;
  }
  if (*sql != '\0') {
    /* the next byte continues a UTF-8 character: cut before its lead byte */
    unsigned char next = (unsigned char)*sql;
    for (int k = 0; k < 3 && j > 0 && (next & 0xC0) == 0x80; k++)
      next = (unsigned char)out[--j];
    while (j > 0 && out[j - 1] == ' ') j--;
    memcpy(out + j, "...", 3);
    j += 3;
  }
  out[j] = '\0';
}

/* nil, "sqlite: <where>: <errmsg>", "SQLITE_X"; returns 3. */
static int fail(lua_State *L, sqlite3 *db, int rc, const char *where) {
  lua_pushnil(L);
  lua_pushfstring(L, "sqlite: %s: %s", where,
                  db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  lua_pushstring(L, code_name(rc));
  return 3;
}

static int fail_sql(lua_State *L, sqlite3 *db, int rc, const char *sql) {
  char sum[SUMMARY_MAX + 4];
  sql_summary(sql, sum);
  return fail(L, db, rc, sum);
}

/* ------------------------------------------------------------ handles */

static Db *check_db(lua_State *L, int i) {
  Db *d = (Db *)luaL_checkudata(L, i, DB_MT);
  if (d->db == NULL)
    luaL_error(L, "sqlite: attempt to use a closed database");
  return d;
}

static Stmt *check_stmt(lua_State *L, int i) {
  Stmt *s = (Stmt *)luaL_checkudata(L, i, STMT_MT);
  if (s->st == NULL) {
    if (s->orphaned)
      luaL_error(L, "sqlite: attempt to use a statement whose database was closed");
    luaL_error(L, "sqlite: attempt to use a closed statement");
  }
  return s;
}

static void stmt_finalize(Stmt *s) {
  if (s->st == NULL) return;
  sqlite3_finalize(s->st);
  s->st = NULL;
  if (s->prev != NULL) s->prev->next = s->next;
  else if (s->owner != NULL) s->owner->stmts = s->next;
  if (s->next != NULL) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  s->owner = NULL;
}

static void db_finalize(Db *d) {
  if (d->db == NULL) return;
  while (d->stmts != NULL) {
    Stmt *s = d->stmts;
    stmt_finalize(s);
    s->orphaned = 1;
  }
  /* every statement is finalized, so this releases the connection now;
   * _v2 still guarantees no dangling handle if sqlite kept one (backups) */
  sqlite3_close_v2(d->db);
  d->db = NULL;
}

/* ------------------------------------------------------------ open */

static int opt_bool(lua_State *L, int t, const char *k, int def) {
  int ty = lua_getfield(L, t, k);
  int v = def;
  if (ty != LUA_TNIL) {
    luaL_argcheck(L, ty == LUA_TBOOLEAN, 2, lua_pushfstring(L, "'%s' must be a boolean", k));
    v = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* Option names, checked so a misspelt one raises instead of being ignored. */
static void check_opts(lua_State *L, int t) {
  static const char *const known[] = {"readonly", "create", "busy_timeout", "persist_wal", NULL};
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      for (int i = 0; known[i] != NULL; i++)
        if (strcmp(k, known[i]) == 0) ok = 1;
    }
    if (!ok)
      luaL_argerror(L, 2, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
  }
}

/* open(path, { readonly = false, create = true, busy_timeout = ms })
 * -> Db, or nil, msg, code. */
static int c_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int readonly = 0, create = 1, persist_wal = 0;
  lua_Integer busy = -1;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_opts(L, 2);
    readonly = opt_bool(L, 2, "readonly", 0);
    create = opt_bool(L, 2, "create", 1);
    persist_wal = opt_bool(L, 2, "persist_wal", 0);
    if (lua_getfield(L, 2, "busy_timeout") != LUA_TNIL) {
      int isint = 0;
      busy = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint && busy >= 0 && busy <= INT_MAX, 2,
                    "'busy_timeout' must be a non-negative integer (ms)");
    }
    lua_pop(L, 1);
  }
  int flags = SQLITE_OPEN_NOMUTEX;
  if (readonly)
    flags |= SQLITE_OPEN_READONLY;
  else
    flags |= SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);

  /* the userdata first: if anything below raises, __gc closes the handle */
  Db *d = (Db *)lua_newuserdatauv(L, sizeof(Db), 0);
  d->db = NULL;
  d->stmts = NULL;
  luaL_setmetatable(L, DB_MT);

  int rc = sqlite3_open_v2(path, &d->db, flags, NULL);
  if (rc != SQLITE_OK) {
    /* read the message before closing; the handle may be NULL (no memory) */
    int n = fail(L, d->db, rc, path);
    db_finalize(d);
    return n;
  }
  sqlite3_extended_result_codes(d->db, 1);
  if (busy >= 0)
    sqlite3_busy_timeout(d->db, (int)busy);
  if (persist_wal) {
    int on = 1;
    sqlite3_file_control(d->db, "main", SQLITE_FCNTL_PERSIST_WAL, &on);
  }
  return 1;
}

/* ------------------------------------------------------------ Db */

static const char *db_where(Db *d) {
  const char *f = sqlite3_db_filename(d->db, "main");
  return (f != NULL && *f != '\0') ? f : ":memory:";
}

/* db:exec(sql) -> true, or nil, msg, code. Several statements allowed. */
static int db_exec(lua_State *L) {
  Db *d = check_db(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  /* no errmsg out-parameter: sqlite would malloc it and a raise while
   * building our message would leak it; sqlite3_errmsg is enough */
  int rc = sqlite3_exec(d->db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    return fail_sql(L, d->db, rc, sql);
  lua_pushboolean(L, 1);
  return 1;
}

/* Is there nothing but whitespace, ';' and comments in the SQL after a
 * statement?  sqlite itself decides (a comment is not a second statement):
 * preparing the rest must yield no statement and no error. */
static int only_comments(sqlite3 *db, const char *tail) {
  while (*tail != '\0' && (isspace((unsigned char)*tail) || *tail == ';')) tail++;
  while (*tail != '\0') {
    sqlite3_stmt *st = NULL;
    const char *next = NULL;
    int rc = sqlite3_prepare_v2(db, tail, -1, &st, &next);
    if (rc != SQLITE_OK || st != NULL) {
      sqlite3_finalize(st);
      return 0;
    }
    if (next == NULL || next <= tail) break;
    tail = next;
  }
  return 1;
}

/* db:prepare(sql) -> Stmt, or nil, msg, code. Exactly one statement. */
static int db_prepare(lua_State *L) {
  Db *d = check_db(L, 1);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, len < INT_MAX, 2, "SQL too long");

  Stmt *s = (Stmt *)lua_newuserdatauv(L, sizeof(Stmt), 1);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, STMT_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* keep the Db alive while the Stmt is */

  const char *tail = NULL;
  int rc = sqlite3_prepare_v2(d->db, sql, (int)len + 1, &s->st, &tail);
  if (rc != SQLITE_OK)
    return fail_sql(L, d->db, rc, sql);
  /* link before anything can raise, so closing the Db always finds it */
  if (s->st != NULL) {
    s->owner = d;
    s->next = d->stmts;
    if (d->stmts != NULL) d->stmts->prev = s;
    d->stmts = s;
  }
  if (s->st == NULL)
    return luaL_argerror(L, 2, "no SQL statement");
  if (tail != NULL && !only_comments(d->db, tail)) {
    stmt_finalize(s);
    return luaL_argerror(L, 2, "more than one statement (use db:exec for a script)");
  }
  return 1;
}

static int db_changes(lua_State *L) {
  Db *d = check_db(L, 1);
  lua_pushinteger(L, (lua_Integer)sqlite3_changes64(d->db));
  return 1;
}

static int db_last_insert_rowid(lua_State *L) {
  Db *d = check_db(L, 1);
  lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(d->db));
  return 1;
}

/* db:busy_timeout(ms): how long a locked database is retried before
 * SQLITE_BUSY (0 = fail at once). */
static int db_busy_timeout(lua_State *L) {
  Db *d = check_db(L, 1);
  lua_Integer ms = luaL_checkinteger(L, 2);
  luaL_argcheck(L, ms >= 0 && ms <= INT_MAX, 2, "must be a non-negative number of ms");
  sqlite3_busy_timeout(d->db, (int)ms);
  lua_pushvalue(L, 1);
  return 1;
}

/* db:close(), __gc, __close: finalize the statements, close; idempotent. */
static int db_close(lua_State *L) {
  Db *d = (Db *)luaL_checkudata(L, 1, DB_MT);
  db_finalize(d);
  lua_pushboolean(L, 1);
  return 1;
}

static int db_tostring(lua_State *L) {
  Db *d = (Db *)luaL_checkudata(L, 1, DB_MT);
  if (d->db == NULL)
    lua_pushliteral(L, "sqlite.Db (closed)");
  else
    lua_pushfstring(L, "sqlite.Db (%s)", db_where(d));
  return 1;
}

/* ------------------------------------------------------------ Stmt */

/* Bind the value at stack index v to parameter i; raises on a type that
 * has no SQL form (the message names the parameter, never the value). */
static void bind_value(lua_State *L, Stmt *s, int i, int v, int arg) {
  int rc;
  switch (lua_type(L, v)) {
  case LUA_TNIL:
  case LUA_TNONE:
    rc = sqlite3_bind_null(s->st, i);
    break;
  case LUA_TBOOLEAN:
    rc = sqlite3_bind_int(s->st, i, lua_toboolean(L, v));
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, v))
      rc = sqlite3_bind_int64(s->st, i, (sqlite3_int64)lua_tointeger(L, v));
    else
      rc = sqlite3_bind_double(s->st, i, (double)lua_tonumber(L, v));
    break;
  case LUA_TSTRING: {
    size_t n;
    const char *p = lua_tolstring(L, v, &n);
    rc = sqlite3_bind_text64(s->st, i, p, n, SQLITE_TRANSIENT, SQLITE_UTF8);
    break;
  }
  case LUA_TTABLE: {
    if (lua_getfield(L, v, "blob") != LUA_TSTRING)
      luaL_argerror(L, arg, lua_pushfstring(L, "parameter %d: table is not {blob = string}", i));
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    rc = sqlite3_bind_blob64(s->st, i, p, n, SQLITE_TRANSIENT);
    lua_pop(L, 1);
    break;
  }
  default:
    luaL_argerror(L, arg, lua_pushfstring(L, "parameter %d: cannot bind a %s", i,
                                          luaL_typename(L, v)));
    return;
  }
  if (rc != SQLITE_OK)
    luaL_error(L, "sqlite: bind parameter %d: %s", i, sqlite3_errstr(rc));
}

/* Is the statement's first parameter named (:a @a $a), i.e. should a
 * single table argument be read by name? */
static int params_named(sqlite3_stmt *st) {
  if (sqlite3_bind_parameter_count(st) == 0) return 1;
  const char *name = sqlite3_bind_parameter_name(st, 1);
  return name != NULL && name[0] != '?';
}

/* stmt:bind(v1, v2, ...) positional, or stmt:bind{ name = v } when the
 * statement uses named parameters.  Resets the statement and clears every
 * earlier binding first: parameters not given are NULL.  Returns stmt. */
static int stmt_bind(lua_State *L) {
  Stmt *s = check_stmt(L, 1);
  int nargs = lua_gettop(L) - 1;
  int count = sqlite3_bind_parameter_count(s->st);
  sqlite3_reset(s->st);
  sqlite3_clear_bindings(s->st);
  if (nargs == 1 && lua_type(L, 2) == LUA_TTABLE && params_named(s->st)) {
    for (int i = 1; i <= count; i++) {
      const char *name = sqlite3_bind_parameter_name(s->st, i);
      if (name == NULL || name[0] == '?')
        luaL_argerror(L, 2, lua_pushfstring(L, "parameter %d has no name: bind positionally", i));
      lua_getfield(L, 2, name + 1);
      bind_value(L, s, i, lua_gettop(L), 2);
      lua_pop(L, 1);
    }
  } else {
    luaL_argcheck(L, nargs <= count, count + 2,
                  lua_pushfstring(L, "%d values for %d parameters", nargs, count));
    for (int i = 1; i <= nargs; i++)
      bind_value(L, s, i, i + 1, i + 1);
  }
  lua_settop(L, 1);
  return 1;
}

/* Push the current row as a table keyed by column name (NULL columns are
 * absent). */
static void push_row(lua_State *L, sqlite3_stmt *st) {
  int n = sqlite3_column_count(st);
  lua_createtable(L, 0, n);
  for (int i = 0; i < n; i++) {
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
      lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, i));
      break;
    case SQLITE_FLOAT:
      lua_pushnumber(L, (lua_Number)sqlite3_column_double(st, i));
      break;
    case SQLITE_TEXT: {
      const char *p = (const char *)sqlite3_column_text(st, i);
      lua_pushlstring(L, p != NULL ? p : "", (size_t)sqlite3_column_bytes(st, i));
      break;
    }
    case SQLITE_BLOB: {
      const char *p = (const char *)sqlite3_column_blob(st, i);
      lua_pushlstring(L, p != NULL ? p : "", (size_t)sqlite3_column_bytes(st, i));
      break;
    }
    default:
      continue; /* NULL: leave the field absent */
    }
    lua_setfield(L, -2, sqlite3_column_name(st, i));
  }
}

/* One step: 1 = row pushed, 0 = done, -1 = error (rc in *rcp). */
static int step(lua_State *L, Stmt *s, int *rcp) {
  int rc = sqlite3_step(s->st);
  if (rc == SQLITE_ROW) {
    push_row(L, s->st);
    return 1;
  }
  if (rc == SQLITE_DONE) return 0;
  *rcp = rc;
  return -1;
}

/* stmt:step() -> row table, false when done, or nil, msg, code. */
static int stmt_step(lua_State *L) {
  Stmt *s = check_stmt(L, 1);
  int rc = 0;
  switch (step(L, s, &rc)) {
  case 1: return 1;
  case 0: lua_pushboolean(L, 0); return 1;
  default: return fail_sql(L, sqlite3_db_handle(s->st), rc, sqlite3_sql(s->st));
  }
}

static int rows_next(lua_State *L) {
  Stmt *s = check_stmt(L, 1);
  int rc = 0;
  switch (step(L, s, &rc)) {
  case 1: return 1;
  case 0: return 0;
  default:
    fail_sql(L, sqlite3_db_handle(s->st), rc, sqlite3_sql(s->st));
    lua_pop(L, 1);
    return lua_error(L); /* the message, as for any other raise */
  }
}

/* for row in stmt:rows() do ... end — raises on an error. */
static int stmt_rows(lua_State *L) {
  check_stmt(L, 1);
  lua_pushcfunction(L, rows_next);
  lua_pushvalue(L, 1);
  return 2;
}

/* stmt:reset() -> stmt: back to the start; bindings are kept. */
static int stmt_reset(lua_State *L) {
  Stmt *s = check_stmt(L, 1);
  sqlite3_reset(s->st); /* repeats the last step's error, already reported */
  lua_settop(L, 1);
  return 1;
}

static int stmt_readonly(lua_State *L) {
  Stmt *s = check_stmt(L, 1);
  lua_pushboolean(L, sqlite3_stmt_readonly(s->st));
  return 1;
}

/* stmt:columns() -> array of result column names. */
static int stmt_columns(lua_State *L) {
  Stmt *s = check_stmt(L, 1);
  int n = sqlite3_column_count(s->st);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, sqlite3_column_name(s->st, i));
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* stmt:close(), __gc, __close: idempotent. */
static int stmt_close(lua_State *L) {
  Stmt *s = (Stmt *)luaL_checkudata(L, 1, STMT_MT);
  stmt_finalize(s);
  lua_pushboolean(L, 1);
  return 1;
}

static int stmt_tostring(lua_State *L) {
  Stmt *s = (Stmt *)luaL_checkudata(L, 1, STMT_MT);
  if (s->st == NULL) {
    lua_pushliteral(L, "sqlite.Stmt (closed)");
  } else {
    char sum[SUMMARY_MAX + 4];
    sql_summary(sqlite3_sql(s->st), sum);
    lua_pushfstring(L, "sqlite.Stmt (%s)", sum);
  }
  return 1;
}

/* ------------------------------------------------------------ module */

static const luaL_Reg db_methods[] = {
    {"exec", db_exec},
    {"prepare", db_prepare},
    {"changes", db_changes},
    {"last_insert_rowid", db_last_insert_rowid},
    {"busy_timeout", db_busy_timeout},
    {"close", db_close},
    {NULL, NULL},
};

static const luaL_Reg db_meta[] = {
    {"__gc", db_close},
    {"__close", db_close},
    {"__tostring", db_tostring},
    {NULL, NULL},
};

static const luaL_Reg stmt_methods[] = {
    {"bind", stmt_bind},
    {"step", stmt_step},
    {"rows", stmt_rows},
    {"reset", stmt_reset},
    {"readonly", stmt_readonly},
    {"columns", stmt_columns},
    {"close", stmt_close},
    {NULL, NULL},
};

static const luaL_Reg stmt_meta[] = {
    {"__gc", stmt_close},
    {"__close", stmt_close},
    {"__tostring", stmt_tostring},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"open", c_open},
    {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *meta,
                      const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int luaopen_runbook_sqlite_core(lua_State *L) {
  new_class(L, DB_MT, db_meta, db_methods);
  new_class(L, STMT_MT, stmt_meta, stmt_methods);
  luaL_newlib(L, funcs);
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "version");
  return 1;
}
