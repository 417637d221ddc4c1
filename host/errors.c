/*
 * errors.c — the error convention shared by the C modules: an expected
 * failure becomes nil, "what: why", "CODE" with a stable errno name.
 */
#include <errno.h>
#include <string.h>

#include "host.h"

const char *host_errno_name(int err) {
  switch (err) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC)
    E(EBADF) E(ECHILD) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY)
    E(EEXIST) E(EXDEV) E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE)
    E(EMFILE) E(ENOTTY) E(ETXTBSY) E(EFBIG) E(ENOSPC) E(ESPIPE) E(EROFS)
    E(EMLINK) E(EPIPE) E(ERANGE) E(EDEADLK) E(ENAMETOOLONG) E(ENOLCK)
    E(ENOSYS) E(ENOTEMPTY) E(ELOOP) E(EDQUOT) E(ETIMEDOUT) E(ECONNREFUSED)
    E(ECONNRESET) E(EADDRINUSE) E(ENOTSUP)
#undef E
  default: return "EUNKNOWN";
  }
}

int host_errno_result(lua_State *L, int err, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(err));
  lua_pushstring(L, host_errno_name(err));
  return 3;
}
