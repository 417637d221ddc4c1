/*
 * worker.c — runbook.worker.core: run a Lua function in another OS thread,
 * in a Lua state of its own, for work that is pure computation over files
 * (kv-audit analyses a tree on every core this way).
 *
 *   start(module, fname, ...) -> worker
 *       A new Lua state set up like the main one (standard libraries, the
 *       embedded modules); the arguments are copied into it; a thread then
 *       runs require(module)[fname](...) there.  Arguments and the result
 *       may be nil, booleans, numbers, strings, counters and tables of those (no
 *       functions, other userdata or cycles; nesting up to 64 deep).
 *   worker:join() -> result
 *       Waits for the call to return and copies its first return value
 *       back; an error raised in the worker is raised here, with its
 *       traceback.  The thread then closes its state while the caller goes
 *       on; it is joined when the worker is collected.
 *   counter() -> counter
 *       A counter shared by every thread it is passed to (it is the one
 *       userdata a worker's arguments may hold): counter:next() returns
 *       1, 2, 3, ... across all of them, so threads can take items from one
 *       list without giving any item to two; counter:value() how many were
 *       taken.
 *   cpus() -> integer
 *       CPUs this process may run on (its affinity mask).
 *
 * The two states are never used by two threads at the same time: the
 * worker's state is touched by the starting thread only before the thread
 * is created and, in join, after the call has returned and before the
 * thread is let go to close it (a mutex and a condition hand it over).
 * The thread blocks every signal, so runbook's handlers still run in the
 * main thread.  A worker never joined is joined when it is collected.  Worker functions must not trap
 * signals, change the environment or the working directory: those are the
 * process's, shared with the main thread.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host.h"

#define WORKER_MT "runbook.worker"
#define COUNTER_MT "runbook.worker.counter"
#define MAX_DEPTH 64

struct worker {
  lua_State *W;  /* the worker's state, for the starting thread: NULL once
                    closed or handed to the thread to close */
  lua_State *TW; /* the same state, for the thread: set before it starts */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started, joined; /* pthread_create / pthread_join done */
  int done;            /* the call returned: W is quiescent (under mu) */
  int released;        /* join read W: the thread closes it (under mu) */
  int status;          /* lua_pcall's result in the thread */
};

/* ------------------------------------------------------------ counter */

/* A counter shared between threads: each state holds a userdata pointing
 * at the same allocation, freed with the last of them. */
struct shared_counter {
  atomic_long refs;
  atomic_llong next;
};

static int c_next(lua_State *L);
static int c_value(lua_State *L);
static int c_gc(lua_State *L);

/* Push the metatable `name` (methods as __index, gc as __gc), made on
 * first use in this state. */
static void class_metatable(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
}

/* The counters' metatable: made where a counter is first pushed (a
 * worker's state gets counters before it has loaded this module). */
static void counter_metatable(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"next", c_next},
      {"value", c_value},
      {NULL, NULL},
  };
  class_metatable(L, COUNTER_MT, methods, c_gc);
}

static void push_counter(lua_State *L, struct shared_counter *c) {
  struct shared_counter **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  counter_metatable(L);
  lua_setmetatable(L, -2);
  atomic_fetch_add(&c->refs, 1);
  *box = c;
}

static struct shared_counter *check_counter(lua_State *L) {
  struct shared_counter **box = luaL_checkudata(L, 1, COUNTER_MT);
  return *box;
}

static int c_new(lua_State *L) {
  struct shared_counter *c = malloc(sizeof *c);
  if (c == NULL)
    return luaL_error(L, "worker: not enough memory for a counter");
  atomic_init(&c->refs, 0);
  atomic_init(&c->next, 0);
  push_counter(L, c); /* a memory error here leaks the 16 bytes: harmless */
  return 1;
}

/* counter:next() -> 1, 2, 3, ... across every thread holding it */
static int c_next(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_fetch_add(&check_counter(L)->next, 1) + 1);
  return 1;
}

/* counter:value() -> how many next() calls so far */
static int c_value(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_load(&check_counter(L)->next));
  return 1;
}

static int c_gc(lua_State *L) {
  struct shared_counter **box = luaL_checkudata(L, 1, COUNTER_MT);
  if (*box != NULL && atomic_fetch_sub(&(*box)->refs, 1) == 1)
    free(*box);
  *box = NULL;
  return 0;
}

/* ------------------------------------------------------------ copying */

/* Copy the value at index i of `from` onto the top of `to`.  Errors are
 * raised in `to` only (the caller runs it where that is caught); `from`
 * must have MAX_DEPTH * 2 free slots, reserved beforehand, so reading it
 * never allocates. */
static void copy_value(lua_State *from, int i, lua_State *to, int depth) {
  switch (lua_type(from, i)) {
  case LUA_TNIL:
    lua_pushnil(to);
    break;
  case LUA_TBOOLEAN:
    lua_pushboolean(to, lua_toboolean(from, i));
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(from, i))
      lua_pushinteger(to, lua_tointeger(from, i));
    else
      lua_pushnumber(to, lua_tonumber(from, i));
    break;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(from, i, &n);
    lua_pushlstring(to, s, n);
    break;
  }
  case LUA_TTABLE: {
    if (depth >= MAX_DEPTH)
      luaL_error(to, "worker: a table nested more than %d deep (a cycle?)", MAX_DEPTH);
    luaL_checkstack(to, 4, "worker: copying a table");
    i = lua_absindex(from, i);
    /* sized once: a record's fields inserted one by one would rehash its
     * table four or five times */
    int narr = (int)lua_rawlen(from, i), nall = 0;
    lua_pushnil(from);
    while (lua_next(from, i) != 0) {
      nall++;
      lua_pop(from, 1);
    }
    lua_createtable(to, narr, nall > narr ? nall - narr : 0);
    lua_pushnil(from);
    while (lua_next(from, i) != 0) {
      copy_value(from, -2, to, depth + 1);
      copy_value(from, -1, to, depth + 1);
      lua_rawset(to, -3);
      lua_pop(from, 1);
    }
    break;
  }
  case LUA_TUSERDATA: {
    struct shared_counter **box = luaL_testudata(from, i, COUNTER_MT);
    if (box != NULL && *box != NULL) {
      push_counter(to, *box);
      break;
    }
  }
  /* fallthrough */
  default:
    luaL_error(to, "worker: cannot pass a %s between threads", lua_typename(from, lua_type(from, i)));
  }
}

/* In the worker's state, protected: set it up and copy the arguments.
 * Upvalue-free: 1 = light userdata of the source state, 2 = first argument
 * index there, 3 = last. */
static int w_prepare(lua_State *W) {
  lua_State *from = lua_touserdata(W, 1);
  int first = (int)lua_tointeger(W, 2), last = (int)lua_tointeger(W, 3);
  lua_settop(W, 0);
  host_setup_state(W);
  luaL_checkstack(W, last - first + 8, "worker: too many arguments");
  lua_getglobal(W, "require");
  for (int i = first; i <= last; i++)
    copy_value(from, i, W, 0);
  return last - first + 2; /* require, module, fname, args... */
}

/* In the thread, protected: require(module)[fname](args...). */
static int w_body(lua_State *W) {
  /* stack: require, module, fname, args... */
  int nargs = lua_gettop(W) - 3;
  lua_pushvalue(W, 1);
  lua_pushvalue(W, 2);
  lua_call(W, 1, 1);
  if (!lua_istable(W, -1))
    return luaL_error(W, "module %s is not a table", lua_tostring(W, 2));
  lua_getfield(W, -1, lua_tostring(W, 3));
  if (!lua_isfunction(W, -1))
    return luaL_error(W, "%s.%s is not a function", lua_tostring(W, 2), lua_tostring(W, 3));
  lua_rotate(W, 4, 2); /* module table, function before the args */
  lua_call(W, nargs, 1);
  return 1;
}

static void *w_thread(void *arg) {
  struct worker *w = arg;
  lua_State *W = w->TW;
  /* stack: require, module, fname, args... */
  lua_pushcfunction(W, host_msghandler);
  lua_insert(W, 1);
  lua_pushcfunction(W, w_body);
  lua_insert(W, 2);
  w->status = lua_pcall(W, lua_gettop(W) - 2, 1, 1);
  /* W is the joining thread's to read now; once it has, W is closed here,
   * while that thread goes on (closing a state that analysed a tree is
   * ~0.5 ms of free() calls) */
  pthread_mutex_lock(&w->mu);
  w->done = 1;
  pthread_cond_signal(&w->cv);
  while (!w->released)
    pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  lua_close(W);
  return NULL;
}

/* Let the thread close W: after this, W is not ours to touch. */
static void w_release(struct worker *w) {
  pthread_mutex_lock(&w->mu);
  w->released = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  w->W = NULL;
}

static void w_finish(struct worker *w) {
  if (w->started) {
    if (w->W != NULL)
      w_release(w);
    if (!w->joined) {
      pthread_join(w->thread, NULL);
      w->joined = 1;
      pthread_cond_destroy(&w->cv);
      pthread_mutex_destroy(&w->mu);
    }
  } else if (w->W != NULL) {
    lua_close(w->W);
    w->W = NULL;
  }
}

static struct worker *check_worker(lua_State *L) {
  return luaL_checkudata(L, 1, WORKER_MT);
}

/* ------------------------------------------------------------- API */

static int w_start(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  int top = lua_gettop(L);
  luaL_checkstack(L, MAX_DEPTH * 2 + 8, "worker: arguments too deep");
  struct worker *w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, WORKER_MT);
  w->W = luaL_newstate();
  if (w->W == NULL)
    return luaL_error(L, "worker: cannot create a Lua state: not enough memory");
  lua_pushcfunction(w->W, w_prepare);
  lua_pushlightuserdata(w->W, L);
  lua_pushinteger(w->W, 1);
  lua_pushinteger(w->W, top);
  if (lua_pcall(w->W, 3, LUA_MULTRET, 0) != LUA_OK) {
    lua_pushstring(L, lua_tostring(w->W, -1));
    w_finish(w);
    return lua_error(L);
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->TW = w->W;
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = pthread_create(&w->thread, NULL, w_thread, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w_finish(w);
    return luaL_error(L, "worker: cannot start a thread: %s", strerror(rc));
  }
  w->started = 1;
  return 1;
}

/* In L, protected: copy the worker's result (W's top) onto L's stack.
 * Upvalue-free: 1 = light userdata of W. */
static int w_copy_result(lua_State *L) {
  lua_State *W = lua_touserdata(L, 1);
  copy_value(W, -1, L, 0);
  return 1;
}

static int w_join(lua_State *L) {
  struct worker *w = check_worker(L);
  if (w->W == NULL)
    return luaL_error(L, "worker: already joined");
  pthread_mutex_lock(&w->mu);
  while (!w->done)
    pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  lua_State *W = w->W;
  if (w->status != LUA_OK) {
    lua_pushfstring(L, "worker: %s", lua_tostring(W, -1) ? lua_tostring(W, -1) : "(no message)");
    w_finish(w);
    return lua_error(L);
  }
  if (!lua_checkstack(W, MAX_DEPTH * 2 + 8)) {
    w_finish(w);
    return luaL_error(L, "worker: not enough memory to return the result");
  }
  /* Everything copied is kept, so the collector has nothing to find while
   * the copy grows the heap by megabytes: it is held off meanwhile. An
   * error (memory, a function in the result) is raised after the thread
   * has been let go to close W, like a result. */
  int collecting = lua_gc(L, LUA_GCISRUNNING);
  lua_gc(L, LUA_GCSTOP);
  lua_pushcfunction(L, w_copy_result);
  lua_pushlightuserdata(L, W);
  int rc = lua_pcall(L, 1, 1, 0);
  if (collecting)
    lua_gc(L, LUA_GCRESTART);
  w_release(w);
  if (rc != LUA_OK)
    return lua_error(L);
  return 1;
}

static int w_gc(lua_State *L) {
  w_finish(check_worker(L));
  return 0;
}

static int w_cpus(lua_State *L) {
  cpu_set_t set;
  long n = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    n = CPU_COUNT(&set);
  if (n <= 0)
    n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

int luaopen_runbook_worker_core(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"join", w_join},
      {NULL, NULL},
  };
  static const luaL_Reg fns[] = {
      {"start", w_start},
      {"counter", c_new},
      {"cpus", w_cpus},
      {NULL, NULL},
  };
  class_metatable(L, WORKER_MT, methods, w_gc);
  lua_pop(L, 1);
  counter_metatable(L);
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
