/*
 * crypto.c — runbook.crypto.core: the few cryptographic primitives the
 * runbooks need (random bytes, hex, base64, sha256, hmac-sha256,
 * constant-time comparison), all taken from libcrypto; nothing here is
 * hand-rolled except input validation.
 *
 * Every output is built in a luaL_Buffer sized up front, so an error raised
 * while pushing (out of memory) leaks nothing: Lua owns the memory.
 * Bad input to unhex/unb64 is an expected failure: nil, msg, "EINVAL".
 * The messages never quote the input (it may be a secret).
 */
#include <limits.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "host.h"

int luaopen_runbook_crypto_core(lua_State *L);

/* Upper bound for random(n): a runbook needs keys, not bulk data, and a
 * typo like random(1e12) should fail loudly rather than exhaust memory. */
#define RANDOM_MAX (1 << 20)

/* nil, "<what>: <libcrypto reason>", code. */
static int crypto_fail(lua_State *L, const char *what, const char *code) {
  unsigned long e = ERR_get_error();
  char reason[256];
  if (e != 0)
    ERR_error_string_n(e, reason, sizeof reason);
  else
    snprintf(reason, sizeof reason, "libcrypto failure");
  ERR_clear_error();
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, reason);
  lua_pushstring(L, code);
  return 3;
}

static int invalid(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushliteral(L, "EINVAL");
  return 3;
}

/* random(n) -> n bytes from the CSPRNG, or nil, msg, "ECRYPTO". */
static int c_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "byte count out of range (0..1048576)");
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  if (n > 0 && RAND_bytes(p, (int)n) != 1)
    return crypto_fail(L, "random", "ECRYPTO");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* hex(s) -> lower-case hex of s. */
static int c_hex(lua_State *L) {
  static const char digits[] = "0123456789abcdef";
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  luaL_argcheck(L, n <= (SIZE_MAX - 1) / 2, 1, "string too long");
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n * 2);
  for (size_t i = 0; i < n; i++) {
    p[2 * i] = digits[s[i] >> 4];
    p[2 * i + 1] = digits[s[i] & 0x0f];
  }
  luaL_pushresultsize(&b, n * 2);
  return 1;
}

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* unhex(s) -> bytes; either case accepted; odd length or a non-hex
 * character -> nil, msg, "EINVAL". */
static int c_unhex(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  if (n % 2 != 0)
    return invalid(L, "unhex: odd number of hex digits");
  /* validate before allocating so a failure needs no cleanup */
  for (size_t i = 0; i < n; i++)
    if (hexval(s[i]) < 0)
      return invalid(L, "unhex: not a hex digit");
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n / 2);
  for (size_t i = 0; i < n / 2; i++)
    p[i] = (char)((hexval(s[2 * i]) << 4) | hexval(s[2 * i + 1]));
  luaL_pushresultsize(&b, n / 2);
  return 1;
}

/* b64(s) -> standard alphabet, '=' padded, no line breaks. */
static int c_b64(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  /* EVP_EncodeBlock takes an int length; the output is 4/3 of it plus NUL */
  luaL_argcheck(L, n <= (size_t)INT_MAX / 4 * 3 - 3, 1, "string too long");
  size_t out = 4 * ((n + 2) / 3);
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, out + 1);
  int w = EVP_EncodeBlock(p, s, (int)n);
  luaL_pushresultsize(&b, (size_t)w);
  return 1;
}

static int b64val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* unb64(s) -> bytes. Strict: length a multiple of 4, standard alphabet,
 * '=' only as the last one or two characters, no whitespace. (EVP's own
 * decoder tolerates whitespace and does not strip padding, hence the
 * check here and the length correction after.) */
static int c_unb64(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  if (n % 4 != 0)
    return invalid(L, "unb64: length is not a multiple of 4");
  if (n > (size_t)INT_MAX)
    return invalid(L, "unb64: input too long");
  size_t pad = 0;
  if (n > 0 && s[n - 1] == '=') pad++;
  if (n > 1 && s[n - 2] == '=') pad++;
  for (size_t i = 0; i < n - pad; i++)
    if (b64val(s[i]) < 0)
      return invalid(L, "unb64: not a base64 character");
  if (pad > 0) {
    /* the unused low bits of the last data character must be zero, so
     * every encoding has exactly one accepted form */
    int last = b64val(s[n - pad - 1]);
    if ((pad == 1 && (last & 0x03) != 0) || (pad == 2 && (last & 0x0f) != 0))
      return invalid(L, "unb64: non-canonical padding");
  }
  size_t out = n / 4 * 3;
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, out + 1);
  if (n > 0 && EVP_DecodeBlock(p, s, (int)n) < 0)
    return invalid(L, "unb64: not valid base64");
  luaL_pushresultsize(&b, out - pad);
  return 1;
}

/* sha256(s) -> 32 raw bytes. */
static int c_sha256(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(s, n, md, &len, EVP_sha256(), NULL) != 1)
    return crypto_fail(L, "sha256", "ECRYPTO");
  lua_pushlstring(L, (const char *)md, len);
  return 1;
}

/* hmac_sha256(key, msg) -> 32 raw bytes. */
static int c_hmac_sha256(lua_State *L) {
  size_t klen, mlen;
  const char *key = luaL_checklstring(L, 1, &klen);
  const unsigned char *msg = (const unsigned char *)luaL_checklstring(L, 2, &mlen);
  luaL_argcheck(L, klen <= (size_t)INT_MAX, 1, "key too long");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  /* HMAC() with an empty key still needs a non-NULL pointer */
  if (HMAC(EVP_sha256(), klen > 0 ? key : "", (int)klen, msg, mlen, md, &len) == NULL)
    return crypto_fail(L, "hmac_sha256", "ECRYPTO");
  lua_pushlstring(L, (const char *)md, len);
  return 1;
}

/* equal(a, b) -> boolean. The time depends only on the length, never on
 * where the contents differ; different lengths are simply unequal (the
 * length of a MAC or a key is not the secret). */
static int c_equal(lua_State *L) {
  size_t na, nb;
  const char *a = luaL_checklstring(L, 1, &na);
  const char *b = luaL_checklstring(L, 2, &nb);
  lua_pushboolean(L, na == nb && CRYPTO_memcmp(a, b, na) == 0);
  return 1;
}

static const luaL_Reg funcs[] = {
    {"random", c_random},
    {"hex", c_hex},
    {"unhex", c_unhex},
    {"b64", c_b64},
    {"unb64", c_unb64},
    {"sha256", c_sha256},
    {"hmac_sha256", c_hmac_sha256},
    {"equal", c_equal},
    {NULL, NULL},
};

int luaopen_runbook_crypto_core(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
