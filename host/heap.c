/*
 * heap.c — runbook.heap.core: have memory backed before it is used.
 *
 *   reserve(bytes) -> true | false, reason
 *       Backs the next `bytes` (at most 16 MiB) of the calling thread's
 *       malloc heap with memory now, in one madvise(MADV_POPULATE_WRITE),
 *       instead of one page fault per page as each is first touched.
 *       false and why when it cannot: the kernel lacks MADV_POPULATE_WRITE
 *       (before Linux 5.14), or malloc is a sanitizer's (ASan, TSan: their
 *       heap this does not reach); nothing else changes then.
 *
 * Why: on the VMs runbook is measured on (Firecracker guests), a page
 * fault costs ~12 us, populating a page ~1 us. A `runbook run` touches
 * ~220 fresh heap pages before its first step, kv-audit ~1,400 on a 200k
 * line tree: 3 ms and 17 ms spent in faults.  On bare metal a fault costs
 * ~0.2 us and this saves little, but costs little too.
 *
 * How: a block of `bytes` is malloc'd from the top of the thread's heap,
 * its pages populated, and freed back into the top, where the next
 * allocations come from.  For that, malloc is told (once, mallopt) to serve
 * blocks up to 32 MiB from the heap rather than their own mmap, and to
 * keep up to 128 MiB of free top instead of returning it to the kernel.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "host.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define RESERVE_MAX (16L << 20)

static pthread_once_t tuned = PTHREAD_ONCE_INIT;

static void tune_malloc(void) {
  mallopt(M_MMAP_THRESHOLD, 2 * RESERVE_MAX);
  mallopt(M_TRIM_THRESHOLD, 8 * RESERVE_MAX);
}

static int h_reserve(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= RESERVE_MAX, 1, "bytes must be between 0 and 16 MiB");
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  lua_pushboolean(L, 0);
  lua_pushliteral(L, "heap.reserve: not with a sanitizer's malloc");
  return 2;
#endif
  pthread_once(&tuned, tune_malloc);
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  char *p = malloc((size_t)n + 1);
  if (p == NULL) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "heap.reserve: out of memory");
    return 2;
  }
  uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1);
  uintptr_t b = ((uintptr_t)p + (uintptr_t)n) & ~(page - 1);
  int rc = b > a ? madvise((void *)a, b - a, MADV_POPULATE_WRITE) : 0;
  int err = errno;
  free(p);
  if (rc != 0) {
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "heap.reserve: %s", strerror(err));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

int luaopen_runbook_heap_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"reserve", h_reserve},
      {NULL, NULL},
  };
  luaL_newlib(L, fns);
  return 1;
}
