/*
 * proc.c — runbook.proc.core: child processes and the process itself.
 *
 *   run{...}    run an argv to completion: stdin bytes in, stdout/stderr
 *               captured, streamed line by line, discarded or inherited,
 *               a timeout that kills the child's whole process group.
 *   spawn{...}  start a background process → Process handle.
 *   alive, getpid, hostname, user, env, trap_signals, pending_signal.
 *
 * Never a shell: the program is looked up on PATH here (so a missing
 * program is a clean ENOENT) and started with posix_spawn, which in glibc
 * reports exec and chdir failures as its return value, so no error pipe is
 * needed.  Every child gets its own process group, an empty signal mask,
 * default dispositions for the signals a parent may have ignored, and only
 * fds 0-2 (everything else is closed in the child, so a lock file or a
 * database the runbook holds is never inherited).
 *
 * run() multiplexes the pipes with poll() on non-blocking fds, so a child
 * that does not read its stdin while it writes a lot of output cannot
 * deadlock either side.  SIGPIPE is blocked while stdin is written (a child
 * that exits early gives EPIPE, not a dead runbook).  All resources of a run
 * live in a userdata with a __gc (fds, buffers, the child), pushed before
 * anything is acquired, so an error raised by a line callback or by an
 * allocation never leaks a child or an fd.
 *
 * Exit is detected with waitid(WNOWAIT): the child is only reaped after the
 * last signal to its group has been sent, so the group id cannot have been
 * recycled under us.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "host.h"

extern char **environ;

#define PROCESS_MT "runbook.proc.Process"
#define RUN_MT "runbook.proc.run"
/* Registry key under which trap_signals publishes the signal flag, so that
 * term.sleep (another file, no shared C symbol) can return early. */
#define SIGFLAG_KEY "runbook.proc.sigflag"

#define DEFAULT_MAX_CAPTURE ((lua_Integer)64 << 20)
#define DEFAULT_GRACE 2.0      /* run: seconds between TERM and KILL */
#define DEFAULT_STOP_GRACE 5.0 /* Process:stop() */
#define CLOSE_GRACE 1.0        /* Process __gc/__close: short, a finalizer blocks */
#define DRAIN_GRACE 0.25 /* after the child exits, how long descendants may keep the pipes */
#ifndef MAX_LINE /* host/fuzz/proc.c makes it small */
#define MAX_LINE ((size_t)1 << 20) /* a longer line is delivered in pieces */
#endif
#define CHUNK 65536

/*
 * The one C global of the host.  A signal handler cannot reach the Lua
 * registry (or anything else that is not async-signal-safe), so the flag it
 * sets has to be static storage; everything else is per-state.
 */
static volatile sig_atomic_t pending_sig;

static void on_signal(int sig) {
  if (pending_sig == sig) {
    /* The same signal again before anyone took the first: the user means
     * it.  Fall back to the default action (terminate). */
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  pending_sig = sig;
}

/* ------------------------------------------------------------ helpers */

/* libm is not linked into the host; these are all it would give us. */
static double dmin(double a, double b) { return a < b ? a : b; }

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap(double s) {
  if (s <= 0)
    return;
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL); /* EINTR: the caller's loop re-checks its clock */
}

static const struct {
  const char *name;
  int num;
} signames[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},       {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT},     {"BUS", SIGBUS},   {"FPE", SIGFPE},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM}, {"CHLD", SIGCHLD},
    {"CONT", SIGCONT}, {"STOP", SIGSTOP},     {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU}, {"URG", SIGURG},       {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
    {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"SYS", SIGSYS},
};

static void push_signame(lua_State *L, int sig) {
  for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
    if (signames[i].num == sig) {
      lua_pushstring(L, signames[i].name);
      return;
    }
  lua_pushfstring(L, "SIG%d", sig);
}

/* A signal given as "TERM", "SIGTERM" or a number; raises if unknown. */
static int check_signal(lua_State *L, int arg, int def) {
  if (lua_isnoneornil(L, arg))
    return def;
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, arg);
    luaL_argcheck(L, n >= 0 && n < NSIG, arg, "signal number out of range");
    return (int)n;
  }
  const char *s = luaL_checkstring(L, arg);
  if (strncmp(s, "SIG", 3) == 0)
    s += 3;
  for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
    if (strcmp(signames[i].name, s) == 0)
      return signames[i].num;
  return luaL_argerror(L, arg, lua_pushfstring(L, "unknown signal '%s'", lua_tostring(L, arg)));
}

/* Raise on any key of the option table at idx not in allowed. */
static void check_keys(lua_State *L, int idx, const char *fname, const char *const allowed[]) {
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: option names must be strings", fname);
    const char *k = lua_tostring(L, -1);
    int ok = 0;
    for (const char *const *a = allowed; *a != NULL; a++)
      if (strcmp(*a, k) == 0)
        ok = 1;
    if (!ok)
      luaL_error(L, "%s: unknown option '%s'", fname, k);
  }
}

/* Optional number option; dflt when absent. */
static double opt_number(lua_State *L, int idx, const char *key, const char *fname, double dflt) {
  double v = dflt;
  int t = lua_getfield(L, idx, key);
  if (t == LUA_TNUMBER)
    v = lua_tonumber(L, -1);
  else if (t != LUA_TNIL)
    luaL_error(L, "%s: option '%s' must be a number", fname, key);
  lua_pop(L, 1);
  if (isnan(v) || v < 0)
    luaL_error(L, "%s: option '%s' must not be negative", fname, key);
  return v;
}

/* An fd at 3 or above (0-2 are the child's targets), close-on-exec. */
static int high_fd(int fd) {
  if (fd < 0 || fd > 2)
    return fd;
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int e = errno;
  close(fd);
  errno = e;
  return nfd;
}

static int make_pipe(int p[2]) {
  if (pipe2(p, O_CLOEXEC) != 0)
    return -1;
  p[0] = high_fd(p[0]);
  p[1] = high_fd(p[1]);
  if (p[0] < 0 || p[1] < 0) {
    int e = errno;
    if (p[0] >= 0)
      close(p[0]);
    if (p[1] >= 0)
      close(p[1]);
    errno = e;
    return -1;
  }
  return 0;
}

static int open_high(const char *path, int flags, mode_t mode) {
  int fd;
  do
    fd = open(path, flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  return high_fd(fd);
}

static void close_fd(int *fd) {
  if (*fd >= 0) {
    close(*fd); /* no retry on EINTR: on Linux the fd is gone either way */
    *fd = -1;
  }
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ------------------------------------------------------ argv and env */

/*
 * The command a spawn needs.  argv/envp point into a userdata and into
 * strings held by the anchor table at `anchor`, so Lua owns all of it.
 */
struct cmd {
  char **argv;
  char **envp;
  const char *cwd;
  const char *path_var; /* PATH used to find argv[0] */
  char prog[PATH_MAX];
};

/* Keep the value on top of the stack alive in the anchor table; pops it. */
static void anchor(lua_State *L, int anch) {
  lua_rawseti(L, anch, (lua_Integer)lua_rawlen(L, anch) + 1);
}

static const char *check_plain(lua_State *L, int idx, const char *fname, const char *what) {
  size_t n;
  if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "%s: %s must be a string", fname, what);
  const char *s = lua_tolstring(L, idx, &n);
  if (strlen(s) != n)
    luaL_error(L, "%s: %s contains a NUL byte", fname, what);
  return s;
}

static void build_argv(lua_State *L, int opt, int anch, const char *fname, struct cmd *c) {
  if (lua_getfield(L, opt, "argv") != LUA_TTABLE)
    luaL_error(L, "%s: argv must be a table of strings", fname);
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  if (n < 1)
    luaL_error(L, "%s: argv must not be empty", fname);
  if (n > 100000)
    luaL_error(L, "%s: argv too long", fname);
  c->argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  anchor(L, anch);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    c->argv[i - 1] = (char *)check_plain(L, -1, fname, "every argv element");
    lua_pushvalue(L, -1);
    anchor(L, anch);
    lua_pop(L, 1);
  }
  c->argv[n] = NULL;
  if (c->argv[0][0] == '\0')
    luaL_error(L, "%s: argv[1] (the program) is empty", fname);
  lua_pop(L, 1);
}

static void check_env_name(lua_State *L, const char *fname, const char *k, size_t n) {
  if (n == 0 || strchr(k, '=') != NULL || strlen(k) != n)
    luaL_error(L, "%s: bad environment variable name '%s'", fname, k);
}

/* Copy K=V pairs of the table on top into map (name -> "K=V"). */
static void env_merge(lua_State *L, int map, const char *fname, const char *field) {
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "%s: %s keys must be strings", fname, field);
    size_t kn;
    const char *k = lua_tolstring(L, -2, &kn);
    check_env_name(L, fname, k, kn);
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      /* false removes a variable (useful with env_add) */
      lua_pushvalue(L, -2);
      lua_pushnil(L);
      lua_rawset(L, map);
      lua_pop(L, 1);
      continue;
    }
    const char *v = check_plain(L, -1, fname, "every environment value");
    lua_pushvalue(L, -2);
    lua_pushfstring(L, "%s=%s", k, v);
    lua_rawset(L, map);
    lua_pop(L, 1);
  }
}

static void build_env(lua_State *L, int opt, int anch, const char *fname, struct cmd *c) {
  int tenv = lua_getfield(L, opt, "env");
  int tadd = lua_getfield(L, opt, "env_add");
  if (tenv != LUA_TNIL && tenv != LUA_TTABLE)
    luaL_error(L, "%s: env must be a table", fname);
  if (tadd != LUA_TNIL && tadd != LUA_TTABLE)
    luaL_error(L, "%s: env_add must be a table", fname);
  c->path_var = getenv("PATH");
  if (tenv == LUA_TNIL && tadd == LUA_TNIL) {
    c->envp = environ;
    lua_pop(L, 2);
    return;
  }
  lua_newtable(L); /* map: name -> "K=V" */
  int map = lua_gettop(L);
  if (tenv == LUA_TTABLE) {
    lua_pushvalue(L, map - 2);
    env_merge(L, map, fname, "env");
    lua_pop(L, 1);
  } else {
    for (char **e = environ; *e != NULL; e++) {
      const char *eq = strchr(*e, '=');
      if (eq == NULL || eq == *e)
        continue;
      lua_pushlstring(L, *e, (size_t)(eq - *e));
      lua_pushstring(L, *e);
      lua_rawset(L, map);
    }
  }
  if (tadd == LUA_TTABLE) {
    lua_pushvalue(L, map - 1);
    env_merge(L, map, fname, "env_add");
    lua_pop(L, 1);
  }
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, map) != 0) {
    lua_pop(L, 1);
    n++;
  }
  c->envp = lua_newuserdatauv(L, sizeof(char *) * (n + 1), 0);
  anchor(L, anch);
  size_t i = 0;
  c->path_var = NULL;
  lua_pushnil(L);
  while (lua_next(L, map) != 0) {
    c->envp[i++] = (char *)lua_tostring(L, -1); /* anchored by map, below */
    if (strcmp(lua_tostring(L, -2), "PATH") == 0)
      c->path_var = lua_tostring(L, -1) + 5;
    lua_pop(L, 1);
  }
  c->envp[i] = NULL;
  anchor(L, anch); /* the map keeps every "K=V" string alive */
  lua_pop(L, 2);
}

/*
 * Find argv[0] on PATH (the child's PATH when env sets one).  A name with a
 * slash is used as given (relative to cwd, as exec would).  Returns 0 or an
 * errno (ENOENT, or EACCES when only non-executable candidates exist).
 */
static int resolve_program(struct cmd *c) {
  const char *name = c->argv[0];
  if (strchr(name, '/') != NULL) {
    if (strlen(name) >= sizeof c->prog)
      return ENAMETOOLONG;
    strcpy(c->prog, name);
    return 0;
  }
  const char *p = c->path_var != NULL ? c->path_var : "/usr/local/bin:/usr/bin:/bin";
  int err = ENOENT;
  size_t nlen = strlen(name);
  for (;;) {
    const char *end = strchr(p, ':');
    size_t dlen = end != NULL ? (size_t)(end - p) : strlen(p);
    const char *dir = p;
    if (dlen == 0) {
      dir = ".";
      dlen = 1;
    }
    if (dlen + 1 + nlen < sizeof c->prog) {
      memcpy(c->prog, dir, dlen);
      c->prog[dlen] = '/';
      memcpy(c->prog + dlen + 1, name, nlen + 1);
      struct stat st;
      if (stat(c->prog, &st) == 0 && S_ISREG(st.st_mode)) {
        if (access(c->prog, X_OK) == 0)
          return 0;
        err = EACCES;
      }
    }
    if (end == NULL)
      break;
    p = end + 1;
  }
  return err;
}

/* fds[i] >= 0 is dup'ed onto fd i in the child; -1 inherits ours. */
static int do_spawn(pid_t *pid, struct cmd *c, const int fds[3]) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int err = posix_spawn_file_actions_init(&fa);
  if (err != 0)
    return err;
  err = posix_spawnattr_init(&at);
  if (err != 0) {
    posix_spawn_file_actions_destroy(&fa);
    return err;
  }
  for (int i = 0; i < 3 && err == 0; i++)
    if (fds[i] >= 0)
      err = posix_spawn_file_actions_adddup2(&fa, fds[i], i);
  if (err == 0 && c->cwd != NULL)
    err = posix_spawn_file_actions_addchdir_np(&fa, c->cwd);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  if (err == 0)
    err = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
  sigset_t none, dfl;
  sigemptyset(&none);
  sigemptyset(&dfl);
  /* a parent (or its parent) may ignore these; a child starts clean */
  sigaddset(&dfl, SIGPIPE);
  sigaddset(&dfl, SIGINT);
  sigaddset(&dfl, SIGTERM);
  sigaddset(&dfl, SIGQUIT);
  sigaddset(&dfl, SIGHUP);
  sigaddset(&dfl, SIGXFSZ);
  if (err == 0)
    err = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF);
  if (err == 0)
    err = posix_spawnattr_setpgroup(&at, 0);
  if (err == 0)
    err = posix_spawnattr_setsigmask(&at, &none);
  if (err == 0)
    err = posix_spawnattr_setsigdefault(&at, &dfl);
  if (err == 0)
    err = posix_spawn(pid, c->prog, &fa, &at, c->argv, c->envp);
  posix_spawnattr_destroy(&at);
  posix_spawn_file_actions_destroy(&fa);
  return err;
}

/* Everything before the fds: argv, env, cwd, the program.  Can raise; on an
 * expected failure pushes nil, msg, code and returns 3, else 0. */
static int prepare(lua_State *L, int opt, int anch, const char *fname, struct cmd *c) {
  build_argv(L, opt, anch, fname, c);
  build_env(L, opt, anch, fname, c);
  c->cwd = NULL;
  int t = lua_getfield(L, opt, "cwd");
  if (t != LUA_TNIL) {
    c->cwd = check_plain(L, -1, fname, "cwd");
    anchor(L, anch);
    struct stat st;
    if (stat(c->cwd, &st) != 0)
      return host_errno_result(L, errno, lua_pushfstring(L, "%s: cwd %s", fname, c->cwd));
    if (!S_ISDIR(st.st_mode))
      return host_errno_result(L, ENOTDIR, lua_pushfstring(L, "%s: cwd %s", fname, c->cwd));
  } else {
    lua_pop(L, 1);
  }
  int err = resolve_program(c);
  if (err != 0)
    return host_errno_result(L, err, lua_pushfstring(L, "%s: %s", fname, c->argv[0]));
  return 0;
}

/*
 * Has the child exited?  Never reaps (WNOWAIT), so its pid — and with it
 * its process group id — stays reserved until we reap.  ECHILD (someone set
 * SIGCHLD to SIG_IGN, or reaped it) counts as exited with unknown status.
 */
static int child_exited(pid_t pid, int *gone) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int rc;
  do
    rc = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    *gone = 1;
    return 1;
  }
  return si.si_pid == pid;
}

/* Reap the child; *status = -1 when it cannot be known. */
static void reap(pid_t pid, int *status) {
  pid_t r;
  do
    r = waitpid(pid, status, 0);
  while (r < 0 && errno == EINTR);
  if (r != pid)
    *status = -1;
}

static void push_exit(lua_State *L, int status, pid_t pid) {
  lua_createtable(L, 0, 6);
  if (status >= 0 && WIFEXITED(status)) {
    lua_pushinteger(L, WEXITSTATUS(status));
    lua_setfield(L, -2, "code");
  } else if (status >= 0 && WIFSIGNALED(status)) {
    push_signame(L, WTERMSIG(status));
    lua_setfield(L, -2, "signal");
  }
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "timed_out");
  lua_pushinteger(L, pid);
  lua_setfield(L, -2, "pid");
}

/* --------------------------------------------------------------- run */

enum { OUT_CAPTURE, OUT_LINES, OUT_NULL, OUT_INHERIT };

struct stream {
  int fd; /* our read end, -1 when closed or not a pipe */
  int mode;
  char *buf;
  size_t len, cap;
  int truncated;
};

struct run {
  pid_t pid; /* 0 until spawned */
  int reaped;
  int status;
  int child[3]; /* the child's ends, closed once it is started */
  int in_fd;
  const char *in_data; /* the stdin string, anchored in the option table */
  size_t in_len, in_off;
  struct stream out[2];
  int pipe_blocked;  /* SIGPIPE blocked by us, to be restored */
  sigset_t old_mask;
  int epipe;         /* we caused a SIGPIPE that is now pending */
  int pipe_was_pending;
};

/* Drop a SIGPIPE we provoked, then restore the mask. */
static void unblock_sigpipe(struct run *r) {
  if (!r->pipe_blocked)
    return;
  if (r->epipe && !r->pipe_was_pending) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  sigprocmask(SIG_SETMASK, &r->old_mask, NULL);
  r->pipe_blocked = 0;
}

/* Idempotent: kill and reap a child still there, close fds, free buffers. */
static void run_release(struct run *r) {
  if (r->pid > 0 && !r->reaped) {
    kill(-r->pid, SIGKILL);
    reap(r->pid, &r->status);
    r->reaped = 1;
  }
  for (int i = 0; i < 3; i++)
    close_fd(&r->child[i]);
  close_fd(&r->in_fd);
  for (int i = 0; i < 2; i++) {
    close_fd(&r->out[i].fd);
    free(r->out[i].buf);
    r->out[i].buf = NULL;
    r->out[i].len = r->out[i].cap = 0;
  }
  unblock_sigpipe(r);
}

static int run_gc(lua_State *L) {
  run_release(luaL_checkudata(L, 1, RUN_MT));
  return 0;
}

/* Make room for n more bytes; raises (after releasing) when out of memory. */
static void reserve(lua_State *L, struct run *r, struct stream *s, size_t n) {
  if (s->cap - s->len >= n)
    return;
  size_t cap = s->cap ? s->cap : 4096;
  while (cap - s->len < n)
    cap *= 2;
  char *nb = realloc(s->buf, cap);
  if (nb == NULL) {
    run_release(r);
    luaL_error(L, "run: not enough memory for the child's output");
  }
  s->buf = nb;
  s->cap = cap;
}

/* Call opt[field](line); on error clean everything up and re-raise. */
static void deliver_line(lua_State *L, struct run *r, const char *field, const char *p,
                         size_t n) {
  lua_getfield(L, 1, field);
  lua_pushlstring(L, p, n);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    run_release(r);
    lua_error(L);
  }
}

/* Deliver the complete lines in the stream's buffer (all of it at EOF).  A
 * line longer than MAX_LINE goes in MAX_LINE pieces, cut at the same places
 * however the pipe reads split the stream: a piece is cut only once more
 * than MAX_LINE bytes without a newline are there, so a line of exactly
 * MAX_LINE bytes is one line, never a piece and an empty line. */
static void feed_lines(lua_State *L, struct run *r, int which, int flush) {
  struct stream *s = &r->out[which];
  const char *field = which == 0 ? "stdout" : "stderr";
  if (s->len == 0) /* nothing read yet: buf may be NULL */
    return;
  size_t start = 0;
  for (;;) {
    size_t avail = s->len - start;
    char *nl = memchr(s->buf + start, '\n', avail <= MAX_LINE ? avail : MAX_LINE + 1);
    size_t n;
    if (nl != NULL)
      n = (size_t)(nl - (s->buf + start));
    else if (avail > MAX_LINE)
      n = MAX_LINE;
    else
      break;
    deliver_line(L, r, field, s->buf + start, n);
    start += n + (nl != NULL ? 1 : 0);
  }
  if (start > 0) {
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
  }
  if (flush && s->len > 0) {
    size_t n = s->len;
    s->len = 0;
    deliver_line(L, r, field, s->buf, n);
  }
}

/* Read what is there now; returns 1 at EOF (fd closed). */
static int pump_out(lua_State *L, struct run *r, int which, size_t max_capture) {
  struct stream *s = &r->out[which];
  char chunk[CHUNK];
  ssize_t n;
  do
    n = read(s->fd, chunk, sizeof chunk);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 0;
  if (n <= 0) {
    close_fd(&s->fd);
    if (s->mode == OUT_LINES)
      feed_lines(L, r, which, 1);
    return 1;
  }
  if (s->mode == OUT_CAPTURE) {
    size_t room = max_capture > s->len ? max_capture - s->len : 0;
    size_t take = (size_t)n < room ? (size_t)n : room;
    if (take < (size_t)n)
      s->truncated = 1;
    if (take > 0) {
      reserve(L, r, s, take);
      memcpy(s->buf + s->len, chunk, take);
      s->len += take;
    }
  } else {
    reserve(L, r, s, (size_t)n);
    memcpy(s->buf + s->len, chunk, (size_t)n);
    s->len += (size_t)n;
    feed_lines(L, r, which, 0);
  }
  return 0;
}

static void pump_in(struct run *r) {
  size_t left = r->in_len - r->in_off;
  if (left == 0) {
    close_fd(&r->in_fd);
    return;
  }
  ssize_t n;
  do
    n = write(r->in_fd, r->in_data + r->in_off, left < CHUNK ? left : CHUNK);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return;
    if (errno == EPIPE)
      r->epipe = 1;
    close_fd(&r->in_fd); /* the child stopped reading: that is its business */
    return;
  }
  r->in_off += (size_t)n;
  if (r->in_off == r->in_len)
    close_fd(&r->in_fd);
}

static int parse_out(lua_State *L, int opt, const char *field) {
  int t = lua_getfield(L, opt, field);
  int mode = OUT_CAPTURE;
  if (t == LUA_TFUNCTION) {
    mode = OUT_LINES;
  } else if (t == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    if (strcmp(s, "capture") == 0)
      mode = OUT_CAPTURE;
    else if (strcmp(s, "null") == 0)
      mode = OUT_NULL;
    else if (strcmp(s, "inherit") == 0)
      mode = OUT_INHERIT;
    else
      luaL_error(L, "run: %s must be \"capture\", \"null\", \"inherit\" or a function", field);
  } else if (t != LUA_TNIL) {
    luaL_error(L, "run: %s must be \"capture\", \"null\", \"inherit\" or a function", field);
  }
  lua_pop(L, 1);
  return mode;
}

static const char *const run_keys[] = {"argv",   "env",    "env_add",     "cwd",   "stdin",
                                       "timeout", "stdout", "stderr", "max_capture", "grace",
                                       NULL};

/* run{...} -> result table, or nil, msg, code when the child cannot start. */
static int p_run(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_keys(L, 1, "run", run_keys);

  double timeout = opt_number(L, 1, "timeout", "run", HUGE_VAL);
  double grace = opt_number(L, 1, "grace", "run", DEFAULT_GRACE);
  lua_Integer max_capture = DEFAULT_MAX_CAPTURE;
  if (lua_getfield(L, 1, "max_capture") != LUA_TNIL) {
    int isint = 0;
    max_capture = lua_tointegerx(L, -1, &isint);
    if (!isint || max_capture < 0)
      luaL_error(L, "run: max_capture must be a non-negative integer");
  }
  lua_pop(L, 1);
  int modes[2] = {parse_out(L, 1, "stdout"), parse_out(L, 1, "stderr")};

  struct run *r = lua_newuserdatauv(L, sizeof *r, 0); /* 2 */
  memset(r, 0, sizeof *r);
  r->child[0] = r->child[1] = r->child[2] = -1;
  r->in_fd = -1;
  r->out[0].fd = r->out[1].fd = -1;
  luaL_setmetatable(L, RUN_MT);
  lua_newtable(L); /* 3: anchor */

  int t = lua_getfield(L, 1, "stdin");
  if (t == LUA_TSTRING) {
    r->in_data = lua_tolstring(L, -1, &r->in_len);
    anchor(L, 3); /* even if a callback empties the option table */
  } else if (t != LUA_TNIL) {
    luaL_error(L, "run: stdin must be a string (the bytes to send)");
  } else {
    lua_pop(L, 1);
  }

  struct cmd *c = lua_newuserdatauv(L, sizeof *c, 0);
  anchor(L, 3);
  int nret = prepare(L, 1, 3, "run", c);
  if (nret != 0)
    return nret;

  /* From here on nothing raises until the loop (which releases first). */
  int p[2];
  int err = 0;
  if (r->in_data != NULL) {
    if (make_pipe(p) != 0)
      err = errno;
    else {
      r->child[0] = p[0];
      r->in_fd = p[1];
    }
  } else if ((r->child[0] = open_high("/dev/null", O_RDONLY, 0)) < 0) {
    err = errno;
  }
  for (int i = 0; i < 2 && err == 0; i++) {
    r->out[i].mode = modes[i];
    if (modes[i] == OUT_CAPTURE || modes[i] == OUT_LINES) {
      if (make_pipe(p) != 0) {
        err = errno;
      } else {
        r->out[i].fd = p[0];
        r->child[i + 1] = p[1];
      }
    } else if (modes[i] == OUT_NULL) {
      if ((r->child[i + 1] = open_high("/dev/null", O_WRONLY, 0)) < 0)
        err = errno;
    }
  }
  if (err != 0) {
    run_release(r);
    return host_errno_result(L, err, "run: pipe");
  }
  if (r->in_fd >= 0) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    sigset_t pend;
    sigpending(&pend);
    r->pipe_was_pending = sigismember(&pend, SIGPIPE);
    sigprocmask(SIG_BLOCK, &s, &r->old_mask);
    r->pipe_blocked = 1;
  }
  err = do_spawn(&r->pid, c, r->child);
  for (int i = 0; i < 3; i++)
    close_fd(&r->child[i]);
  if (err != 0) {
    r->pid = 0;
    run_release(r);
    return host_errno_result(L, err, lua_pushfstring(L, "run: %s", c->argv[0]));
  }
  if (r->in_fd >= 0)
    set_nonblock(r->in_fd);
  for (int i = 0; i < 2; i++)
    if (r->out[i].fd >= 0)
      set_nonblock(r->out[i].fd);

  double start = mono();
  double deadline = isinf(timeout) ? HUGE_VAL : start + timeout;
  int exited = 0, gone = 0, killing = 0, killed = 0, timed_out = 0, interrupted = 0;
  double exit_seen = 0, kill_at = 0;
  int backoff = 1;
  for (;;) {
    if (!exited && child_exited(r->pid, &gone)) {
      exited = 1;
      exit_seen = mono();
      if (killing && !killed && !gone) {
        kill(-r->pid, SIGKILL); /* the leader is gone; so are its stragglers */
        killed = 1;
      }
    }
    double now = mono();
    if (exited && ((r->out[0].fd < 0 && r->out[1].fd < 0) || now >= exit_seen + DRAIN_GRACE))
      break;
    if (!exited && !killing) {
      int sig = pending_sig;
      if (now >= deadline)
        timed_out = 1;
      else if (sig != 0)
        interrupted = sig;
      if (timed_out || interrupted) {
        kill(-r->pid, SIGTERM);
        killing = 1;
        kill_at = now + grace;
        close_fd(&r->in_fd);
      }
    }
    if (killing && !killed && !exited && now >= kill_at) {
      kill(-r->pid, SIGKILL);
      killed = 1;
    }

    double next = HUGE_VAL;
    if (!exited && !killing)
      next = deadline;
    if (killing && !killed)
      next = dmin(next, kill_at);
    if (exited)
      next = exit_seen + DRAIN_GRACE;
    double wait_ms = (next - now) * 1000.0;
    if (!exited && wait_ms > backoff)
      wait_ms = backoff; /* exit is noticed by waitid, so look again soon */
    if (wait_ms > 1000)
      wait_ms = 1000;
    int ms = wait_ms < 0 ? 0 : (int)wait_ms + 1; /* round up: never spin */

    struct pollfd pf[3];
    int np = 0, idx[3];
    if (r->in_fd >= 0) {
      pf[np].fd = r->in_fd;
      pf[np].events = POLLOUT;
      idx[np++] = -1;
    }
    for (int i = 0; i < 2; i++)
      if (r->out[i].fd >= 0) {
        pf[np].fd = r->out[i].fd;
        pf[np].events = POLLIN;
        idx[np++] = i;
      }
    int rc = poll(pf, (nfds_t)np, ms);
    if (rc < 0) {
      continue; /* EINTR: a signal; the top of the loop looks at it */
    }
    if (rc == 0) {
      if (backoff < 50)
        backoff *= 2;
      continue;
    }
    for (int k = 0; k < np; k++) {
      if (pf[k].revents == 0)
        continue;
      if (idx[k] < 0) {
        if (pf[k].revents & (POLLERR | POLLHUP))
          close_fd(&r->in_fd);
        else
          pump_in(r);
      } else if (pump_out(L, r, idx[k], (size_t)max_capture)) {
        backoff = 1; /* EOF: the child is probably exiting */
      }
    }
  }

  if (killing && !killed && !gone)
    kill(-r->pid, SIGKILL);
  if (gone)
    r->status = -1;
  else
    reap(r->pid, &r->status);
  r->reaped = 1;
  for (int i = 0; i < 2; i++)
    if (r->out[i].fd >= 0) {
      close_fd(&r->out[i].fd); /* held open by a descendant past the drain */
      if (r->out[i].mode == OUT_LINES)
        feed_lines(L, r, i, 1);
    }
  close_fd(&r->in_fd);
  unblock_sigpipe(r);

  push_exit(L, r->status, r->pid);
  lua_pushboolean(L, timed_out);
  lua_setfield(L, -2, "timed_out");
  if (interrupted) {
    push_signame(L, interrupted);
    lua_setfield(L, -2, "interrupted");
  }
  for (int i = 0; i < 2; i++) {
    if (r->out[i].mode != OUT_CAPTURE)
      continue;
    lua_pushlstring(L, r->out[i].buf ? r->out[i].buf : "", r->out[i].len);
    lua_setfield(L, -2, i == 0 ? "stdout" : "stderr");
    if (r->out[i].truncated) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, i == 0 ? "stdout_truncated" : "stderr_truncated");
    }
  }
  run_release(r);
  return 1;
}

/* ------------------------------------------------------------- spawn */

struct process {
  pid_t pid;  /* 0: never started */
  int reaped;
  int status;
  int closed;
};

static struct process *check_process(lua_State *L) {
  struct process *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->closed)
    luaL_error(L, "attempt to use a closed process");
  return p;
}

/* Reap if it has exited; returns 1 when it has. */
static int proc_poll(struct process *p) {
  if (p->reaped)
    return 1;
  int gone = 0;
  if (!child_exited(p->pid, &gone))
    return 0;
  if (gone)
    p->status = -1;
  else
    reap(p->pid, &p->status);
  p->reaped = 1;
  return 1;
}

/* Wait until exited or `secs` passed (HUGE_VAL: no limit); 1 if exited.
 * With interruptible, a pending trapped signal ends the wait (returns -1). */
static int proc_wait_for(struct process *p, double secs, int interruptible) {
  double deadline = mono() + secs;
  double step = 0.001;
  int gone = 0;
  /* A pidfd (Linux >= 5.3) becomes readable the moment the child exits, so
   * a wait returns at once instead of at the next tick of a backoff; poll
   * on it is interrupted by a trapped signal like the nap.  Without one
   * (ENOSYS, EMFILE...) the child is polled with a growing nap. */
  int pfd = -1, tried = 0;
  int rc;
  for (;;) {
    if (p->reaped || child_exited(p->pid, &gone)) {
      rc = 1;
      break;
    }
    if (interruptible && pending_sig != 0) {
      rc = -1;
      break;
    }
    double left = deadline - mono();
    if (left <= 0) {
      rc = 0;
      break;
    }
    if (!tried) { /* only a wait that really waits opens one */
      tried = 1;
      pfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    }
    if (pfd >= 0) {
      /* at most 50 ms: a signal that lands between the pending_sig check
       * and poll is then seen as soon as the nap would have seen it */
      struct pollfd pw = {pfd, POLLIN, 0};
      poll(&pw, 1, (int)(dmin(left, 0.05) * 1000.0) + 1);
    } else {
      nap(dmin(step, left));
      if (step < 0.05)
        step *= 2;
    }
  }
  if (pfd >= 0)
    close(pfd);
  return rc;
}

/* TERM the group, wait up to grace, KILL the group (stragglers too), reap. */
static void proc_stop(struct process *p, double grace) {
  if (p->reaped)
    return; /* its pid may belong to someone else now */
  int gone = 0;
  if (!child_exited(p->pid, &gone)) {
    kill(-p->pid, SIGTERM);
    kill(-p->pid, SIGCONT); /* a stopped group cannot act on TERM */
    proc_wait_for(p, grace, 0);
  }
  if (!gone)
    kill(-p->pid, SIGKILL);
  proc_poll(p);
  if (!p->reaped) { /* KILL cannot be refused; wait for it */
    reap(p->pid, &p->status);
    p->reaped = 1;
  }
}

static int process_close(lua_State *L) {
  struct process *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->closed)
    return 0;
  p->closed = 1;
  if (p->pid > 0)
    proc_stop(p, CLOSE_GRACE);
  return 0;
}

static const char *const spawn_keys[] = {"argv",   "env",    "env_add", "cwd",
                                         "stdout", "stderr", "append",  NULL};

/* stdout/stderr of spawn: "inherit" (default), "null" or a file path. */
static int spawn_target(lua_State *L, int opt, const char *field, int append, int *fd) {
  *fd = -1;
  int t = lua_getfield(L, opt, field);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  if (t != LUA_TSTRING)
    luaL_error(L, "spawn: %s must be \"inherit\", \"null\" or a file path", field);
  const char *s = lua_tostring(L, -1);
  if (strcmp(s, "inherit") == 0) {
    lua_pop(L, 1);
    return 0;
  }
  const char *path = strcmp(s, "null") == 0 ? "/dev/null" : s;
  int flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC);
  *fd = open_high(path, flags, 0644);
  if (*fd < 0)
    return host_errno_result(L, errno, lua_pushfstring(L, "spawn: %s %s", field, path));
  lua_pop(L, 1);
  return 0;
}

/* spawn{...} -> Process, or nil, msg, code. */
static int p_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_keys(L, 1, "spawn", spawn_keys);
  lua_getfield(L, 1, "append");
  int append = lua_toboolean(L, -1);
  lua_pop(L, 1);

  struct process *p = lua_newuserdatauv(L, sizeof *p, 0); /* 2 */
  memset(p, 0, sizeof *p);
  luaL_setmetatable(L, PROCESS_MT);
  lua_newtable(L); /* 3: anchor */
  struct cmd *c = lua_newuserdatauv(L, sizeof *c, 0);
  anchor(L, 3);
  int nret = prepare(L, 1, 3, "spawn", c);
  if (nret != 0)
    return nret;
  /* validate both targets before opening anything (raising leaks no fd) */
  for (int i = 0; i < 2; i++) {
    int t = lua_getfield(L, 1, i == 0 ? "stdout" : "stderr");
    if (t != LUA_TNIL && t != LUA_TSTRING)
      luaL_error(L, "spawn: %s must be \"inherit\", \"null\" or a file path",
                 i == 0 ? "stdout" : "stderr");
    lua_pop(L, 1);
  }
  int fds[3] = {-1, -1, -1};
  fds[0] = open_high("/dev/null", O_RDONLY, 0);
  if (fds[0] < 0)
    return host_errno_result(L, errno, "spawn: /dev/null");
  int rc = spawn_target(L, 1, "stdout", append, &fds[1]);
  lua_getfield(L, 1, "stdout");
  lua_getfield(L, 1, "stderr");
  int same = fds[1] >= 0 && lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (rc == 0 && same) {
    /* one open file for both, as `>f 2>&1`: two would overwrite each other */
    fds[2] = fcntl(fds[1], F_DUPFD_CLOEXEC, 3);
    if (fds[2] < 0)
      rc = host_errno_result(L, errno, "spawn: stderr");
  } else if (rc == 0) {
    rc = spawn_target(L, 1, "stderr", append, &fds[2]);
  }
  int err = 0;
  if (rc == 0)
    err = do_spawn(&p->pid, c, fds);
  for (int i = 0; i < 3; i++)
    close_fd(&fds[i]);
  if (rc != 0)
    return rc;
  if (err != 0) {
    p->pid = 0;
    return host_errno_result(L, err, lua_pushfstring(L, "spawn: %s", c->argv[0]));
  }
  lua_settop(L, 2);
  return 1;
}

static int process_pid(lua_State *L) {
  lua_pushinteger(L, check_process(L)->pid);
  return 1;
}

static int process_running(lua_State *L) {
  struct process *p = check_process(L);
  int gone = 0;
  lua_pushboolean(L, !p->reaped && !child_exited(p->pid, &gone));
  return 1;
}

/* p:wait([timeout]) -> exit info, or nil, msg, "TIMEOUT" / "EINTR". */
static int process_wait(lua_State *L) {
  struct process *p = check_process(L);
  double secs = HUGE_VAL;
  if (!lua_isnoneornil(L, 2)) {
    secs = luaL_checknumber(L, 2);
    luaL_argcheck(L, !isnan(secs) && secs >= 0, 2, "timeout must not be negative");
  }
  int rc = proc_wait_for(p, secs, 1);
  if (rc == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "wait: timeout");
    lua_pushliteral(L, "TIMEOUT");
    return 3;
  }
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "wait: interrupted by SIG");
    push_signame(L, pending_sig);
    lua_concat(L, 2);
    lua_pushliteral(L, "EINTR");
    return 3;
  }
  proc_poll(p);
  push_exit(L, p->status, p->pid);
  return 1;
}

/* p:kill([sig]) -> true, or nil, msg, code.  Goes to the whole group. */
static int process_kill(lua_State *L) {
  struct process *p = check_process(L);
  int sig = check_signal(L, 2, SIGTERM);
  if (p->reaped)
    return host_errno_result(L, ESRCH, "kill: the process has exited");
  if (kill(-p->pid, sig) != 0)
    return host_errno_result(L, errno, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* p:stop([grace]) -> exit info. */
static int process_stop(lua_State *L) {
  struct process *p = check_process(L);
  double grace = luaL_optnumber(L, 2, DEFAULT_STOP_GRACE);
  luaL_argcheck(L, !isnan(grace) && grace >= 0, 2, "grace must not be negative");
  proc_stop(p, grace);
  push_exit(L, p->status, p->pid);
  return 1;
}

static int process_tostring(lua_State *L) {
  struct process *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->closed)
    lua_pushliteral(L, "runbook.proc.Process (closed)");
  else
    lua_pushfstring(L, "runbook.proc.Process (pid %d)", (int)p->pid);
  return 1;
}

/* ------------------------------------------------------ process info */

static int p_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "pid must be positive");
  lua_pushboolean(L, kill((pid_t)pid, 0) == 0 || errno == EPERM);
  return 1;
}

static int p_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int p_hostname(lua_State *L) {
  char buf[HOST_NAME_MAX + 1];
  if (gethostname(buf, sizeof buf) != 0)
    return host_errno_result(L, errno, "hostname");
  buf[sizeof buf - 1] = '\0';
  lua_pushstring(L, buf);
  return 1;
}

/* Name of the effective user; its number as a string without a passwd entry. */
static int p_user(lua_State *L) {
  struct passwd pw, *res = NULL;
  char buf[4096];
  uid_t uid = geteuid();
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res != NULL)
    lua_pushstring(L, pw.pw_name);
  else
    lua_pushfstring(L, "%d", (int)uid);
  return 1;
}

/* env() -> { NAME = value } of this process. */
static int p_env(lua_State *L) {
  lua_newtable(L);
  for (char **e = environ; *e != NULL; e++) {
    const char *eq = strchr(*e, '=');
    if (eq == NULL || eq == *e)
      continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  return 1;
}

/* trap_signals(): INT and TERM only set the flag from now on. */
static int p_trap_signals(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sa.sa_flags = SA_RESTART; /* stdio in Lua's io library must not see EINTR */
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
    return host_errno_result(L, errno, "trap_signals");
  lua_pushlightuserdata(L, (void *)(uintptr_t)&pending_sig);
  lua_setfield(L, LUA_REGISTRYINDEX, SIGFLAG_KEY);
  lua_pushboolean(L, 1);
  return 1;
}

/* pending_signal() -> "INT" | "TERM" | nil, and clears it. */
static int p_pending_signal(lua_State *L) {
  sigset_t s, old;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  sigprocmask(SIG_BLOCK, &s, &old); /* read and clear as one step */
  int sig = pending_sig;
  pending_sig = 0;
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (sig == 0)
    lua_pushnil(L);
  else
    push_signame(L, sig);
  return 1;
}

static const luaL_Reg funcs[] = {
    {"run", p_run},
    {"spawn", p_spawn},
    {"alive", p_alive},
    {"getpid", p_getpid},
    {"hostname", p_hostname},
    {"user", p_user},
    {"env", p_env},
    {"trap_signals", p_trap_signals},
    {"pending_signal", p_pending_signal},
    {NULL, NULL},
};

static const luaL_Reg process_methods[] = {
    {"pid", process_pid},   {"running", process_running}, {"wait", process_wait},
    {"kill", process_kill}, {"stop", process_stop},       {"close", process_close},
    {NULL, NULL},
};

static const luaL_Reg process_meta[] = {
    {"__gc", process_close},
    {"__close", process_close},
    {"__tostring", process_tostring},
    {NULL, NULL},
};

int luaopen_runbook_proc_core(lua_State *L) {
  if (luaL_newmetatable(L, PROCESS_MT)) {
    luaL_setfuncs(L, process_meta, 0);
    luaL_newlib(L, process_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, RUN_MT)) {
    lua_pushcfunction(L, run_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
