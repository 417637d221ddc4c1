/*
 * main.c — the runbook host, shaped like Lua's own lua.c.
 *
 * Everything runs under one protected call (pmain) with a traceback
 * handler; an error is reported once, here, and the exit code is decided in
 * one place (the integer returned by the Lua entry point, or 1 for an
 * uncaught error).  The host itself only wires things up:
 *
 *   - the libc-only C modules (proc, fs, term, text, worker, heap) are compiled in and offered
 *     through package.preload;
 *   - the heavy ones (http → libcurl, crypto → libcrypto, sqlite → sqlite3)
 *     are separate shared objects found through package.cpath, so commands
 *     that never require them never pay for loading those libraries;
 *   - the Lua side (lua/, stdlib/) is embedded and offered through
 *     package.preload with real chunk names ("@lua/runbook/cli.lua"), unless
 *     RUNBOOK_TREE names a source tree to load it from instead (development).
 *
 * Policy (argument parsing, commands, defaults) lives in lua/runbook/main.lua.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "embed.h"
#include "host.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static const char *progname = "runbook";

/* Message handler: turn any error into a string with a traceback (the
 * worker threads' too, worker.c). */
int host_msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Loader for one embedded Lua module: upvalue 1 is its index. */
static int embedded_loader(lua_State *L) {
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(1));
  const struct embedded_chunk *c = &runbook_embedded[i];
  if (luaL_loadbuffer(L, c->src, c->len, c->chunkname) != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, c->name);
  lua_pushstring(L, c->chunkname + 1);
  lua_call(L, 2, 1);
  return 1;
}

/* Directory holding this executable (for finding the C module objects). */
static void exe_dir(char *buf, size_t size) {
  ssize_t n = readlink("/proc/self/exe", buf, size - 1);
  if (n <= 0) {
    snprintf(buf, size, ".");
    return;
  }
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (slash != NULL)
    *slash = '\0';
}

/* package.cpath gains the directories where the heavy C modules live. */
static void set_cpath(lua_State *L) {
  char dir[PATH_MAX];
  const char *moddir = getenv("RUNBOOK_MODDIR");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "cpath");
  const char *old = lua_tostring(L, -1);
  if (moddir != NULL && *moddir != '\0') {
    lua_pushfstring(L, "%s/?.so;%s", moddir, old);
  } else {
    exe_dir(dir, sizeof dir);
    lua_pushfstring(L, "%s/mod/?.so;%s/build/mod/?.so;%s/../lib/runbook/?.so;%s",
                    dir, dir, dir, old);
  }
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 1);
  /* package.runbook_exe: how a script starts another runbook process */
  ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
  if (n > 0) {
    dir[n] = '\0';
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "runbook_exe");
  }
  lua_pop(L, 1);
}

/* Lua sources: embedded (default) or from a development tree. */
static void set_lua_sources(lua_State *L) {
  const char *tree = getenv("RUNBOOK_TREE");
  lua_getglobal(L, "package");
  if (tree != NULL && *tree != '\0') {
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua;%s", tree, tree, tree,
                    lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_pushstring(L, tree);
    lua_setfield(L, -2, "runbook_tree");
  } else {
    lua_getfield(L, -1, "preload");
    for (size_t i = 0; i < runbook_embedded_count; i++) {
      lua_pushinteger(L, (lua_Integer)i);
      lua_pushcclosure(L, embedded_loader, 1);
      lua_setfield(L, -2, runbook_embedded[i].name);
    }
    lua_pop(L, 1);
  }
  lua_pushstring(L, RUNBOOK_VERSION);
  lua_setfield(L, -2, "runbook_version");
  lua_pop(L, 1);
}

/* The libc-only C modules are always compiled in. */
static void set_builtin_modules(lua_State *L) {
  static const luaL_Reg builtin[] = {
      {"runbook.proc.core", luaopen_runbook_proc_core},
      {"runbook.fs.core", luaopen_runbook_fs_core},
      {"runbook.term.core", luaopen_runbook_term_core},
      {"runbook.text.core", luaopen_runbook_text_core},
      {"runbook.worker.core", luaopen_runbook_worker_core},
      {"runbook.heap.core", luaopen_runbook_heap_core},
      {NULL, NULL},
  };
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *r = builtin; r->name != NULL; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  lua_pop(L, 1);
}

/* arg table as lua.c builds it: arg[0] is the program, arg[1..] the rest. */
static void create_arg_table(lua_State *L, char **argv, int argc) {
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");
}

/* A state as every runbook state starts: the standard libraries, the C
 * modules and the Lua sources (also each worker thread's, worker.c). */
void host_setup_state(lua_State *L) {
  luaL_checkversion(L);
  luaL_openlibs(L);
  set_cpath(L);
  set_builtin_modules(L);
  set_lua_sources(L);
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  host_setup_state(L);
  create_arg_table(L, argv, argc);

  lua_pushcfunction(L, host_msghandler);
  int base = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "runbook.main");
  if (lua_pcall(L, 1, 1, base) != LUA_OK)
    return lua_error(L);
  /* runbook.main returns a function(args) -> exit code */
  lua_createtable(L, argc > 1 ? argc - 1 : 0, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  if (lua_pcall(L, 1, 1, base) != LUA_OK)
    return lua_error(L);
  return 1;
}

/* The allocator lua_close runs with when the process is about to exit: every
 * finalizer still runs (journal, temp files, child processes, threads are
 * closed as they would be), but the ~10^5 objects a scan leaves are not
 * handed back to malloc one by one; the kernel takes the heap back whole.
 * That free() loop was ~0.6 ms of a kv-audit run. Memory checkers (ASan's
 * leak check, valgrind) get the real lua_close, so a leak still shows. */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define EXIT_WITHOUT_FREE 1
static void *exit_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0)
    return NULL;
  return realloc(ptr, nsize);
}
#endif

static void close_state(lua_State *L) {
#ifdef EXIT_WITHOUT_FREE
  if (!RUNNING_ON_VALGRIND)
    lua_setallocf(L, exit_alloc, NULL);
#endif
  lua_close(L);
}

int main(int argc, char **argv) {
  if (argv[0] != NULL && argv[0][0] != '\0')
    progname = argv[0];
  /* A write past a file-size limit fails with EFBIG and is reported like any
   * other failed write (old file kept, run marked failed) instead of killing
   * the process mid-run; children get the default back (proc.c). */
  signal(SIGXFSZ, SIG_IGN);
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create Lua state: not enough memory\n", progname);
    return 70;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  int code;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s: internal error: %s\n", progname, msg ? msg : "(no message)");
    fflush(stderr);
    code = 70; /* EX_SOFTWARE: a bug, not an expected failure */
  } else if (lua_isinteger(L, -1)) {
    code = (int)lua_tointeger(L, -1);
  } else {
    code = lua_toboolean(L, -1) || lua_isnil(L, -1) ? 0 : 1;
  }
  close_state(L);
  return code;
}
