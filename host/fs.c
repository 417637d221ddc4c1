/*
 * fs.c — runbook.fs.core: the file operations a runbook needs that plain
 * Lua io cannot do safely: atomic replacement of a file (temp in the same
 * directory, fsync, rename, fsync the directory, mode kept), refusing to
 * follow symlinks for secret files, stat/chmod/mkdir -p, sorted directory
 * listing and recursive walk, and an advisory lock (flock) as a handle.
 *
 * Every fd, DIR* and temp file is owned by a small userdata with a __gc,
 * pushed before the resource is acquired, so an error raised while building
 * a result (out of memory) never leaks one and never leaves a temp file.
 * Every fd is opened close-on-exec (children never inherit a lock).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "host.h"

#define LOCK_MT "runbook.fs.Lock"
#define FD_MT "runbook.fs.fd"
#define DIR_MT "runbook.fs.dir"
#define TMP_MT "runbook.fs.tmp"
#define SIGFLAG_KEY "runbook.proc.sigflag" /* published by proc.trap_signals */

/* ------------------------------------------------------------ boxes */

struct fdbox {
  int fd;
};

struct dirbox {
  DIR *d;
};

struct tmpbox {
  int fd;
  int armed; /* the temp file exists and must go if we do not rename it */
  char path[PATH_MAX];
};

static void fd_release(struct fdbox *b) {
  if (b->fd >= 0) {
    close(b->fd);
    b->fd = -1;
  }
}

static int fd_gc(lua_State *L) {
  fd_release(luaL_checkudata(L, 1, FD_MT));
  return 0;
}

static struct fdbox *new_fdbox(lua_State *L) {
  struct fdbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->fd = -1;
  luaL_setmetatable(L, FD_MT);
  return b;
}

static void dir_release(struct dirbox *b) {
  if (b->d != NULL) {
    closedir(b->d);
    b->d = NULL;
  }
}

static int dir_gc(lua_State *L) {
  dir_release(luaL_checkudata(L, 1, DIR_MT));
  return 0;
}

static struct dirbox *new_dirbox(lua_State *L) {
  struct dirbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->d = NULL;
  luaL_setmetatable(L, DIR_MT);
  return b;
}

static void tmp_release(struct tmpbox *t) {
  if (t->fd >= 0) {
    close(t->fd);
    t->fd = -1;
  }
  if (t->armed) {
    unlink(t->path);
    t->armed = 0;
  }
}

static int tmp_gc(lua_State *L) {
  tmp_release(luaL_checkudata(L, 1, TMP_MT));
  return 0;
}

/* ---------------------------------------------------------- helpers */

static int open_retry(const char *path, int flags, mode_t mode) {
  int fd;
  do
    fd = open(path, flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  return fd;
}

/* Raise on any key of the (optional) option table at idx not in allowed. */
static int check_opts(lua_State *L, int idx, const char *fname, const char *const allowed[]) {
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    int ok = 0;
    for (const char *const *a = allowed; *a != NULL; a++)
      if (strcmp(*a, k) == 0)
        ok = 1;
    if (!ok)
      luaL_error(L, "%s: unknown option '%s'", fname, k);
  }
  return 1;
}

static int opt_bool(lua_State *L, int idx, const char *key) {
  if (lua_isnoneornil(L, idx))
    return 0;
  lua_getfield(L, idx, key);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static mode_t check_mode(lua_State *L, int arg) {
  lua_Integer m = luaL_checkinteger(L, arg);
  luaL_argcheck(L, m >= 0 && m <= 07777, arg, "mode must be in 0..07777");
  return (mode_t)m;
}

static int fail(lua_State *L, int err, const char *op, const char *path) {
  return host_errno_result(L, err, lua_pushfstring(L, "%s %s", op, path));
}

/* Is a signal trapped by runbook.proc pending?  (Checked while waiting.) */
static int signal_pending(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, SIGFLAG_KEY);
  const volatile sig_atomic_t *flag = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return flag != NULL && *flag != 0;
}

/* libm is not linked into the host; these are all it would give us. */
static double dmin(double a, double b) { return a < b ? a : b; }

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------- read */

static const char *const read_keys[] = {"nofollow", NULL};

/* A buffer kept in the registry for reading whole files: a tree's files are
 * read into it and copied once into their string, instead of each getting
 * a luaL_Buffer box of its size, allocated and freed per file (reading the
 * 1,900 files of bench/kvaudit.lua's tree: 4.6 -> 3.9 ms).  Files above
 * READ_BUF_MAX take the box. */
#define READ_BUF_MAX (1u << 20)
static const char read_buf_key = 0;

static char *read_buf(lua_State *L, size_t need) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &read_buf_key);
  char *p = lua_touserdata(L, -1);
  size_t have = p != NULL ? lua_rawlen(L, -1) : 0;
  lua_pop(L, 1);
  if (p != NULL && have >= need)
    return p;
  size_t cap = have > 0 ? have : 16384;
  while (cap < need)
    cap *= 2;
  p = lua_newuserdatauv(L, cap, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &read_buf_key);
  return p;
}

/* read(path, {nofollow}) -> contents, or nil, msg, code. */
static int f_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  check_opts(L, 2, "read", read_keys);
  int nofollow = opt_bool(L, 2, "nofollow");
  lua_settop(L, 2);
  struct fdbox *b = new_fdbox(L); /* 3 */
  b->fd = open_retry(path, O_RDONLY | O_NOCTTY | (nofollow ? O_NOFOLLOW : 0), 0);
  if (b->fd < 0)
    return fail(L, errno, "read", path);
  struct stat st;
  if (fstat(b->fd, &st) != 0)
    return fail(L, errno, "read", path);
  if (S_ISDIR(st.st_mode))
    return fail(L, EISDIR, "read", path);
  /* a regular file is read in one buffer of its size (+1 to see EOF in the
   * same buffer); a pipe, a device or a /proc file (size 0) in 64 KiB steps */
  size_t chunk = 65536, total = 0;
  int sized = S_ISREG(st.st_mode) && st.st_size > 0 && (uintmax_t)st.st_size < (uintmax_t)SIZE_MAX / 2;
  if (sized)
    chunk = (size_t)st.st_size + 1;
  luaL_Buffer buf;
  if (sized && chunk <= READ_BUF_MAX) {
    char *p = read_buf(L, chunk);
    ssize_t n;
    do
      n = read(b->fd, p, chunk);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      int e = errno;
      fd_release(b);
      return fail(L, e, "read", path);
    }
    if ((size_t)n == (size_t)st.st_size) { /* the whole file, at its size */
      fd_release(b);
      lua_pushlstring(L, p, (size_t)n);
      return 1;
    }
    /* it grew or shrank meanwhile: what was read goes first, then as below */
    luaL_buffinit(L, &buf);
    luaL_addlstring(&buf, p, (size_t)n);
    total = (size_t)n;
    if (n == 0)
      sized = 0;
  } else {
    luaL_buffinit(L, &buf);
  }
  for (;;) {
    char *p = luaL_prepbuffsize(&buf, chunk);
    ssize_t n = read(b->fd, p, chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      fd_release(b);
      return fail(L, e, "read", path);
    }
    if (n == 0)
      break;
    luaL_addsize(&buf, (size_t)n);
    total += (size_t)n;
    /* the size fstat gave, in a short read: that is the end (one read
     * instead of two per file when walking a tree); a file still growing
     * keeps being read */
    if (sized && (size_t)n < chunk && total == (size_t)st.st_size)
      break;
  }
  fd_release(b);
  luaL_pushresult(&buf);
  return 1;
}

/* ----------------------------------------------------- write_atomic */

static const char *const write_keys[] = {"mode", "nofollow", NULL};

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return errno;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int fsync_dir(const char *dir) {
  int dfd = open_retry(dir, O_RDONLY | O_DIRECTORY, 0);
  if (dfd < 0)
    return errno;
  int err = 0;
  if (fsync(dfd) != 0 && errno != EINVAL) /* some filesystems cannot; nothing to do */
    err = errno;
  close(dfd);
  return err;
}

/*
 * write_atomic(path, data, {mode, nofollow}) -> true, or nil, msg, code.
 * Readers see the old contents or the new, never a mix; on any failure the
 * old file is untouched and the temp file is gone.  A symlink is written
 * through (its target is replaced) unless nofollow, which refuses it.
 */
static int f_write_atomic(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  check_opts(L, 3, "write_atomic", write_keys);
  int nofollow = opt_bool(L, 3, "nofollow");
  int mode_given = 0;
  mode_t mode = 0;
  if (!lua_isnoneornil(L, 3)) {
    lua_getfield(L, 3, "mode");
    if (!lua_isnil(L, -1)) {
      mode = check_mode(L, -1);
      mode_given = 1;
    }
    lua_pop(L, 1);
  }
  lua_settop(L, 3);
  struct tmpbox *t = lua_newuserdatauv(L, sizeof *t, 0); /* 4 */
  t->fd = -1;
  t->armed = 0;
  luaL_setmetatable(L, TMP_MT);

  char resolved[PATH_MAX];
  const char *target = path;
  struct stat st;
  int exists = lstat(path, &st) == 0;
  if (!exists && errno != ENOENT)
    return fail(L, errno, "write", path);
  if (exists && S_ISLNK(st.st_mode)) {
    if (nofollow) {
      lua_pushnil(L);
      lua_pushfstring(L, "write %s: is a symbolic link (refused: nofollow)", path);
      lua_pushliteral(L, "ELOOP");
      return 3;
    }
    if (realpath(path, resolved) == NULL)
      return fail(L, errno, "write", path);
    target = resolved;
    exists = stat(target, &st) == 0;
  }
  if (exists && S_ISDIR(st.st_mode))
    return fail(L, EISDIR, "write", path);
  if (!mode_given)
    mode = exists ? (st.st_mode & 07777) : (nofollow ? 0600 : 0644);

  /* the temp file lives next to the target: rename is atomic only within
   * one filesystem */
  const char *slash = strrchr(target, '/');
  const char *name = slash != NULL ? slash + 1 : target;
  if (*name == '\0')
    return fail(L, EISDIR, "write", path);
  char dir[PATH_MAX];
  if (slash == NULL)
    strcpy(dir, ".");
  else if (slash == target)
    strcpy(dir, "/");
  else
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - target), target);
  int n = snprintf(t->path, sizeof t->path, "%s/.%s.tmp.XXXXXX", dir, name);
  if (n < 0 || (size_t)n >= sizeof t->path)
    return fail(L, ENAMETOOLONG, "write", path);
  t->fd = mkostemp(t->path, O_CLOEXEC);
  if (t->fd < 0)
    return fail(L, errno, "write", path);
  t->armed = 1;

  int err = write_all(t->fd, data, len);
  if (err == 0 && fsync(t->fd) != 0)
    err = errno;
  if (err == 0 && fchmod(t->fd, mode) != 0)
    err = errno;
  if (err == 0 && exists && (st.st_uid != geteuid() || st.st_gid != getegid()))
    (void)!fchown(t->fd, st.st_uid, st.st_gid); /* keep the owner when allowed */
  if (err == 0) {
    int fd = t->fd;
    t->fd = -1;
    if (close(fd) != 0)
      err = errno;
  }
  if (err == 0 && rename(t->path, target) != 0)
    err = errno;
  if (err != 0) {
    tmp_release(t);
    return fail(L, err, "write", path);
  }
  t->armed = 0;
  err = fsync_dir(dir);
  if (err != 0)
    return host_errno_result(L, err, lua_pushfstring(L, "write %s: replaced, but fsync of %s", path, dir));
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------- stat & co */

static const char *file_type(mode_t m) {
  if (S_ISREG(m))
    return "file";
  if (S_ISDIR(m))
    return "dir";
  if (S_ISLNK(m))
    return "link";
  if (S_ISFIFO(m))
    return "fifo";
  if (S_ISSOCK(m))
    return "socket";
  if (S_ISCHR(m))
    return "char";
  if (S_ISBLK(m))
    return "block";
  return "other";
}

/* stat(path, {nofollow}) -> { type, size, mode, mtime, uid, gid }. */
static int f_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  check_opts(L, 2, "stat", read_keys);
  int nofollow = opt_bool(L, 2, "nofollow");
  struct stat st;
  if ((nofollow ? lstat(path, &st) : stat(path, &st)) != 0)
    return fail(L, errno, "stat", path);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, file_type(st.st_mode));
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  lua_setfield(L, -2, "mode");
  lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st.st_uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, (lua_Integer)st.st_gid);
  lua_setfield(L, -2, "gid");
  return 1;
}

static int f_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mode_t mode = check_mode(L, 2);
  if (chmod(path, mode) != 0)
    return fail(L, errno, "chmod", path);
  lua_pushboolean(L, 1);
  return 1;
}

/* mkdir_p(path[, mode]) -> true; existing directories are fine. */
static int f_mkdir_p(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  mode_t mode = lua_isnoneornil(L, 2) ? 0777 : check_mode(L, 2);
  luaL_argcheck(L, n > 0, 1, "empty path");
  char buf[PATH_MAX];
  if (n >= sizeof buf)
    return fail(L, ENAMETOOLONG, "mkdir", path);
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0')
      continue;
    if (buf[i - 1] == '/')
      continue; /* "//" or a trailing slash */
    char saved = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, mode) != 0) {
      int e = errno;
      struct stat st;
      if (e != EEXIST)
        return fail(L, e, "mkdir", buf);
      if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return fail(L, ENOTDIR, "mkdir", buf);
    }
    buf[i] = saved;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* remove(path) -> true; a file, a symlink (not its target) or an empty dir. */
static int f_remove(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (unlink(path) != 0) {
    int e = errno;
    if (e == EISDIR || e == EPERM) { /* a directory: rmdir says why not */
      if (rmdir(path) == 0) {
        lua_pushboolean(L, 1);
        return 1;
      }
      if (errno != ENOTDIR)
        e = errno;
    }
    return fail(L, e, "remove", path);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int f_getcwd(lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof buf) == NULL)
    return host_errno_result(L, errno, "getcwd");
  lua_pushstring(L, buf);
  return 1;
}

/* ------------------------------------------------------ list & walk */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sort the array of strings on top of the stack in place (byte order). */
static void sort_strings(lua_State *L) {
  int tbl = lua_gettop(L);
  size_t n = lua_rawlen(L, tbl);
  if (n < 2)
    return;
  const char **v = lua_newuserdatauv(L, n * sizeof *v, 0);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, tbl, (lua_Integer)i + 1);
    v[i] = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the table */
  }
  qsort(v, n, sizeof *v, cmp_str);
  /* the table still holds every string until it is overwritten, so build
   * the sorted order in a fresh table first */
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, v[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_replace(L, tbl);
  lua_pop(L, 1);
}

/* list(dir) -> sorted entry names (no "." / ".."), or nil, msg, code. */
static int f_list(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  struct dirbox *b = new_dirbox(L); /* 2 */
  b->d = opendir(path);
  if (b->d == NULL)
    return fail(L, errno, "list", path);
  lua_newtable(L); /* 3 */
  lua_Integer i = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(b->d);
    if (e == NULL) {
      if (errno != 0)
        return fail(L, errno, "list", path);
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, 3, ++i);
  }
  dir_release(b);
  sort_strings(L);
  return 1;
}

static const char *const walk_keys[] = {"skip", NULL};

/*
 * walk(dir, {skip = {names}}) -> sorted relative paths of everything that
 * is not a directory.  Symlinks are listed, never followed (subdirectories
 * are opened O_NOFOLLOW, so one swapped in during the walk is refused).
 * Directories named in skip are not entered, at any depth.
 */
static int f_walk(lua_State *L) {
  const char *root = luaL_checkstring(L, 1);
  check_opts(L, 2, "walk", walk_keys);
  lua_settop(L, 2);
  lua_newtable(L); /* 3: skip set */
  if (!lua_isnil(L, 2)) {
    int t = lua_getfield(L, 2, "skip");
    if (t == LUA_TTABLE) {
      for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
        if (lua_type(L, -1) != LUA_TSTRING)
          luaL_error(L, "walk: skip must be a list of directory names");
        lua_pushboolean(L, 1);
        lua_rawset(L, 3);
      }
      lua_pop(L, 1);
    } else if (t != LUA_TNIL) {
      luaL_error(L, "walk: skip must be a list of directory names");
    }
    lua_pop(L, 1);
  }
  lua_newtable(L);                /* 4: results */
  lua_newtable(L);                /* 5: queue of relative dirs */
  struct dirbox *b = new_dirbox(L); /* 6 */
  lua_pushliteral(L, "");
  lua_rawseti(L, 5, 1);
  lua_Integer nres = 0, qlen = 1;
  for (lua_Integer qi = 1; qi <= qlen; qi++) {
    lua_rawgeti(L, 5, qi); /* 7: rel */
    const char *rel = lua_tostring(L, 7);
    const char *full = *rel ? lua_pushfstring(L, "%s/%s", root, rel) : lua_pushstring(L, root);
    int fd = open_retry(full, O_RDONLY | O_DIRECTORY | (*rel ? O_NOFOLLOW : 0), 0);
    if (fd < 0) {
      if (*rel && errno == ENOENT) { /* removed while we walked */
        lua_settop(L, 6);
        continue;
      }
      return fail(L, errno, "walk", full);
    }
    b->d = fdopendir(fd);
    if (b->d == NULL) {
      int e = errno;
      close(fd);
      return fail(L, e, "walk", full);
    }
    for (;;) {
      errno = 0;
      struct dirent *e = readdir(b->d);
      if (e == NULL) {
        if (errno != 0)
          return fail(L, errno, "walk", full);
        break;
      }
      const char *nm = e->d_name;
      if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
        continue;
      int isdir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st;
        isdir = fstatat(dirfd(b->d), nm, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      }
      if (isdir) {
        lua_getfield(L, 3, nm);
        int skip = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (skip)
          continue;
      }
      if (*rel)
        lua_pushfstring(L, "%s/%s", rel, nm);
      else
        lua_pushstring(L, nm);
      if (isdir)
        lua_rawseti(L, 5, ++qlen);
      else
        lua_rawseti(L, 4, ++nres);
    }
    dir_release(b);
    lua_settop(L, 6);
  }
  lua_settop(L, 4);
  sort_strings(L);
  return 1;
}

/* ------------------------------------------------------------- lock */

struct lock {
  int fd;
};

static const char *const lock_keys[] = {"wait", NULL};

static int lock_close(lua_State *L) {
  struct lock *l = luaL_checkudata(L, 1, LOCK_MT);
  if (l->fd >= 0) {
    flock(l->fd, LOCK_UN);
    close(l->fd);
    l->fd = -1;
  }
  return 0;
}

static int lock_tostring(lua_State *L) {
  struct lock *l = luaL_checkudata(L, 1, LOCK_MT);
  lua_pushstring(L, l->fd >= 0 ? "runbook.fs.Lock (held)" : "runbook.fs.Lock (released)");
  return 1;
}

/* Best effort: who holds it, from the pid the holder wrote ("%ld\n").  The
 * file may hold anything, so only plain decimal digits followed by
 * whitespace or the end count, and only a value a pid can have; else 0. */
static long holder_pid(int fd) {
  char buf[32];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return 0;
  long pid = 0;
  ssize_t i = 0;
  for (; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) {
    pid = pid * 10 + (buf[i] - '0');
    if (pid > INT_MAX)
      return 0;
  }
  if (i == 0 || (i < n && !isspace((unsigned char)buf[i])))
    return 0;
  return pid;
}

static int busy(lua_State *L, struct lock *l, const char *path, const char *why) {
  long pid = holder_pid(l->fd);
  close(l->fd);
  l->fd = -1;
  lua_pushnil(L);
  if (pid > 0)
    lua_pushfstring(L, "lock %s: %s (held by pid %d)", path, why, (int)pid);
  else
    lua_pushfstring(L, "lock %s: %s", path, why);
  lua_pushliteral(L, "EWOULDBLOCK");
  return 3;
}

/*
 * lock(path, {wait = false | true | seconds}) -> Lock, or nil, msg, code.
 * Waiting polls (rather than blocking in flock) so that a trapped Ctrl-C
 * ends the wait: nil, msg, "EINTR".
 */
static int f_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  check_opts(L, 2, "lock", lock_keys);
  double wait = 0;
  if (!lua_isnoneornil(L, 2)) {
    int t = lua_getfield(L, 2, "wait");
    if (t == LUA_TBOOLEAN)
      wait = lua_toboolean(L, -1) ? HUGE_VAL : 0;
    else if (t == LUA_TNUMBER)
      wait = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
      luaL_error(L, "lock: wait must be a boolean or a number of seconds");
    lua_pop(L, 1);
    luaL_argcheck(L, !isnan(wait) && wait >= 0, 2, "wait must not be negative");
  }
  lua_settop(L, 2);
  struct lock *l = lua_newuserdatauv(L, sizeof *l, 0);
  l->fd = -1;
  luaL_setmetatable(L, LOCK_MT);
  l->fd = open_retry(path, O_RDWR | O_CREAT | O_NOCTTY, 0600);
  if (l->fd < 0)
    return fail(L, errno, "lock", path);
  double deadline = mono() + wait;
  double step = 0.001;
  for (;;) {
    if (flock(l->fd, LOCK_EX | LOCK_NB) == 0)
      break;
    int e = errno;
    if (e == EINTR)
      continue;
    if (e != EWOULDBLOCK) {
      close(l->fd);
      l->fd = -1;
      return fail(L, e, "lock", path);
    }
    if (wait <= 0)
      return busy(L, l, path, "held by another process");
    if (signal_pending(L)) {
      close(l->fd);
      l->fd = -1;
      lua_pushnil(L);
      lua_pushfstring(L, "lock %s: interrupted while waiting", path);
      lua_pushliteral(L, "EINTR");
      return 3;
    }
    double left = deadline - mono();
    if (left <= 0)
      return busy(L, l, path, "still held by another process after waiting");
    double s = dmin(step, left);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
    if (step < 0.1)
      step *= 2;
  }
  /* the holder's pid, for the message another process gets */
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  if (ftruncate(l->fd, 0) == 0)
    (void)!pwrite(l->fd, buf, (size_t)n, 0);
  return 1;
}

static const luaL_Reg funcs[] = {
    {"read", f_read},     {"write_atomic", f_write_atomic},
    {"stat", f_stat},     {"chmod", f_chmod},
    {"mkdir_p", f_mkdir_p}, {"list", f_list},
    {"walk", f_walk},     {"remove", f_remove},
    {"lock", f_lock},     {"getcwd", f_getcwd},
    {NULL, NULL},
};

static const luaL_Reg lock_methods[] = {
    {"unlock", lock_close},
    {NULL, NULL},
};

static const luaL_Reg lock_meta[] = {
    {"__gc", lock_close},
    {"__close", lock_close},
    {"__tostring", lock_tostring},
    {NULL, NULL},
};

static void box_meta(lua_State *L, const char *name, lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}

int luaopen_runbook_fs_core(lua_State *L) {
  if (luaL_newmetatable(L, LOCK_MT)) {
    luaL_setfuncs(L, lock_meta, 0);
    luaL_newlib(L, lock_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  box_meta(L, FD_MT, fd_gc);
  box_meta(L, DIR_MT, dir_gc);
  box_meta(L, TMP_MT, tmp_gc);
  luaL_newlib(L, funcs);
  return 1;
}
