/*
 * fuzz.h — what every libFuzzer harness here shares: the entry point's
 * prototype and FAIL, which prints why an invariant broke and aborts (so
 * libFuzzer keeps the input).  Each harness includes it after the module
 * it fuzzes ("../X.c").
 */
#ifndef RUNBOOK_FUZZ_H
#define RUNBOOK_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                          \
  do {                                                                                     \
    fprintf(stderr, __VA_ARGS__);                                                          \
    fputc('\n', stderr);                                                                   \
    abort();                                                                               \
  } while (0)

#endif
