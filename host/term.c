/*
 * term.c — placeholder; see docs/HOST.md for the module this becomes.
 */
#include "host.h"

static const luaL_Reg funcs[] = {{NULL, NULL}};

int luaopen_runbook_term_core(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
