#!/usr/bin/env bash
# asan-run.sh — `make asan`: the whole suite on the ASan+UBSan build, with
# LeakSanitizer checking every process at exit (the spec runner and every
# runbook it starts inherit these options).
#
# intercept_tls_get_addr=0: GCC 12's sanitizer runtime (and LLVM's up to 16)
# intercepts __tls_get_addr and takes a dynamic TLS block for a pre-2.25
# glibc one whenever its address happens to fall at a certain offset in a
# page; LeakSanitizer's tracer then reads a bogus range and dies at exit —
# "Tracer caught signal 11 ... LeakSanitizer has encountered a fatal error"
# after every spec passed, in whichever process drew the unlucky address
# (the spec runner once, a `runbook run verify-deployment` child once; both
# load libcurl/libcrypto, which use dynamic TLS). Not intercepting it only
# means dynamic TLS is not scanned for pointers; nothing of ours keeps heap
# pointers in TLS. See Mudlet/Mudlet#9930 and google/sanitizers#1322.
#
#   spec/helpers/asan-run.sh BIN [busted args...]
set -euo pipefail
BIN=$1; shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99:intercept_tls_get_addr=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$ROOT/spec/helpers/lsan.supp:print_suppressions=0
export RUNBOOK_BIN=$BIN
exec "$BIN" exec spec/helpers/busted.lua "$@"
