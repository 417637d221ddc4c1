/*
 * fuzz/term.c — libFuzzer harness for the line editing of
 * prompt_secret (read_secret in host/term.c).
 *
 * The first four input bytes are the terminal's VINTR, VEOF, VERASE and
 * VKILL characters (0 is _POSIX_VDISABLE: that key is off); the rest is what
 * the user types, read from a pipe that ends after it.  The outcome must be
 * what docs/HOST.md describes, decided here by a separate model:
 *   Enter (CR or LF) ends the line; ^C interrupts; ^D on an empty line is
 *   end of input and is ignored elsewhere; erase (DEL, BS or VERASE) removes
 *   a whole UTF-8 character; kill empties the line; more than SECRET_MAX
 *   bytes is "too long" — never a silently shortened secret, also when the
 *   input ends without Enter.
 * And on its own: typed text without control keys comes back unchanged;
 * valid UTF-8 with erases stays valid UTF-8.
 *
 * SECRET_MAX is made small so that the limit is cheap to reach.
 */
#define SECRET_MAX 32
#include "../term.c"

#include <stdint.h>
#include <stdlib.h>

#include "fuzz.h"

static const char *const NAMES[] = {"OK", "EOF", "INTR", "SIGNAL", "LONG", "ERR"};

static int key(unsigned char ch, cc_t c) { return c != _POSIX_VDISABLE && ch == c; }

/* The model: returns READ_* and fills out/olen. */
static int model(const unsigned char *in, size_t n, const cc_t cc[4], char *out, size_t *olen) {
  size_t len = 0;
  int too_long = 0, enter = 0;
  for (size_t i = 0; i < n && !enter; i++) {
    unsigned char ch = in[i];
    if (ch == '\n' || ch == '\r') {
      enter = 1;
    } else if (key(ch, cc[0])) {
      return READ_INTR;
    } else if (key(ch, cc[1])) {
      if (len == 0)
        return READ_EOF;
    } else if (key(ch, cc[2]) || ch == 0x7f || ch == 0x08) {
      /* one character: its continuation bytes and the byte before them */
      while (len > 0 && ((unsigned char)out[len - 1] & 0xC0) == 0x80)
        len--;
      if (len > 0)
        len--;
    } else if (key(ch, cc[3])) {
      len = 0;
      too_long = 0; /* the line is typed again from scratch */
    } else if (len < SECRET_MAX) {
      out[len++] = (char)ch;
    } else {
      too_long = 1;
    }
  }
  *olen = len;
  if (too_long)
    return READ_LONG;
  if (!enter && len == 0)
    return READ_EOF;
  return READ_OK;
}

static int valid_utf8(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t k = c < 0x80 ? 0 : (c >= 0xC2 && c <= 0xDF) ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c >= 0xF0 && c <= 0xF4) ? 3 : 9;
    if (k == 9)
      return 0;
    for (size_t j = 1; j <= k; j++)
      if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
        return 0;
    i += k + 1;
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4 || size > 4 + 16384)
    return 0;
  cc_t cc[4] = {data[0], data[1], data[2], data[3]};
  const unsigned char *in = data + 4;
  size_t n = size - 4;

  int p[2];
  if (pipe(p) != 0)
    abort();
  for (size_t off = 0; off < n;) {
    ssize_t w = write(p[1], in + off, n - off);
    if (w <= 0)
      abort();
    off += (size_t)w;
  }
  close(p[1]);

  lua_State *L = luaL_newstate();
  struct tty t;
  memset(&t, 0, sizeof t);
  t.fd = p[0];
  t.old.c_cc[VINTR] = cc[0];
  t.old.c_cc[VEOF] = cc[1];
  t.old.c_cc[VERASE] = cc[2];
  t.old.c_cc[VKILL] = cc[3];
  char buf[SECRET_MAX];
  size_t len = 0;
  int rc = read_secret(L, &t, buf, &len);
  close(p[0]);
  lua_close(L);

  char want[SECRET_MAX];
  size_t wlen = 0;
  int wrc = model(in, n, cc, want, &wlen);
  if (rc != wrc)
    FAIL("read_secret: %s, want %s", NAMES[rc], NAMES[wrc]);
  if (rc == READ_OK && (len != wlen || memcmp(buf, want, len) != 0))
    FAIL("read_secret: line of %zu bytes differs from the model's %zu bytes", len, wlen);
  if (len > SECRET_MAX)
    FAIL("read_secret: %zu bytes, over SECRET_MAX", len);

  /* typed text without any control key comes back as typed */
  size_t line = 0;
  int plain = 1;
  while (line < n && in[line] != '\n' && in[line] != '\r') {
    unsigned char ch = in[line++];
    plain &= ch != 0x7f && ch != 0x08 && !key(ch, cc[0]) && !key(ch, cc[1]) && !key(ch, cc[2]) &&
             !key(ch, cc[3]);
  }
  if (plain && line > 0) {
    if (line > SECRET_MAX ? rc != READ_LONG : (rc != READ_OK || len != line || memcmp(buf, in, line) != 0))
      FAIL("plain text of %zu bytes read as %s (%zu bytes)", line, NAMES[rc], len);
  }
  /* valid UTF-8 typed whole characters at a time (an erase never comes
   * between the bytes of one), erases aside, stays valid UTF-8 */
  if (rc == READ_OK) {
    int applies = 1, need = 0;
    for (size_t i = 0; i < line && applies; i++) {
      unsigned char ch = in[i];
      if (ch == 0x7f || ch == 0x08 || key(ch, cc[2]))
        applies = need == 0;
      else if (key(ch, cc[0]) || key(ch, cc[1]) || key(ch, cc[3]))
        applies = 0;
      else if (need > 0)
        applies = (ch & 0xC0) == 0x80 && need-- > 0;
      else if (ch >= 0xC2 && ch <= 0xDF)
        need = 1;
      else if ((ch & 0xF0) == 0xE0)
        need = 2;
      else if (ch >= 0xF0 && ch <= 0xF4)
        need = 3;
      else
        applies = ch < 0x80;
    }
    if (applies && need == 0 && !valid_utf8((const unsigned char *)buf, len))
      FAIL("erasing broke a UTF-8 character");
  }
  return 0;
}
