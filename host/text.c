/*
 * text.c — runbook.text.core: one pass over a Lua string for what would
 * otherwise cost a Lua-level call per byte of interest.
 *
 *   find_all(s, needles) -> pos, which, line, lstart
 *       Every occurrence of any of the needles (plain bytes, 1 to 16
 *       non-empty strings) in s, in ascending position order, like
 *       `grep -bn` with fixed strings: pos[i] is its 1-based position,
 *       which[i] the index of the needle found there (the first in the list
 *       when several match at one position), line[i] its 1-based line
 *       number and lstart[i] the position of that line's first byte.
 *       Occurrences may overlap.
 *
 *   find_all(s, needles, follow) -> pos, which, line, lstart, at
 *       The same, keeping only the occurrences that follow (a one-byte
 *       string) comes after, blanks allowed between them: at[i] is the
 *       position of that byte.  With follow "(", the calls of a name.
 *
 *   last_of(s, set, init [, stop [, outside]]) -> pos | nil
 *       The last position in s[stop..init] (default s[1..#s]) whose byte
 *       is one of the bytes of set — or, with outside, is none of them —
 *       like strrchr for a set of bytes, or a backward strspn.  nil when
 *       there is none (and when init < stop).
 *
 *   js_lex(s [, limit]) -> S, E, n
 *       The parts of JavaScript/TypeScript source that are not code, up to
 *       position limit (default #s): comments and the insides of string,
 *       template (not its ${...} expressions) and regex literals, as sorted
 *       inclusive ranges S[i]..E[i] (an empty literal has E < S).  A
 *       literal that starts at or before limit is given whole.  A quote
 *       never runs past its line (unless a backslash continues it); a "/"
 *       starts a regex after an operator, an opening bracket or a keyword
 *       such as return, else it is a division.
 *
 *   js_in_code(s, positions) -> code
 *       For each of the ascending positions, whether js_lex puts it in
 *       code: code[i] is true unless positions[i] is inside one of the
 *       ranges (lexing stops once every position is decided).
 *
 *   js_args(s, open [, window]) -> ranges, close | nil
 *       The top-level arguments of the call whose "(" is at open: a flat
 *       array {first1, last1, first2, last2, ...} of each argument without
 *       its surrounding blanks (first > last: a blank argument), and the
 *       position of the closing ")".  Strings, templates (and their ${...}),
 *       regexes, comments and brackets are skipped whole; a trailing comma
 *       leaves no argument.  close is nil when the call does not close
 *       within window bytes (default 8000) or a bracket that is not ")"
 *       closes it: ranges then holds the arguments a comma ended.
 *
 *   js_open_before(s, p [, budget]) -> pos, used | nil, used
 *       Going back from p: the first "{" whose block holds p (every "}"
 *       on the way balanced by a "{"), and how many braces were looked at;
 *       nil when the text starts first or budget braces (default 400)
 *       were looked at.  Braces in strings and comments count: this is a
 *       cheap outline, not a parse.
 *
 *   js_block_head(s, e) -> first, last
 *       The head of the block whose "{" follows position e, without its
 *       blanks: the text back to the last ";", "{", "}" or newline — across
 *       lines when its line holds nothing or closes a parenthesis opened
 *       earlier (multi-line parameters, `for (a; b; c)`), at most 6 lines
 *       back.  first > last: an empty head.
 *
 *   js_expr_end(s, p) -> pos
 *       From just inside a "{" (or "${"), the position after the "}" that
 *       closes it, strings and templates skipped; #s + 1 when none does.
 *
 *   js_quote_end(s, q) -> pos
 *       The closing quote of the '...' or "..." literal opened at q, or the
 *       newline that cuts it off (#s + 1 at the end of s).
 *
 * kv-audit finds ".put" / ".get" / ".delete" / ".list" this way: a
 * string.find loop per needle stops at every dot of a JavaScript file once
 * per needle, and numbering lines costs a string.find per newline.  Here,
 * when every needle starts with the same byte, memchr jumps from one such
 * byte to the next (else a table of first bytes is tested at each byte),
 * and newlines are counted with memchr only up to the last occurrence.
 * It reads backwards from a call with last_of — the receiver before the
 * dot, the braces enclosing it, the head of each block — where Lua would
 * have to reverse the text (a copy of the file) or try an anchored match
 * at every position.
 */
#define _GNU_SOURCE
#include <ctype.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <string.h>

#include "host.h"

#define MAX_NEEDLES 16

typedef struct {
  lua_Integer pos, which, line, lstart, at;
} Hit;

/* How many newlines s[a..b) holds: 16 bytes at a time where SSE2 is
 * there, the matches summed in byte lanes (psadbw every 255 blocks). */
static size_t count_nl(const char *a, const char *b) {
  size_t n = 0;
#ifdef __SSE2__
  const __m128i nl = _mm_set1_epi8('\n'), zero = _mm_setzero_si128();
  while (b - a >= 16) {
    __m128i acc = zero;
    for (int k = 0; k < 255 && b - a >= 16; k++, a += 16)
      acc = _mm_sub_epi8(acc, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)a), nl));
    __m128i sum = _mm_sad_epu8(acc, zero);
    n += (size_t)_mm_cvtsi128_si32(sum) + (size_t)_mm_extract_epi16(sum, 4);
  }
#endif
  for (; a < b; a++)
    n += *a == '\n';
  return n;
}

/* The first position from p where byte c is followed by a byte of the set
 * `second`, else NULL. memchr would stop at every dot of a JS file: here 16
 * positions are looked at a time where SSE2 is there, and only the dots
 * among them have their next byte looked up. */
static const char *next_pair(const char *p, const char *end, unsigned char c, const unsigned char *second) {
#ifdef __SSE2__
  const __m128i first = _mm_set1_epi8((char)c);
  for (; end - p >= 17; p += 16) {
    unsigned mask = (unsigned)_mm_movemask_epi8(
        _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)p), first));
    while (mask) {
      int i = __builtin_ctz(mask);
      if (second[(unsigned char)p[i + 1]])
        return p + i;
      mask &= mask - 1;
    }
  }
#endif
  for (; end - p >= 2; p++)
    if ((unsigned char)p[0] == c && second[(unsigned char)p[1]])
      return p;
  return NULL;
}

static int t_find_all(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer k = luaL_len(L, 2);
  luaL_argcheck(L, k >= 1 && k <= MAX_NEEDLES, 2, "1 to 16 needles");
  const char *nd[MAX_NEEDLES];
  size_t nl[MAX_NEEDLES];
  unsigned char first[256] = {0}, second[256] = {0};
  int distinct = 0, short_needle = 0;
  for (int i = 0; i < (int)k; i++) {
    lua_rawgeti(L, 2, i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_argerror(L, 2, "needles must be non-empty strings");
    nd[i] = lua_tolstring(L, -1, &nl[i]); /* kept alive by the needles table */
    if (nl[i] == 0)
      return luaL_argerror(L, 2, "needles must be non-empty strings");
    lua_pop(L, 1);
    if (!first[(unsigned char)nd[i][0]]++)
      distinct++;
    if (nl[i] == 1)
      short_needle = 1;
    else
      second[(unsigned char)nd[i][1]] = 1;
  }
  size_t fl = 0;
  const char *follow = luaL_optlstring(L, 3, NULL, &fl);
  luaL_argcheck(L, follow == NULL || fl == 1, 3, "follow must be one byte");
  lua_settop(L, 3);
  const char *end = s + len;
  /* the hits are gathered first (in `local`, then in a userdata when there
   * are more), so each result table is made once at its size: most files
   * have no hit, and five empty tables cost nothing to fill */
  Hit local[64], *hits = local;
  size_t nh = 0, cap = 64;
  const char *counted = s; /* newlines before this are counted */
  lua_Integer line = 1;
  size_t ls = 0; /* 0-based start of the current line */
  const unsigned char only = (unsigned char)nd[0][0];
  const char *p = s;
  for (;;) {
    /* the next byte that may start a needle */
    if (distinct == 1 && !short_needle) {
      p = next_pair(p, end, only, second);
    } else if (distinct == 1) {
      p = p < end ? memchr(p, only, (size_t)(end - p)) : NULL;
    } else {
      while (p < end && !first[(unsigned char)*p])
        p++;
      if (p == end)
        p = NULL;
    }
    if (p == NULL)
      break;
    size_t left = (size_t)(end - p);
    int hit = -1;
    /* most candidate bytes (a dot) are followed by no needle's 2nd byte */
    if (short_needle || (left >= 2 && second[(unsigned char)p[1]]))
      for (int i = 0; i < (int)k && hit < 0; i++) {
        const char *n = nd[i];
        size_t m = nl[i];
        if (n[0] != *p || m > left)
          continue;
        if (m > 1 && n[1] != p[1])
          continue;
        if (m <= 2 || memcmp(p + 2, n + 2, m - 2) == 0)
          hit = i;
      }
    const char *f = NULL;
    if (hit >= 0 && follow) {
      f = p + nl[hit];
      while (f < end && isspace((unsigned char)*f))
        f++;
      if (f == end || *f != follow[0])
        hit = -1;
    }
    if (hit < 0) {
      p++;
      continue;
    }
    if (counted < p) {
      size_t n = count_nl(counted, p);
      if (n) {
        line += (lua_Integer)n;
        const char *last = memrchr(counted, '\n', (size_t)(p - counted));
        ls = (size_t)(last - s) + 1;
      }
      counted = p;
    }
    if (nh == cap) {
      Hit *more = lua_newuserdatauv(L, 2 * cap * sizeof *more, 0); /* kept on the stack */
      memcpy(more, hits, nh * sizeof *more);
      hits = more;
      cap *= 2;
    }
    hits[nh++] = (Hit){(lua_Integer)(p - s) + 1, hit + 1, line, (lua_Integer)ls + 1,
                       f ? (lua_Integer)(f - s) + 1 : 0};
    p++;
  }
  int base = lua_gettop(L) + 1, nt = follow ? 5 : 4;
  for (int t = 0; t < nt; t++) {
    lua_createtable(L, (int)nh, 0);
    for (size_t i = 0; i < nh; i++) {
      const Hit *h = &hits[i];
      lua_pushinteger(L, t == 0 ? h->pos : t == 1 ? h->which : t == 2 ? h->line : t == 3 ? h->lstart : h->at);
      lua_rawseti(L, base + t, (lua_Integer)i + 1);
    }
  }
  return nt;
}

static int t_last_of(lua_State *L) {
  size_t len, n;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *set = luaL_checklstring(L, 2, &n);
  lua_Integer init = luaL_optinteger(L, 3, (lua_Integer)len);
  lua_Integer stop = luaL_optinteger(L, 4, 1);
  int outside = lua_toboolean(L, 5);
  if (init > (lua_Integer)len)
    init = (lua_Integer)len;
  if (stop < 1)
    stop = 1;
  if (init < stop) {
    lua_pushnil(L);
    return 1;
  }
  if (n == 1 && !outside) {
    const char *p = memrchr(s + stop - 1, set[0], (size_t)(init - stop + 1));
    if (p == NULL)
      lua_pushnil(L);
    else
      lua_pushinteger(L, (lua_Integer)(p - s) + 1);
    return 1;
  }
  unsigned char in[256] = {0};
  for (size_t i = 0; i < n; i++)
    in[(unsigned char)set[i]] = 1;
  unsigned char want = outside ? 0 : 1;
  for (lua_Integer i = init; i >= stop; i--) {
    if (in[(unsigned char)s[i - 1]] == want) {
      lua_pushinteger(L, i);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

/* ------------------------------------------------------------ JS lexing */

/* A source text with 1-based positions, as the Lua side counts them: at(S,
 * i) is the byte at position i, or -1 outside 1..len (Lua's byte() → nil). */
typedef struct {
  const unsigned char *s;
  lua_Integer len;
} Src;

static inline int at(const Src *S, lua_Integer i) {
  return i >= 1 && i <= S->len ? S->s[i - 1] : -1;
}

/* The string argument i as a Src. */
static Src check_src(lua_State *L, int i) {
  size_t len;
  const char *s = luaL_checklstring(L, i, &len);
  return (Src){(const unsigned char *)s, (lua_Integer)len};
}

/* A set of bytes a scan stops at: its table, and the bytes themselves
 * (at most 12) for the 16-at-a-time search. */
typedef struct {
  unsigned char in[256];
  const char *bytes;
} Set;

/* The first position >= p whose byte is in the set, else 0. */
static lua_Integer next_in(const Src *S, lua_Integer p, const Set *set) {
  lua_Integer i = p < 1 ? 1 : p;
#ifdef __SSE2__
  __m128i want[12];
  int n = 0;
  for (const char *b = set->bytes; *b && n < 12; b++)
    want[n++] = _mm_set1_epi8(*b);
  for (; S->len - i + 1 >= 16; i += 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(S->s + i - 1));
    __m128i m = _mm_cmpeq_epi8(v, want[0]);
    for (int k = 1; k < n; k++)
      m = _mm_or_si128(m, _mm_cmpeq_epi8(v, want[k]));
    unsigned mask = (unsigned)_mm_movemask_epi8(m);
    if (mask)
      return i + __builtin_ctz(mask);
  }
#endif
  for (; i <= S->len; i++)
    if (set->in[S->s[i - 1]])
      return i;
  return 0;
}

static lua_Integer next_byte(const Src *S, lua_Integer p, int c) {
  if (p < 1)
    p = 1;
  if (p > S->len)
    return 0;
  const unsigned char *q = memchr(S->s + p - 1, c, (size_t)(S->len - p + 1));
  return q ? (lua_Integer)(q - S->s) + 1 : 0;
}

/* The end of "*" "/" searched from p: the position of its "/", else 0. */
static lua_Integer comment_end(const Src *S, lua_Integer p) {
  for (lua_Integer i = next_byte(S, p, '*'); i; i = next_byte(S, i + 1, '*'))
    if (at(S, i + 1) == '/')
      return i + 1;
  return 0;
}

/* The bytes each scan stops at (constant: worker threads share them). */
static const Set TOP_SET = {{['"'] = 1, ['\''] = 1, ['`'] = 1, ['/'] = 1}, "\"'`/"};
static const Set EXPR_SET = {{['"'] = 1, ['\''] = 1, ['`'] = 1, ['/'] = 1, ['{'] = 1, ['}'] = 1}, "\"'`/{}"};
static const Set SKIP_SET = {{['"'] = 1, ['\''] = 1, ['`'] = 1, ['{'] = 1, ['}'] = 1}, "\"'`{}"};
static const Set ARGS_SET = {{['('] = 1, [')'] = 1, ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1, ['"'] = 1,
                              ['\''] = 1, ['`'] = 1, [','] = 1, ['/'] = 1},
                             "()[]{}\"'`,/"};
/* after these (blanks skipped) a "/" starts a regex, not a division */
static const unsigned char REGEX_AFTER[256] = {
    ['('] = 1, [','] = 1, ['='] = 1, [':'] = 1, ['['] = 1, ['!'] = 1, ['&'] = 1, ['|'] = 1, ['?'] = 1,
    ['{'] = 1, ['}'] = 1, [';'] = 1, ['+'] = 1, ['-'] = 1, ['*'] = 1, ['%'] = 1, ['<'] = 1, ['>'] = 1,
    ['~'] = 1, ['^'] = 1};

/* The closing quote of the literal opened at q, or the newline that ends
 * an unterminated one (len + 1 at the end).  A backslash takes the next
 * byte with it, a newline included (the literal then goes on). */
static lua_Integer quote_end(const Src *S, lua_Integer q) {
  int quote = at(S, q);
  for (lua_Integer i = q + 1; i <= S->len; i++) {
    int c = S->s[i - 1];
    if (c == '\\')
      i++;
    else if (c == quote || c == '\n')
      return i;
  }
  return S->len + 1;
}

/* Inside a template literal at p: where code resumes, whether a "${"
 * opened there (else the literal closed) and the last literal byte. */
static lua_Integer template_part(const Src *S, lua_Integer p, int *open, lua_Integer *tend) {
  for (lua_Integer i = p; i <= S->len; i++) {
    int c = S->s[i - 1];
    if (c == '\\') {
      i++;
    } else if (c == '`') {
      *open = 0;
      *tend = i - 1;
      return i + 1;
    } else if (c == '$' && at(S, i + 1) == '{') {
      *open = 1;
      *tend = i - 1;
      return i + 2;
    }
  }
  *open = 0;
  *tend = S->len;
  return S->len + 1;
}

static int is_blank(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Does the "/" at q start a regex (after an operator, an opening bracket,
 * the start of the text or a keyword), not a division? */
static int starts_regex(const Src *S, lua_Integer q) {
  static const char *const words[] = {"return", "typeof", "case",  "do",     "else",   "in",     "of",
                                      "void",   "yield",  "await", "delete", "throw",  "new", "instanceof"};
  lua_Integer p = q - 1;
  int c = at(S, p);
  while (c >= 0 && is_blank(c))
    c = at(S, --p);
  if (c < 0 || REGEX_AFTER[c])
    return 1;
  if (c >= 'a' && c <= 'z') {
    lua_Integer k = p;
    while (k > p - 11 && at(S, k - 1) >= 'a' && at(S, k - 1) <= 'z')
      k--;
    size_t n = (size_t)(p - k + 1);
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++)
      if (strlen(words[w]) == n && memcmp(words[w], S->s + k - 1, n) == 0)
        return 1;
  }
  return 0;
}

/* The closing "/" of the regex opened at q, or 0 when the line (or the
 * text) ends first: a division after all. */
static lua_Integer regex_end(const Src *S, lua_Integer q) {
  for (lua_Integer i = q + 1; i <= S->len; i++) {
    int c = S->s[i - 1];
    if (c == '\\') {
      i++;
    } else if (c == '\n') {
      return 0;
    } else if (c == '/') {
      return i;
    } else if (c == '[') { /* a class: "/" does not close inside it */
      for (i++; i <= S->len && S->s[i - 1] != ']'; i++) {
        if (S->s[i - 1] == '\n')
          return 0;
        if (S->s[i - 1] == '\\')
          i++;
      }
      if (i > S->len)
        return 0;
    }
  }
  return 0;
}

/* The "/" at q: a comment or a regex literal, whose part that is not code
 * goes in *a..*b (the whole comment; the regex without its slashes), or a
 * division (*a = 0).  Returns the last byte it takes: a comment's "\n" or
 * "/", the regex's closing "/", else q. */
static lua_Integer slash_end(const Src *S, lua_Integer q, lua_Integer *a, lua_Integer *b) {
  int c2 = at(S, q + 1);
  *a = 0;
  if (c2 == '/') {
    lua_Integer e = next_byte(S, q + 1, '\n');
    *a = q;
    *b = e ? e - 1 : S->len;
    return e ? e : S->len;
  }
  if (c2 == '*') {
    lua_Integer e = comment_end(S, q + 2);
    *a = q;
    *b = e ? e : S->len;
    return *b;
  }
  lua_Integer e = starts_regex(S, q) ? regex_end(S, q) : 0;
  if (e == 0)
    return q;
  *a = q + 1;
  *b = e - 1;
  return e;
}

/* The brace depth inside each open ${...}: a stack that grows in a
 * userdata at stack index `slot` (freed by the GC if anything raises). */
typedef struct {
  lua_Integer *v;
  lua_Integer top, cap;
  int slot;
} Depths;

static void push_depth(lua_State *L, Depths *d) {
  if (d->top == d->cap) {
    lua_Integer cap = d->cap * 2;
    lua_Integer *v = lua_newuserdatauv(L, (size_t)cap * sizeof *v, 0);
    memcpy(v, d->v, (size_t)d->top * sizeof *v);
    lua_replace(L, d->slot);
    d->v = v;
    d->cap = cap;
  }
  d->v[d->top++] = 0;
}

/* Where the lexer puts each range it finds; range() returns nonzero to
 * stop the lexer early. */
typedef struct Sink Sink;
struct Sink {
  int (*range)(Sink *k, lua_Integer a, lua_Integer b);
  lua_State *L;
  lua_Integer n;     /* js_lex: ranges so far; js_in_code: positions decided */
  lua_Integer total; /* js_in_code: positions given */
  int t;             /* js_lex: stack index of S (E at t + 1); js_in_code: positions (out at t + 1) */
};

/* Lex S up to limit, giving every range to k. The stack of ${...} depths
 * lives in a userdata pushed (and left) on L's stack. */
static void lex_run(lua_State *L, const Src *S, lua_Integer limit, Sink *k) {
  lua_Integer *v = lua_newuserdatauv(L, 32 * sizeof(lua_Integer), 0);
  Depths d = {v, 0, 32, lua_gettop(L)};
  lua_Integer p = 1;
  while (p <= limit) {
    lua_Integer q = next_in(S, p, d.top > 0 ? &EXPR_SET : &TOP_SET);
    if (q == 0 || q > limit)
      break;
    int c = at(S, q), open, stop = 0;
    lua_Integer tend;
    if (c == '"' || c == '\'') {
      lua_Integer e = quote_end(S, q);
      stop = k->range(k, q + 1, e - 1);
      p = e + 1;
    } else if (c == '`') {
      p = template_part(S, q + 1, &open, &tend);
      stop = k->range(k, q + 1, tend);
      if (open)
        push_depth(L, &d);
    } else if (c == '/') {
      lua_Integer a, b, e = slash_end(S, q, &a, &b);
      if (a)
        stop = k->range(k, a, b);
      p = e + 1;
    } else if (c == '{') {
      d.v[d.top - 1]++;
      p = q + 1;
    } else if (d.v[d.top - 1] == 0) { /* the "}" that closes a ${ */
      d.top--;
      p = template_part(S, q + 1, &open, &tend);
      stop = k->range(k, q + 1, tend);
      if (open)
        push_depth(L, &d);
    } else {
      d.v[d.top - 1]--;
      p = q + 1;
    }
    if (stop)
      break;
  }
}

static int lex_range(Sink *k, lua_Integer a, lua_Integer b) {
  k->n++;
  lua_pushinteger(k->L, a);
  lua_rawseti(k->L, k->t, k->n);
  lua_pushinteger(k->L, b);
  lua_rawseti(k->L, k->t + 1, k->n);
  return 0;
}

static int t_js_lex(lua_State *L) {
  Src S = check_src(L, 1);
  lua_Integer limit = luaL_optinteger(L, 2, S.len);
  lua_settop(L, 2);
  lua_createtable(L, 16, 0); /* S: 3 */
  lua_createtable(L, 16, 0); /* E: 4 */
  Sink k = {lex_range, L, 0, 0, 3};
  lex_run(L, &S, limit, &k);
  lua_settop(L, 4);
  lua_pushinteger(L, k.n);
  return 3;
}

static lua_Integer pos_at(lua_State *L, int t, lua_Integer i) {
  lua_rawgeti(L, t, i);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Decide every position before a (code) and inside a..b (not code). */
static int code_range(Sink *k, lua_Integer a, lua_Integer b) {
  lua_State *L = k->L;
  while (k->n < k->total) {
    lua_Integer p = pos_at(L, k->t, k->n + 1);
    if (p > b)
      break;
    lua_pushboolean(L, p < a);
    lua_rawseti(L, k->t + 1, ++k->n);
  }
  return k->n == k->total;
}

static int t_js_in_code(lua_State *L) {
  Src S = check_src(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer total = (lua_Integer)lua_rawlen(L, 2), last = LUA_MININTEGER;
  for (lua_Integer i = 1; i <= total; i++) {
    lua_Integer p = pos_at(L, 2, i);
    if (p < last)
      return luaL_argerror(L, 2, "positions must be in ascending order");
    last = p;
  }
  lua_createtable(L, (int)total, 0); /* out: 3 */
  Sink k = {code_range, L, 0, total, 2};
  if (total > 0)
    lex_run(L, &S, last, &k);
  lua_settop(L, 3);
  while (k.n < total) { /* after the last literal: code */
    lua_pushboolean(L, 1);
    lua_rawseti(L, 3, ++k.n);
  }
  return 1;
}

/* skip_expr / skip_template nest once per template inside a ${...}: past
 * this depth the text is not code anyone wrote, and the scan gives up. */
#define MAX_NEST 200

static lua_Integer skip_template(const Src *S, lua_Integer p, int nest);

/* From just inside "{" or "${": the position after the "}" that closes it
 * (len + 1 when none does; 0 when it nests too deep). */
static lua_Integer skip_expr(const Src *S, lua_Integer p, int nest) {
  if (nest > MAX_NEST)
    return 0;
  lua_Integer depth = 0;
  for (;;) {
    lua_Integer q = next_in(S, p, &SKIP_SET);
    if (q == 0)
      return S->len + 1;
    int c = at(S, q);
    if (c == '"' || c == '\'') {
      p = quote_end(S, q) + 1;
    } else if (c == '`') {
      p = skip_template(S, q + 1, nest + 1);
      if (p == 0)
        return 0;
    } else if (c == '{') {
      depth++;
      p = q + 1;
    } else if (depth == 0) {
      return q + 1;
    } else {
      depth--;
      p = q + 1;
    }
  }
}

/* From just after an opening backtick: the position after the closing one
 * (0 when it nests too deep). */
static lua_Integer skip_template(const Src *S, lua_Integer p, int nest) {
  for (;;) {
    int open;
    lua_Integer tend, after = template_part(S, p, &open, &tend);
    if (!open)
      return after;
    p = skip_expr(S, after, nest);
    if (p == 0)
      return 0;
  }
}

/* Push the argument s..e without its blanks (Lua's %s) as two integers. */
static void push_arg(lua_State *L, const Src *S, lua_Integer a, lua_Integer e, lua_Integer *k) {
  while (a <= e && isspace(at(S, a)))
    a++;
  while (e >= a && isspace(at(S, e)))
    e--;
  lua_pushinteger(L, a);
  lua_rawseti(L, -2, ++*k);
  lua_pushinteger(L, e);
  lua_rawseti(L, -2, ++*k);
}

static int t_js_args(lua_State *L) {
  Src S = check_src(L, 1);
  lua_Integer open = luaL_checkinteger(L, 2);
  lua_Integer window = luaL_optinteger(L, 3, 8000);
  lua_settop(L, 3);
  lua_createtable(L, 6, 0);
  lua_Integer depth = 0, p = open + 1, a = open + 1, stop = open + window, k = 0;
  while (p <= stop) {
    lua_Integer q = next_in(&S, p, &ARGS_SET);
    if (q == 0 || q > stop)
      break;
    int c = at(&S, q);
    if (c == '"' || c == '\'') {
      p = quote_end(&S, q) + 1;
    } else if (c == '`') {
      p = skip_template(&S, q + 1, 0);
      if (p == 0)
        break;
    } else if (c == ',') {
      if (depth == 0) {
        push_arg(L, &S, a, q - 1, &k);
        a = q + 1;
      }
      p = q + 1;
    } else if (c == '(' || c == '[' || c == '{') {
      depth++;
      p = q + 1;
    } else if (c == ')' || c == ']' || c == '}') {
      if (depth == 0) {
        if (c != ')')
          break;
        lua_Integer b = a;
        while (isspace(at(&S, b)))
          b++;
        if (b < q) /* a trailing comma leaves no argument behind it */
          push_arg(L, &S, a, q - 1, &k);
        lua_pushinteger(L, q);
        return 2;
      }
      depth--;
      p = q + 1;
    } else { /* "/": a comment or a regex is skipped whole, a division is not */
      lua_Integer from, to; /* (the part that is not code: not needed here) */
      p = slash_end(&S, q, &from, &to) + 1;
    }
  }
  lua_pushnil(L); /* the arguments seen, and no close */
  return 2;
}

/* The last of "\n;{}" at or before e, else 0; *which gets its byte. */
static lua_Integer head_stop(const Src *S, lua_Integer e, int *which) {
  for (lua_Integer i = e > S->len ? S->len : e; i >= 1; i--) {
    int c = S->s[i - 1];
    if (c == '\n' || c == ';' || c == '{' || c == '}') {
      *which = c;
      return i;
    }
  }
  *which = '\n';
  return 0;
}

/* The parentheses of s[stop..p] counted going back: ")" opens (+1), "("
 * closes (-1). */
static lua_Integer paren_depth(const Src *S, lua_Integer p, lua_Integer stop) {
  lua_Integer depth = 0;
  for (lua_Integer i = p > S->len ? S->len : p; i >= stop && i >= 1; i--) {
    int c = S->s[i - 1];
    if (c == ')')
      depth++;
    else if (c == '(')
      depth--;
  }
  return depth;
}

/* Going back from p with depth parentheses open: the "(" that closes the
 * last of them, else 0. */
static lua_Integer balancing_paren(const Src *S, lua_Integer p, lua_Integer depth) {
  for (lua_Integer i = p; i >= 1; i--) {
    int c = S->s[i - 1];
    if (c == ')')
      depth++;
    else if (c == '(' && --depth == 0)
      return i;
  }
  return 0;
}

static void trim_range(const Src *S, lua_Integer *a, lua_Integer *b) {
  while (*a <= *b && is_blank(at(S, *a)))
    (*a)++;
  while (*b >= *a && is_blank(at(S, *b)))
    (*b)--;
}

static int t_js_block_head(lua_State *L) {
  Src S = check_src(L, 1);
  lua_Integer e = luaL_checkinteger(L, 2);
  if (e > S.len)
    e = S.len;
  int which, ignored;
  lua_Integer stop = head_stop(&S, e, &which), a, b;
  for (int round = 0;; round++) {
    a = stop + 1;
    b = e;
    trim_range(&S, &a, &b);
    if (round == 6)
      break;
    lua_Integer depth = paren_depth(&S, e, stop + 1);
    if (depth > 0) { /* a parenthesis opened on an earlier line: go to its line */
      lua_Integer open = balancing_paren(&S, stop, depth);
      if (open == 0)
        break;
      stop = head_stop(&S, open - 1, &ignored);
    } else if (a > b && which == '\n') { /* nothing on this line: the one before */
      stop = head_stop(&S, stop - 1, &which);
    } else {
      break;
    }
  }
  lua_pushinteger(L, a);
  lua_pushinteger(L, b);
  return 2;
}

static int t_js_open_before(lua_State *L) {
  Src S = check_src(L, 1);
  lua_Integer p = luaL_checkinteger(L, 2);
  lua_Integer budget = luaL_optinteger(L, 3, 400), used = 0, depth = 0;
  for (lua_Integer i = p > S.len ? S.len : p; i >= 1 && used < budget; i--) {
    int c = S.s[i - 1];
    if (c == '}') {
      used++;
      depth++;
    } else if (c == '{') {
      used++;
      if (depth == 0) {
        lua_pushinteger(L, i);
        lua_pushinteger(L, used);
        return 2;
      }
      depth--;
    }
  }
  lua_pushnil(L);
  lua_pushinteger(L, used);
  return 2;
}

static int t_js_expr_end(lua_State *L) {
  Src S = check_src(L, 1);
  lua_Integer e = skip_expr(&S, luaL_checkinteger(L, 2), 0);
  lua_pushinteger(L, e ? e : S.len + 1);
  return 1;
}

static int t_js_quote_end(lua_State *L) {
  Src S = check_src(L, 1);
  lua_Integer q = luaL_checkinteger(L, 2);
  luaL_argcheck(L, at(&S, q) == '"' || at(&S, q) == '\'', 2, "not at a quote");
  lua_pushinteger(L, quote_end(&S, q));
  return 1;
}

int luaopen_runbook_text_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"find_all", t_find_all},
      {"last_of", t_last_of},
      {"js_lex", t_js_lex},
      {"js_in_code", t_js_in_code},
      {"js_args", t_js_args},
      {"js_open_before", t_js_open_before},
      {"js_block_head", t_js_block_head},
      {"js_expr_end", t_js_expr_end},
      {"js_quote_end", t_js_quote_end},
      {NULL, NULL},
  };
  luaL_newlib(L, fns);
  return 1;
}
