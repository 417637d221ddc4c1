/*
 * term.c — runbook.term.core: the terminal and the clocks.
 *
 *   isatty(fd | file)    is it a terminal
 *   width([fd])          columns of the terminal on fd (default 1), or nil
 *   prompt_secret(p)     read one line from /dev/tty without echo
 *   now() / monotonic()  wall-clock and monotonic seconds (floats)
 *   sleep(s)             nanosleep that resumes after EINTR but returns
 *                        early (false) when a signal trapped by
 *                        runbook.proc is pending, so Ctrl-C is prompt
 *
 * prompt_secret reads the tty in non-canonical mode with echo and signal
 * generation off and does its own line editing (erase, kill, ^C, ^D).  With
 * ISIG off a Ctrl-C cannot kill the process while echo is off, so the
 * terminal settings are always restored; a ^C typed at the prompt is
 * re-raised as SIGINT once they are.  The secret only ever sits in a stack
 * buffer that is wiped before returning.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "host.h"

#define TTY_MT "runbook.term.tty"
#define SIGFLAG_KEY "runbook.proc.sigflag" /* published by proc.trap_signals */
#ifndef SECRET_MAX /* host/fuzz/term.c makes it small */
#define SECRET_MAX 8192
#endif

static int signal_pending(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, SIGFLAG_KEY);
  const volatile sig_atomic_t *flag = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return flag != NULL && *flag != 0;
}

/* An fd from an integer or an open Lua file (io.stdout). */
static int check_fd(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer fd = luaL_checkinteger(L, arg);
    luaL_argcheck(L, fd >= 0 && fd <= 65535, arg, "bad file descriptor");
    return (int)fd;
  }
  luaL_Stream *s = luaL_checkudata(L, arg, LUA_FILEHANDLE);
  luaL_argcheck(L, s->closef != NULL && s->f != NULL, arg, "attempt to use a closed file");
  return fileno(s->f);
}

static int t_isatty(lua_State *L) {
  lua_pushboolean(L, isatty(check_fd(L, 1)));
  return 1;
}

static int t_width(lua_State *L) {
  int fd = lua_isnoneornil(L, 1) ? STDOUT_FILENO : check_fd(L, 1);
  struct winsize ws;
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0)
    lua_pushnil(L);
  else
    lua_pushinteger(L, ws.ws_col);
  return 1;
}

/* ---------------------------------------------------- prompt_secret */

struct tty {
  int fd;
  int restore; /* old holds settings to put back */
  struct termios old;
};

static void tty_release(struct tty *t) {
  if (t->fd < 0)
    return;
  if (t->restore) {
    tcsetattr(t->fd, TCSADRAIN, &t->old);
    t->restore = 0;
  }
  close(t->fd);
  t->fd = -1;
}

static int tty_gc(lua_State *L) {
  tty_release(luaL_checkudata(L, 1, TTY_MT));
  return 0;
}

static void tty_write(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

enum { READ_OK, READ_EOF, READ_INTR, READ_SIGNAL, READ_LONG, READ_ERR };

/* Is ch the terminal's key c?  A key set to _POSIX_VDISABLE (0) is off, so
 * a typed NUL is not taken for it. */
static int is_key(unsigned char ch, cc_t c) { return c != _POSIX_VDISABLE && ch == c; }

/* Line editing by hand (canonical mode is off).  Returns READ_*.  Input
 * over SECRET_MAX is READ_LONG however the line ends (Enter or end of
 * input): a secret is never silently shortened. */
static int read_secret(lua_State *L, struct tty *t, char *buf, size_t *len) {
  const cc_t *cc = t->old.c_cc;
  size_t n = 0;
  int too_long = 0;
  for (;;) {
    struct pollfd pf = {t->fd, POLLIN, 0};
    int rc = poll(&pf, 1, 200);
    if (signal_pending(L)) { /* e.g. SIGTERM from outside */
      *len = n;
      return READ_SIGNAL;
    }
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc < 0)
      return READ_ERR;
    if (rc == 0)
      continue;
    unsigned char ch;
    ssize_t r = read(t->fd, &ch, 1);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (r < 0)
      return READ_ERR;
    if (r == 0) {
      *len = n;
      return too_long ? READ_LONG : n == 0 ? READ_EOF : READ_OK;
    }
    if (ch == '\n' || ch == '\r')
      break;
    if (is_key(ch, cc[VINTR]))
      return READ_INTR;
    if (is_key(ch, cc[VEOF])) {
      if (n == 0)
        return READ_EOF;
      continue;
    }
    if (is_key(ch, cc[VERASE]) || ch == 0x7f || ch == 0x08) {
      while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80)
        n--; /* a whole UTF-8 character */
      if (n > 0)
        n--;
      continue;
    }
    if (is_key(ch, cc[VKILL])) {
      n = 0;
      too_long = 0; /* the line is typed again from scratch */
      continue;
    }
    if (n < SECRET_MAX)
      buf[n++] = (char)ch;
    else
      too_long = 1;
  }
  *len = n;
  return too_long ? READ_LONG : READ_OK;
}

/* prompt_secret([prompt]) -> line (without newline), or nil, msg, code. */
static int t_prompt_secret(lua_State *L) {
  size_t plen = 0;
  const char *prompt = luaL_optlstring(L, 1, "", &plen);
  lua_settop(L, 1);
  struct tty *t = lua_newuserdatauv(L, sizeof *t, 0);
  t->fd = -1;
  t->restore = 0;
  luaL_setmetatable(L, TTY_MT);
  do
    t->fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  while (t->fd < 0 && errno == EINTR);
  if (t->fd < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "prompt: no terminal to ask on (/dev/tty: %s)", strerror(errno));
    lua_pushliteral(L, "ENOTTY");
    return 3;
  }
  if (tcgetattr(t->fd, &t->old) != 0) {
    int e = errno;
    tty_release(t);
    return host_errno_result(L, e == ENOTTY ? ENOTTY : e, "prompt: /dev/tty");
  }
  struct termios raw = t->old;
  raw.c_lflag &= ~(tcflag_t)(ECHO | ICANON | ISIG | IEXTEN);
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  /* TCSADRAIN, not TCSAFLUSH: a secret pasted right away is kept.  Echo
   * goes off before the prompt is shown, so whatever is typed once the
   * prompt is visible is never echoed. */
  if (tcsetattr(t->fd, TCSADRAIN, &raw) != 0) {
    int e = errno;
    tty_release(t);
    return host_errno_result(L, e, "prompt: /dev/tty");
  }
  t->restore = 1;
  tty_write(t->fd, prompt, plen);

  char buf[SECRET_MAX];
  size_t len = 0;
  int rc = read_secret(L, t, buf, &len);
  int e = errno;
  tty_write(t->fd, "\n", 1);
  tty_release(t); /* terminal settings back before anything can raise */
  int nret = 3;
  switch (rc) {
  case READ_OK:
    lua_pushlstring(L, buf, len);
    nret = 1;
    break;
  case READ_EOF:
    lua_pushnil(L);
    lua_pushliteral(L, "prompt: end of input");
    lua_pushliteral(L, "EOF");
    break;
  case READ_INTR:
  case READ_SIGNAL:
    lua_pushnil(L);
    lua_pushliteral(L, "prompt: interrupted");
    lua_pushliteral(L, "EINTR");
    break;
  case READ_LONG:
    lua_pushnil(L);
    lua_pushliteral(L, "prompt: input too long");
    lua_pushliteral(L, "E2BIG");
    break;
  default:
    nret = host_errno_result(L, e, "prompt: /dev/tty");
    break;
  }
  explicit_bzero(buf, sizeof buf);
  if (rc == READ_INTR)
    raise(SIGINT); /* what ^C would have done with ISIG on */
  return nret;
}

/* ------------------------------------------------------------ clocks */

static lua_Number clock_seconds(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9;
}

static int t_now(lua_State *L) {
  lua_pushnumber(L, clock_seconds(CLOCK_REALTIME));
  return 1;
}

static int t_monotonic(lua_State *L) {
  lua_pushnumber(L, clock_seconds(CLOCK_MONOTONIC));
  return 1;
}

/* sleep(s) -> true, or false when cut short by a pending trapped signal. */
static int t_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, isfinite(s) && s >= 0, 1, "seconds must be a finite non-negative number");
  struct timespec req, rem;
  req.tv_sec = (time_t)s;
  req.tv_nsec = (long)((s - (lua_Number)req.tv_sec) * 1e9);
  if (req.tv_nsec > 999999999)
    req.tv_nsec = 999999999;
  for (;;) {
    if (signal_pending(L)) {
      lua_pushboolean(L, 0);
      return 1;
    }
    if (nanosleep(&req, &rem) == 0)
      break;
    if (errno != EINTR)
      break;
    req = rem;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg funcs[] = {
    {"isatty", t_isatty}, {"width", t_width}, {"prompt_secret", t_prompt_secret},
    {"now", t_now},       {"monotonic", t_monotonic}, {"sleep", t_sleep},
    {NULL, NULL},
};

int luaopen_runbook_term_core(lua_State *L) {
  if (luaL_newmetatable(L, TTY_MT)) {
    lua_pushcfunction(L, tty_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
