/*
 * host.h — what the host's C modules share: the entry points of the
 * compiled-in modules and the one error convention.
 *
 * Error convention (every module): an expected failure returns
 *   nil, "what: why", "CODE"
 * where CODE is a stable string (ECONNREFUSED, TIMEOUT, SQLITE_BUSY, ENOENT,
 * ...); misuse (wrong argument types, a closed handle) raises.
 */
#ifndef RUNBOOK_HOST_H
#define RUNBOOK_HOST_H

#include <lauxlib.h>
#include <lua.h>

#ifndef RUNBOOK_VERSION
#define RUNBOOK_VERSION "0.0.0-dev"
#endif

int luaopen_runbook_proc_core(lua_State *L);
int luaopen_runbook_fs_core(lua_State *L);
int luaopen_runbook_term_core(lua_State *L);
int luaopen_runbook_text_core(lua_State *L);
int luaopen_runbook_worker_core(lua_State *L);
int luaopen_runbook_heap_core(lua_State *L);

/* Set up a fresh state like the main one: standard libraries, the C
 * modules, the Lua sources (main.c; worker.c uses it for its threads). */
void host_setup_state(lua_State *L);

/* pcall message handler: the error as a string, with a traceback. */
int host_msghandler(lua_State *L);

/* Push nil, "<what>: <strerror(err)>", "<ERRNO NAME>"; returns 3. */
int host_errno_result(lua_State *L, int err, const char *what);

/* Stable name of an errno value ("ENOENT"), or "EUNKNOWN". */
const char *host_errno_name(int err);

#endif
