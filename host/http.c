/*
 * http.c — runbook.http.core: HTTP requests on libcurl (see docs/HOST.md).
 *
 * A Client is a userdata owning one CURLM multi handle and a pool of easy
 * handles ("slots").  Every transfer, single or batched, runs through the
 * multi handle, so its connection cache is shared by request() and batch():
 * a keep-alive connection opened by one call is reused by the next.  A slot's
 * easy handle is curl_easy_reset between uses, which clears the options but
 * not the cache (the cache belongs to the multi handle anyway).
 *
 * The core is mechanism only: it never follows redirects, never retries and
 * decides no defaults a runbook might change (the face lua/runbook/http.lua
 * does).  It restricts transfers to http/https so a URL can never read a
 * local file.
 *
 * Memory: everything malloc'd for a transfer (header list, body and header
 * buffers, the URL copy used in messages, the error buffer libcurl writes
 * into) hangs off a slot owned by the userdata, so a Lua error raised while a
 * request is being set up or its result built leaks nothing: the slot is
 * reset on its next use and freed by __gc.  No Lua code runs while libcurl
 * drives a transfer (the callbacks only append to C buffers).
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "host.h"

#define CLIENT_MT "runbook.http.Client"

/* Buffers larger than this are released after use rather than kept for the
 * next transfer, so one big download does not pin memory for the client's
 * lifetime. */
#define KEEP_BUF (1024 * 1024)

/* Longest method name accepted; methods are HTTP tokens like "PATCH". */
#define METHOD_MAX 31

typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

typedef struct {
  CURL *easy;
  struct curl_slist *headers; /* request headers, owned until next setup */
  buf_t body;                 /* response body */
  buf_t head;                 /* raw header lines of the latest response */
  char *url;                  /* copy of the request URL, for messages */
  curl_off_t max_body;        /* -1: no limit */
  int too_large;              /* write callback refused the body */
  int nomem;                  /* a callback could not grow a buffer */
  int attached;               /* currently added to the multi handle */
  lua_Integer index;          /* position in a batch */
  char method[METHOD_MAX + 1];
  /* libcurl writes here during the transfer, so it must outlive any C
   * stack frame: it lives in the slot (CURLOPT_ERRORBUFFER). */
  char errbuf[CURL_ERROR_SIZE];
} slot_t;

typedef struct {
  CURLM *multi;
  slot_t **slots;
  int nslots;
  int closed;
} client_t;

/* ------------------------------------------------------------ buffers */

static int buf_reserve(buf_t *b, size_t extra, curl_off_t limit) {
  if (b->cap - b->len >= extra)
    return 1;
  size_t need = b->len + extra;
  size_t cap = b->cap ? b->cap * 2 : 16384;
  if (cap < need)
    cap = need;
  /* never grow past the caller's cap: bounded memory for capped bodies */
  if (limit >= 0 && cap > (size_t)limit && need <= (size_t)limit)
    cap = (size_t)limit;
  char *p = realloc(b->data, cap);
  if (p == NULL)
    return 0;
  b->data = p;
  b->cap = cap;
  return 1;
}

static void buf_reuse(buf_t *b) {
  b->len = 0;
  if (b->cap > KEEP_BUF) {
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
}

static void buf_free(buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* ---------------------------------------------------------- callbacks */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  slot_t *s = ud;
  size_t len = size * n;
  if (s->max_body >= 0 && (curl_off_t)(s->body.len + len) > s->max_body) {
    s->too_large = 1;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (!buf_reserve(&s->body, len, s->max_body)) {
    s->nomem = 1;
    return 0;
  }
  memcpy(s->body.data + s->body.len, p, len);
  s->body.len += len;
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  slot_t *s = ud;
  size_t len = size * n;
  /* A status line starts a new response (after a 100 Continue or a proxy's
   * CONNECT reply): only the final response's headers are reported. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
    s->head.len = 0;
  if (!buf_reserve(&s->head, len, -1)) {
    s->nomem = 1;
    return 0;
  }
  memcpy(s->head.data + s->head.len, p, len);
  s->head.len += len;
  return len;
}

/* -------------------------------------------------------------- slots */

static void slot_detach(client_t *c, slot_t *s) {
  if (s->attached) {
    curl_multi_remove_handle(c->multi, s->easy);
    s->attached = 0;
  }
}

static void slot_free(client_t *c, slot_t *s) {
  slot_detach(c, s);
  curl_easy_cleanup(s->easy);
  curl_slist_free_all(s->headers);
  buf_free(&s->body);
  buf_free(&s->head);
  free(s->url);
  free(s);
}

/* Detach whatever a previous call left on the multi handle (it can only be
 * there if that call raised mid-batch). */
static void client_quiesce(client_t *c) {
  for (int i = 0; i < c->nslots; i++)
    slot_detach(c, c->slots[i]);
}

/* Make sure the pool holds at least n slots; raises on out-of-memory with
 * the pool still consistent. */
static void client_grow(lua_State *L, client_t *c, int n) {
  if (n <= c->nslots)
    return;
  slot_t **arr = realloc(c->slots, (size_t)n * sizeof *arr);
  if (arr == NULL)
    luaL_error(L, "http: not enough memory for %d connections", n);
  c->slots = arr;
  while (c->nslots < n) {
    slot_t *s = calloc(1, sizeof *s);
    if (s == NULL)
      luaL_error(L, "http: not enough memory");
    s->easy = curl_easy_init();
    if (s->easy == NULL) {
      free(s);
      luaL_error(L, "http: curl_easy_init failed");
    }
    c->slots[c->nslots++] = s;
  }
  /* keep an idle connection per slot (libcurl's default, 4 per attached
   * handle, shrinks the cache as a batch drains) */
  long keep = c->nslots < 8 ? 8 : (long)c->nslots;
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, keep);
}

/* ---------------------------------------------------- request parsing */

static const char *const REQ_KEYS[] = {"method", "url", "headers", "body", "timeout",
                                       "connect_timeout", "insecure", "max_body", NULL};

static int is_tchar(int ch) {
  return isalnum(ch) || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int has_ctl(const char *p, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
      return 1;
  return 0;
}

static int eq_nocase(const char *a, const char *b) {
  for (; *a && *b; a++, b++)
    if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
      return 0;
  return *a == *b;
}

/* Raise a misuse error naming the request: "request: ..." for
 * client:request, "batch request #N: ..." for client:batch. */
static int req_error(lua_State *L, lua_Integer pos, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *what = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  if (pos > 0)
    return luaL_error(L, "batch request #%I: %s", pos, what);
  return luaL_error(L, "request: %s", what);
}

static double opt_seconds(lua_State *L, int req, const char *key, lua_Integer pos, int required, int *found) {
  lua_getfield(L, req, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (required)
      req_error(L, pos, "field '%s' is required (seconds)", key);
    return 0;
  }
  (*found)++;
  int isnum;
  double v = lua_tonumberx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum || !(v > 0) || v > 1e9 || isnan(v))
    req_error(L, pos, "field '%s' must be a positive number of seconds", key);
  return v;
}

static long to_ms(double seconds) {
  double ms = ceil(seconds * 1000.0);
  return ms < 1 ? 1 : (long)ms;
}

#define SET(opt, val)                                                                       \
  do {                                                                                      \
    if (s != NULL && curl_easy_setopt(s->easy, opt, val) != CURLE_OK)                       \
      req_error(L, pos, "cannot set %s", #opt);                                        \
  } while (0)

/* Validate the request table at index req and, when s is not NULL, set the
 * slot's easy handle up for it.  Misuse raises.  Leaves one value pushed: the
 * body string (or nil), which the caller keeps reachable while libcurl reads
 * it (CURLOPT_POSTFIELDS does not copy). */
static void setup(lua_State *L, slot_t *s, int req, lua_Integer pos) {
  luaL_checkstack(L, 8, "http request");
  if (!lua_istable(L, req))
    req_error(L, pos, "expected a table, got %s", luaL_typename(L, req));

  int found = 0; /* known fields present, to detect unknown ones */

  if (s != NULL) {
    curl_slist_free_all(s->headers);
    s->headers = NULL;
    free(s->url);
    s->url = NULL;
    buf_reuse(&s->body);
    buf_reuse(&s->head);
    s->too_large = s->nomem = 0;
    s->errbuf[0] = '\0';
    s->method[0] = '\0';
    s->max_body = -1;
    curl_easy_reset(s->easy);
  }

  /* method */
  const char *method = "GET";
  size_t mlen = 3;
  lua_getfield(L, req, "method");
  if (!lua_isnil(L, -1)) {
    found++;
    if (lua_type(L, -1) != LUA_TSTRING)
      req_error(L, pos, "field 'method' must be a string");
    method = lua_tolstring(L, -1, &mlen);
    int ok = mlen > 0 && mlen <= METHOD_MAX;
    for (size_t i = 0; ok && i < mlen; i++)
      ok = is_tchar((unsigned char)method[i]);
    if (!ok)
      req_error(L, pos, "field 'method' is not an HTTP method name");
  }
  if (s != NULL)
    memcpy(s->method, method, mlen + 1);
  int is_get = strcmp(method, "GET") == 0, is_head = strcmp(method, "HEAD") == 0;
  int is_post = strcmp(method, "POST") == 0;
  int empty_body = is_post || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
  lua_pop(L, 1); /* method string no longer needed: copied into the slot */

  /* url */
  lua_getfield(L, req, "url");
  size_t ulen;
  if (lua_type(L, -1) != LUA_TSTRING)
    req_error(L, pos, "field 'url' must be a string");
  const char *url = lua_tolstring(L, -1, &ulen);
  if (has_ctl(url, ulen))
    req_error(L, pos, "field 'url' contains a control character");
  if (s != NULL) {
    s->url = malloc(ulen + 1);
    if (s->url == NULL)
      req_error(L, pos, "not enough memory");
    memcpy(s->url, url, ulen + 1);
  }
  found++;
  SET(CURLOPT_URL, url); /* libcurl copies string options */
  lua_pop(L, 1);

  /* timeouts, TLS, size cap */
  double timeout = opt_seconds(L, req, "timeout", pos, 1, &found);
  double ctimeout = opt_seconds(L, req, "connect_timeout", pos, 0, &found);
  lua_getfield(L, req, "insecure");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    req_error(L, pos, "field 'insecure' must be a boolean");
  found += !lua_isnil(L, -1);
  int insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_Integer max_body = -1;
  lua_getfield(L, req, "max_body");
  if (!lua_isnil(L, -1)) {
    found++;
    int isint;
    max_body = lua_tointegerx(L, -1, &isint);
    if (!isint || max_body < 0)
      req_error(L, pos, "field 'max_body' must be a non-negative integer");
  }
  lua_pop(L, 1);

  /* headers; remember which ones libcurl would otherwise add itself */
  int has_ctype = 0, has_expect = 0;
  lua_getfield(L, req, "headers");
  if (!lua_isnil(L, -1)) {
    found++;
    if (!lua_istable(L, -1))
      req_error(L, pos, "field 'headers' must be a table");
    int h = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, h) != 0) {
      size_t nlen, vlen;
      if (lua_type(L, -2) != LUA_TSTRING)
        req_error(L, pos, "header names must be strings");
      int vt = lua_type(L, -1);
      if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
        req_error(L, pos, "header values must be strings");
      const char *name = lua_tolstring(L, -2, &nlen);
      /* a number value is converted in place: fine, the key is untouched */
      const char *val = lua_tolstring(L, -1, &vlen);
      int ok = nlen > 0;
      for (size_t i = 0; ok && i < nlen; i++)
        ok = is_tchar((unsigned char)name[i]);
      if (!ok)
        req_error(L, pos, "header name is not a valid token");
      if (has_ctl(val, vlen))
        req_error(L, pos, "header value contains CR, LF or NUL");
      if (eq_nocase(name, "Content-Type"))
        has_ctype = 1;
      if (eq_nocase(name, "Expect"))
        has_expect = 1;
      if (s != NULL) {
        /* "Name;" is libcurl's spelling of a header with an empty value
         * ("Name:" would remove it) */
        const char *line = vlen == 0 ? lua_pushfstring(L, "%s;", name)
                                     : lua_pushfstring(L, "%s: %s", name, val);
        struct curl_slist *l = curl_slist_append(s->headers, line);
        if (l == NULL)
          req_error(L, pos, "not enough memory");
        s->headers = l;
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);

  /* body: left on the stack for the caller to keep alive */
  lua_getfield(L, req, "body");
  int has_body = !lua_isnil(L, -1);
  if (has_body && lua_type(L, -1) != LUA_TSTRING)
    req_error(L, pos, "field 'body' must be a string");
  if (has_body && is_head)
    req_error(L, pos, "a HEAD request cannot have a body");
  found += has_body;

  /* unknown keys are misuse (a typo like "timeuot" must not go unnoticed) */
  int nkeys = 0;
  lua_pushnil(L);
  while (lua_next(L, req) != 0) {
    lua_pop(L, 1);
    nkeys++;
  }
  if (nkeys != found) {
    lua_pushnil(L);
    while (lua_next(L, req) != 0) {
      lua_pop(L, 1);
      const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
      int known = 0;
      for (int i = 0; k != NULL && REQ_KEYS[i] != NULL; i++)
        known |= strcmp(k, REQ_KEYS[i]) == 0;
      if (!known)
        req_error(L, pos, "unknown field '%s'", k ? k : luaL_typename(L, -1));
    }
  }

  if (s == NULL)
    return;

  /* The face decides the Content-Type; libcurl would otherwise claim every
   * body is a form.  "Expect: 100-continue" costs a round trip (or a 1 s
   * stall on servers that ignore it) for bodies libcurl deems large. */
  if (has_body || empty_body) {
    const char *extra[2] = {has_ctype ? NULL : "Content-Type:", has_expect ? NULL : "Expect:"};
    for (int i = 0; i < 2; i++) {
      if (extra[i] == NULL)
        continue;
      struct curl_slist *l = curl_slist_append(s->headers, extra[i]);
      if (l == NULL)
        req_error(L, pos, "not enough memory");
      s->headers = l;
    }
  }

  SET(CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts: we are a library */
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_ERRORBUFFER, s->errbuf);
  SET(CURLOPT_PRIVATE, (void *)s);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)s);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)s);
  SET(CURLOPT_TIMEOUT_MS, to_ms(timeout));
  if (ctimeout > 0)
    SET(CURLOPT_CONNECTTIMEOUT_MS, to_ms(ctimeout));
  if (insecure) {
    SET(CURLOPT_SSL_VERIFYPEER, 0L);
    SET(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (max_body >= 0) {
    s->max_body = (curl_off_t)max_body;
    /* fails early when Content-Length already says too much */
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);
  }
  if (s->headers != NULL)
    SET(CURLOPT_HTTPHEADER, s->headers);

  if (is_head) {
    SET(CURLOPT_NOBODY, 1L);
  } else if (has_body || empty_body) {
    size_t blen = 0;
    const char *body = has_body ? lua_tolstring(L, -1, &blen) : "";
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen); /* binary safe: no strlen */
    SET(CURLOPT_POSTFIELDS, body);
    if (!is_post)
      SET(CURLOPT_CUSTOMREQUEST, s->method);
  } else if (!is_get) {
    SET(CURLOPT_CUSTOMREQUEST, s->method);
  }
}

/* ------------------------------------------------------------ results */

/* Push the URL with any "user:password@" removed: messages never carry
 * credentials. */
static void push_safe_url(lua_State *L, const char *url) {
  const char *sep = url ? strstr(url, "://") : NULL;
  if (sep == NULL) {
    lua_pushstring(L, url ? url : "?");
    return;
  }
  const char *auth = sep + 3;
  size_t alen = strcspn(auth, "/?#");
  const char *at = NULL;
  for (const char *p = auth; p < auth + alen; p++)
    if (*p == '@')
      at = p;
  if (at == NULL) {
    lua_pushstring(L, url);
    return;
  }
  lua_pushlstring(L, url, (size_t)(auth - url));
  lua_pushstring(L, at + 1);
  lua_concat(L, 2);
}

/* Push msg, code for a failed transfer.  The message names the method and
 * URL and gives libcurl's reason; never a header value or the body. */
static void push_failure(lua_State *L, slot_t *s, CURLcode rc) {
  const char *code;
  switch (rc) {
  case CURLE_COULDNT_CONNECT:
    code = "ECONNREFUSED";
    break;
  case CURLE_OPERATION_TIMEDOUT:
    code = "TIMEOUT";
    break;
  case CURLE_PEER_FAILED_VERIFICATION: /* also CURLE_SSL_CACERT */
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
    code = "TLS";
    break;
  case CURLE_COULDNT_RESOLVE_HOST:
    code = "DNS";
    break;
  case CURLE_FILESIZE_EXCEEDED:
    code = "TOO_LARGE";
    break;
  default:
    code = "EHTTP";
  }
  if (s->too_large)
    code = "TOO_LARGE";
  else if (s->nomem)
    code = "ENOMEM";

  lua_pushstring(L, s->method);
  lua_pushliteral(L, " ");
  push_safe_url(L, s->url);
  lua_pushliteral(L, ": ");
  if (strcmp(code, "TOO_LARGE") == 0) {
    lua_pushfstring(L, "response body exceeds max_body (%I bytes)", (lua_Integer)s->max_body);
  } else if (s->nomem) {
    lua_pushliteral(L, "not enough memory for the response");
  } else if (s->errbuf[0] != '\0') {
    size_t n = strlen(s->errbuf);
    while (n > 0 && isspace((unsigned char)s->errbuf[n - 1]))
      n--;
    lua_pushlstring(L, s->errbuf, n);
  } else {
    lua_pushstring(L, curl_easy_strerror(rc));
  }
  lua_concat(L, 5);
  lua_pushstring(L, code);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Trim spaces, tabs and bare CRs (which read as spaces) at both ends. */
static const char *trim(const char *p, const char *end, const char **out_end) {
  while (p < end && is_ws(*p))
    p++;
  while (end > p && is_ws(end[-1]))
    end--;
  *out_end = end;
  return p;
}

/* Push the bytes [v, ve) with every bare CR as a space: RFC 9112 section
 * 2.2 allows either that or refusing the header, and a CR left in a value
 * (a Location, say) would reach a later request as a control character. */
static void push_text(lua_State *L, const char *v, const char *ve) {
  size_t n = (size_t)(ve - v);
  if (n == 0 || memchr(v, '\r', n) == NULL) {
    lua_pushlstring(L, v, n);
    return;
  }
  luaL_Buffer b;
  char *d = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; i++)
    d[i] = v[i] == '\r' ? ' ' : v[i];
  luaL_pushresultsize(&b, n);
}

/* Append v (already trimmed) to a header value: an empty piece adds
 * nothing, so "a, " or a value starting with a space never appears. */
static void join_value(lua_State *L, int t, int name, const char *v, const char *ve, const char *sep) {
  lua_pushvalue(L, name);
  lua_rawget(L, t);
  if (lua_isnil(L, -1) || lua_rawlen(L, -1) == 0) {
    lua_pop(L, 1);
    push_text(L, v, ve);
  } else if (ve == v) {
    lua_pop(L, 1);
    return;
  } else {
    lua_pushstring(L, sep);
    push_text(L, v, ve);
    lua_concat(L, 3);
  }
  lua_pushvalue(L, name);
  lua_insert(L, -2);
  lua_rawset(L, t);
}

/* Push the headers table: names lower-cased, repeated names joined with
 * ", ", obsolete line folding appended to the previous value.  A line that
 * is not "token: value" (no colon, an empty name, a space or a control byte
 * in the name) is ignored, and so are folded lines after it; whitespace
 * before the colon, which servers are not supposed to send, is dropped.
 * Past the line's CRLF (or bare LF), a CR reads as a space. */
static void push_headers(lua_State *L, const buf_t *b) {
  int lines = 0;
  for (const char *q = b->data; q != NULL && (q = memchr(q, '\n', b->len - (size_t)(q - b->data))) != NULL; q++)
    lines++;
  lua_createtable(L, 0, lines > 2 ? lines - 2 : 0); /* minus status and blank lines */
  int t = lua_gettop(L);
  lua_pushnil(L); /* last name seen, for folded lines */
  int last = t + 1;
  /* no header line at all leaves data NULL: no arithmetic on it */
  const char *p = b->data, *end = b->data != NULL ? b->data + b->len : NULL;
  int first = 1;
  while (p != NULL && p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    const char *next = nl ? nl + 1 : end;
    if (le > p && le[-1] == '\r')
      le--; /* the CR of CRLF */
    if (first) { /* the status line */
      first = 0;
      p = next;
      continue;
    }
    const char *ve;
    if (le > p && is_ws(*p)) {
      if (!lua_isnil(L, last)) {
        const char *v = trim(p, le, &ve);
        join_value(L, t, last, v, ve, " ");
      }
      p = next;
      continue;
    }
    const char *colon = memchr(p, ':', (size_t)(le - p));
    const char *ne = colon;
    while (ne != NULL && ne > p && is_ws(ne[-1]))
      ne--;
    int ok = ne != NULL && ne > p;
    for (const char *q = p; ok && q < ne; q++)
      ok = is_tchar((unsigned char)*q);
    if (!ok) {
      lua_pushnil(L);
      lua_replace(L, last);
      p = next;
      continue;
    }
    char lower[64];
    size_t nlen = (size_t)(ne - p);
    if (nlen <= sizeof lower) {
      for (size_t i = 0; i < nlen; i++)
        lower[i] = (char)tolower((unsigned char)p[i]);
      lua_pushlstring(L, lower, nlen);
    } else {
      luaL_Buffer nb;
      luaL_buffinit(L, &nb);
      for (const char *q = p; q < ne; q++)
        luaL_addchar(&nb, (char)tolower((unsigned char)*q));
      luaL_pushresult(&nb);
    }
    lua_replace(L, last);
    const char *v = trim(colon + 1, le, &ve);
    join_value(L, t, last, v, ve, ", ");
    p = next;
  }
  lua_pop(L, 1);
}

static void set_time(lua_State *L, CURL *e, CURLINFO what, const char *name) {
  curl_off_t us = 0;
  curl_easy_getinfo(e, what, &us);
  lua_pushnumber(L, (lua_Number)us / 1e6);
  lua_setfield(L, -2, name);
}

/* Push the response table of a finished transfer. */
static void push_response(lua_State *L, slot_t *s) {
  long status = 0;
  char *eff = NULL;
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(s->easy, CURLINFO_EFFECTIVE_URL, &eff);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  push_headers(L, &s->head);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, s->body.data ? s->body.data : "", s->body.len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, eff ? eff : s->url);
  lua_setfield(L, -2, "url");
  lua_createtable(L, 0, 5);
  set_time(L, s->easy, CURLINFO_TOTAL_TIME_T, "total");
  set_time(L, s->easy, CURLINFO_NAMELOOKUP_TIME_T, "namelookup");
  set_time(L, s->easy, CURLINFO_CONNECT_TIME_T, "connect");
  set_time(L, s->easy, CURLINFO_APPCONNECT_TIME_T, "tls");
  set_time(L, s->easy, CURLINFO_STARTTRANSFER_TIME_T, "ttfb");
  lua_setfield(L, -2, "time");
}

/* --------------------------------------------------------------- client */

static client_t *check_client(lua_State *L) {
  client_t *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->closed)
    luaL_error(L, "attempt to use a closed http client");
  return c;
}

/* client:request(req) -> resp | nil, msg, code */
static int l_request(lua_State *L) {
  client_t *c = check_client(L);
  client_quiesce(c);
  client_grow(L, c, 1);
  slot_t *s = c->slots[0];
  setup(L, s, 2, 0);
  /* the body string stays at the top of the stack until we return */

  CURLMcode mc = curl_multi_add_handle(c->multi, s->easy);
  if (mc != CURLM_OK)
    return luaL_error(L, "http: %s", curl_multi_strerror(mc));
  s->attached = 1;
  CURLcode rc = CURLE_OK;
  int done = 0, running = 1;
  while (!done) {
    mc = curl_multi_perform(c->multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
      if (m->msg == CURLMSG_DONE && m->easy_handle == s->easy) {
        rc = m->data.result;
        done = 1;
      }
    }
    if (done)
      break;
    if (mc == CURLM_OK)
      mc = curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
    if (mc != CURLM_OK) {
      slot_detach(c, s);
      return luaL_error(L, "http: %s", curl_multi_strerror(mc));
    }
  }
  slot_detach(c, s);
  if (rc != CURLE_OK) {
    lua_pushnil(L);
    push_failure(L, s, rc);
    return 3;
  }
  push_response(L, s);
  return 1;
}

/* client:batch(reqs, { concurrency = 16 }) -> results in input order */
static int l_batch(lua_State *L) {
  client_t *c = check_client(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer conc = 16;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3) != 0) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "concurrency") != 0)
        return luaL_error(L, "batch: unknown option '%s'",
                          lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
    }
    lua_getfield(L, 3, "concurrency");
    if (!lua_isnil(L, -1)) {
      int isint;
      conc = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint && conc >= 1 && conc <= 1024, 3,
                    "concurrency must be an integer from 1 to 1024");
    }
    lua_pop(L, 1);
  }
  lua_Integer n = luaL_len(L, 2);
  lua_settop(L, 2);

  /* validate everything first so a bad request #900 raises before #1 is
   * sent, not halfway through */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    setup(L, NULL, 3, i);
    lua_settop(L, 2);
  }

  lua_createtable(L, (int)(n < 1 << 20 ? n : 0), 0); /* 3: results */
  lua_createtable(L, (int)conc, 0);                  /* 4: body anchors per slot */
  if (n == 0) {
    lua_settop(L, 3);
    return 1;
  }
  client_quiesce(c);
  client_grow(L, c, (int)(conc < n ? conc : n));

  lua_Integer next = 1, finished = 0;
  int inflight = 0;
  while (finished < n) {
    for (int i = 0; i < c->nslots && inflight < conc && next <= n; i++) {
      slot_t *s = c->slots[i];
      if (s->attached)
        continue;
      lua_geti(L, 2, next);
      setup(L, s, lua_gettop(L), next);
      lua_rawseti(L, 4, i + 1); /* keep the body alive while libcurl sends it */
      lua_pop(L, 1);
      s->index = next++;
      CURLMcode mc = curl_multi_add_handle(c->multi, s->easy);
      if (mc != CURLM_OK)
        return luaL_error(L, "http: %s", curl_multi_strerror(mc));
      s->attached = 1;
      inflight++;
    }
    int running;
    CURLMcode mc = curl_multi_perform(c->multi, &running);
    if (mc != CURLM_OK) {
      client_quiesce(c);
      return luaL_error(L, "http: %s", curl_multi_strerror(mc));
    }
    int progressed = 0;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
      if (m->msg != CURLMSG_DONE)
        continue;
      slot_t *s = NULL;
      CURLcode rc = m->data.result;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      if (s == NULL)
        continue;
      if (rc == CURLE_OK) {
        push_response(L, s);
      } else {
        lua_createtable(L, 0, 2);
        push_failure(L, s, rc);
        lua_setfield(L, -3, "code");
        lua_setfield(L, -2, "error");
      }
      lua_rawseti(L, 3, s->index);
      slot_detach(c, s);
      inflight--;
      finished++;
      progressed = 1;
    }
    if (!progressed && running > 0) {
      mc = curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
      if (mc != CURLM_OK) {
        client_quiesce(c);
        return luaL_error(L, "http: %s", curl_multi_strerror(mc));
      }
    }
  }
  lua_settop(L, 3);
  return 1;
}

/* __gc, __close and close(): idempotent */
static int l_close(lua_State *L) {
  client_t *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->closed)
    return 0;
  c->closed = 1;
  for (int i = 0; i < c->nslots; i++)
    slot_detach(c, c->slots[i]);
  if (c->multi != NULL)
    curl_multi_cleanup(c->multi);
  c->multi = NULL;
  for (int i = 0; i < c->nslots; i++)
    slot_free(c, c->slots[i]);
  free(c->slots);
  c->slots = NULL;
  c->nslots = 0;
  return 0;
}

static int l_tostring(lua_State *L) {
  client_t *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->closed)
    lua_pushliteral(L, "runbook.http.Client (closed)");
  else
    lua_pushfstring(L, "runbook.http.Client (%p)", (void *)c);
  return 1;
}

/* core.client() -> Client */
static int l_client(lua_State *L) {
  client_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CLIENT_MT);
  c->multi = curl_multi_init();
  if (c->multi == NULL) {
    c->closed = 1;
    return luaL_error(L, "http: curl_multi_init failed");
  }
  return 1;
}

static const luaL_Reg methods[] = {
    {"request", l_request},
    {"batch", l_batch},
    {"close", l_close},
    {NULL, NULL},
};

static const luaL_Reg meta[] = {
    {"__gc", l_close},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {"__index", NULL},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"client", l_client},
    {NULL, NULL},
};

int luaopen_runbook_http_core(lua_State *L);

int luaopen_runbook_http_core(lua_State *L) {
  /* curl_global_init must run before any other libcurl call and, in the
   * libcurls we support, is not safe to race with other threads; it is
   * process-wide state, so one static flag (the only C global here) keeps a
   * second Lua state from initialising it again.  It is never cleaned up:
   * the library stays loaded for the life of the process. */
  static int curl_ready = 0;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return luaL_error(L, "http: curl_global_init failed");
    curl_ready = 1;
  }
  luaL_newmetatable(L, CLIENT_MT);
  luaL_setfuncs(L, meta, 0);
  luaL_newlibtable(L, methods);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
