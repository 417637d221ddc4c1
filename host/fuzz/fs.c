/*
 * fuzz/fs.c — libFuzzer harness for the one place host/fs.c reads bytes it
 * did not write itself: holder_pid, which reads the pid a lock holder left
 * in the lock file for the "held by pid N" message.  The file may hold
 * anything (another tool's lock, a half-written pid, garbage).
 *
 * The input is the lock file's content.  holder_pid must return 0 (unknown)
 * or a pid a process can have (1..INT_MAX): the number the file starts
 * with when it is written in decimal digits followed by whitespace or the
 * end of the file, else 0.  Never a wrapped, clamped or negative value
 * shown as if it were the holder's pid.
 */
#include "../fs.c"

#include <ctype.h>
#include <stdint.h>
#include <sys/mman.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("lock", MFD_CLOEXEC);
  if (fd < 0)
    abort();
  if (size > 0 && write(fd, data, size) != (ssize_t)size)
    abort();
  long pid = holder_pid(fd);
  close(fd);
  if (pid < 0 || pid > INT_MAX) {
    fprintf(stderr, "holder_pid: %ld is not a pid\n", pid);
    abort();
  }
  /* the model: decimal digits at the start of the file, ending it or
   * followed by whitespace (the holder writes "%ld\n"); anything else,
   * including a sign, is unknown */
  long want = 0;
  size_t i = 0;
  if (size > 31) /* holder_pid reads at most this much: a pid is short */
    size = 31;
  while (i < size && data[i] >= '0' && data[i] <= '9' && want <= INT_MAX)
    want = want * 10 + (data[i++] - '0');
  if (i == 0 || want > INT_MAX || (i < size && !isspace(data[i])))
    want = 0;
  if (pid != want) {
    fprintf(stderr, "holder_pid: %ld, the file says %ld\n", pid, want);
    abort();
  }
  return 0;
}
