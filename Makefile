# runbook — build, test, bench.  `make help` lists the targets.
#
# The binary `./runbook` links only liblua; libcurl, libcrypto and sqlite3 are
# in separate C modules (build/mod/runbook/*/core.so) loaded on first require,
# so commands that never touch the network do not pay for them.

PKG_CONFIG ?= pkg-config
LUA_PC     ?= lua5.4
LUA        ?= lua5.4
CC         ?= cc
VERSION    := 0.1.0

WARN    := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -fPIC $(WARN) -MMD -MP -DRUNBOOK_VERSION='"$(VERSION)"'
LUA_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null)
LUA_LIBS   := $(shell $(PKG_CONFIG) --libs $(LUA_PC) 2>/dev/null)
CURL_LIBS  := $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null)
SSL_LIBS   := $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null)
SQL_LIBS   := $(shell $(PKG_CONFIG) --libs sqlite3 2>/dev/null)

ifeq ($(V),1)
Q :=
else
Q := @
endif

# Lua sources embedded in the binary (runbooks/ is the built-in catalogue).
LUA_SRC := $(sort $(shell find lua stdlib runbooks -name '*.lua' 2>/dev/null))
# lua-argparse is embedded too (as bytecode, like ours): every command parses
# its arguments with it, and loading it from source costs ~1 ms of start-up.
ARGPARSE := $(shell $(LUA) -e 'print(package.searchpath("argparse", package.path) or "")' 2>/dev/null)
EMBED_SRC := $(LUA_SRC) $(if $(ARGPARSE),argparse=$(ARGPARSE))
# C modules compiled into the binary (libc only).
BIN_C   := host/main.c host/errors.c host/proc.c host/fs.c host/term.c host/text.c host/worker.c host/heap.c
# C modules loaded on demand: name -> extra libs.
MODS    := http crypto sqlite
LIBS_http   := $(CURL_LIBS)
LIBS_crypto := $(SSL_LIBS)
LIBS_sqlite := $(SQL_LIBS)

# $(B) is the build directory; the ASan build uses build/asan.
B ?= build
BIN ?= runbook

OBJ := $(patsubst host/%.c,$(B)/obj/%.o,$(BIN_C)) $(B)/obj/embed.o
SOS := $(foreach m,$(MODS),$(B)/mod/runbook/$(m)/core.so)

.PHONY: all deps test asan tsan lint bench clean help demo check-c hub-deps valgrind fuzz

all: $(BIN) $(SOS)

$(BIN): $(OBJ)
	@echo "  LINK  $@"
	$(Q)$(CC) $(CFLAGS) -pthread -o $@ $(OBJ) $(LUA_LIBS) $(LDFLAGS)

$(B)/obj/%.o: host/%.c | $(B)/obj
	@echo "  CC    $<"
	$(Q)$(CC) $(CFLAGS) $(LUA_CFLAGS) -Ihost -c -o $@ $<

$(B)/embed.c: host/embed.lua $(LUA_SRC) $(ARGPARSE) | $(B)/obj
	@echo "  EMBED $(words $(EMBED_SRC)) Lua files"
	$(Q)$(LUA) host/embed.lua $@ $(EMBED_SRC)

$(B)/obj/embed.o: $(B)/embed.c
	$(Q)$(CC) $(CFLAGS) -Ihost -c -o $@ $<

$(B)/mod/runbook/%/core.so: host/%.c host/errors.c | $(B)/obj
	@echo "  SO    $@"
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) $(LUA_CFLAGS) -Ihost -shared -o $@ $< host/errors.c $(LIBS_$*) $(LDFLAGS)

$(B)/obj:
	@mkdir -p $@

-include $(wildcard $(B)/obj/*.d) $(wildcard $(B)/mod/runbook/*/*.d)

# ---------------------------------------------------------------- deps
DEB_PKGS := lua5.4 liblua5.4-dev lua-cjson lua-argparse lua-busted lua-check \
	libcurl4-openssl-dev libssl-dev libsqlite3-dev sqlite3 pkg-config gcc make \
	curl openssl ca-certificates valgrind wrk hyperfine nginx-light procps clang libclang-rt-dev
# Node.js for the local hub: any install that provides node >= 18 and npm
# counts (NodeSource's nodejs bundles npm and conflicts with Debian's npm).
NODE_PKGS := nodejs npm

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  missing="$$missing $(NODE_PKGS)"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	  { echo "deps: apt-get install failed for:$$missing" >&2; exit 1; }; \
	fi
	@if [ -f examples/hub/package-lock.json ]; then $(MAKE) --no-print-directory hub-deps; fi

hub-deps:
	@if [ ! -d examples/hub/node_modules ] || [ examples/hub/package-lock.json -nt examples/hub/node_modules/.package-lock.json ]; then \
	  echo "deps: npm ci in examples/hub"; \
	  cd examples/hub && npm ci --no-audit --no-fund --loglevel=error; \
	fi

# ---------------------------------------------------------------- tests
# The specs run inside the runbook binary itself (`runbook exec`), so they
# exercise the real embedded modules and C host.  RUNBOOK_BIN tells specs
# which binary to spawn for end-to-end checks.  `make test` works on a fresh
# machine: it installs what is missing first (a second of checking otherwise).
BUSTED_ARGS ?=
test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)RUNBOOK_BIN=$(abspath $(BIN)) ./$(BIN) exec spec/helpers/busted.lua $(BUSTED_ARGS)

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan:
	$(Q)$(MAKE) --no-print-directory B=build/asan BIN=build/asan/runbook CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" all
	$(Q)spec/helpers/asan-run.sh $(abspath build/asan/runbook) $(BUSTED_ARGS)

# ThreadSanitizer on what runs on several threads: the worker module and
# kv-audit's parallel scan (library and runbook)
TSAN_FLAGS := -O1 -g -fsanitize=thread -fno-omit-frame-pointer
TSAN_SPECS := spec/host/worker_spec.lua spec/kvaudit
tsan:
	$(Q)$(MAKE) --no-print-directory B=build/tsan BIN=build/tsan/runbook CFLAGS="$(TSAN_FLAGS)" LDFLAGS="-fsanitize=thread" all
	$(Q)TSAN_OPTIONS=halt_on_error=1:exitcode=66 RUNBOOK_BIN=$(abspath build/tsan/runbook) \
	  build/tsan/runbook exec spec/helpers/busted.lua $(TSAN_SPECS)

# valgrind on scripts that touch every C module and on journaled runbook runs
valgrind: all
	$(Q)RUNBOOK_BIN=$(abspath $(BIN)) ./$(BIN) exec .ci/valgrind.lua

check-c:
	$(Q)$(MAKE) --no-print-directory B=build/werror BIN=build/werror/runbook CFLAGS="-O2 -Werror" all

# libFuzzer harnesses (host/fuzz/NAME.c; each includes the module it fuzzes
# and checks invariants, see docs/FUZZ.md), built with clang into
# build/fuzz/; each runs FUZZ_SECONDS on a copy of its committed corpus
# host/fuzz/corpus/NAME (new inputs go to build/fuzz/corpus/NAME).  A crash,
# a sanitizer report or a broken invariant fails the target; the input is
# left in build/fuzz/NAME-crash-*.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 20
FUZZ_FLAGS   := -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer $(WARN) -DRUNBOOK_VERSION='"$(VERSION)"'
FUZZ_NAMES   := $(patsubst host/fuzz/%.c,%,$(wildcard host/fuzz/*.c))
FUZZ_BINS    := $(addprefix build/fuzz/,$(FUZZ_NAMES))
FUZZ_LIBS_http   := $(CURL_LIBS)
FUZZ_LIBS_crypto := $(SSL_LIBS)
FUZZ_LIBS_sqlite := $(SQL_LIBS)

$(FUZZ_BINS): build/fuzz/%: host/fuzz/%.c host/fuzz/fuzz.h $(wildcard host/*.c) host/host.h
	@mkdir -p $(dir $@)
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) not found (make deps installs clang)" >&2; exit 1; }
	@echo "  FUZZ  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_FLAGS) $(LUA_CFLAGS) -Ihost -o $@ $< host/errors.c $(FUZZ_LIBS_$*) $(LUA_LIBS)

fuzz: $(FUZZ_BINS)
	$(Q)for t in $(FUZZ_NAMES); do \
	  mkdir -p build/fuzz/corpus/$$t; \
	  dict=; [ -f host/fuzz/$$t.dict ] && dict=-dict=host/fuzz/$$t.dict; \
	  echo "  RUN   $$t for $(FUZZ_SECONDS) s"; \
	  build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    $$dict -artifact_prefix=build/fuzz/$$t- build/fuzz/corpus/$$t host/fuzz/corpus/$$t \
	    >build/fuzz/$$t.log 2>&1 || { tail -n 30 build/fuzz/$$t.log; \
	    echo "fuzz: $$t failed (input: build/fuzz/$$t-*, log: build/fuzz/$$t.log)" >&2; exit 1; }; \
	  grep -h '^stat::number_of_executed_units' build/fuzz/$$t.log | sed "s/^stat::number_of_executed_units: */        $$t: /; s/$$/ runs, no failure/"; \
	done

lint: check-c
	luacheck --quiet lua stdlib runbooks spec bench examples .ci --exclude-files 'examples/hub/node_modules/**'

bench: all
	$(Q)$(LUA) bench/run.lua

# The main job: install what is missing, build, start the local hub and the
# daemon, rotate the queue key against them, show the journal, stop both.
demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)./$(BIN) exec examples/demo.lua

clean:
	rm -rf build runbook

help:
	@echo "make deps   install Debian packages (and the hub's npm packages)"
	@echo "make        build ./runbook and its C modules"
	@echo "make test   run the specs (busted inside ./runbook)"
	@echo "make asan   the same specs on an ASan+UBSan build"
	@echo "make tsan   the threaded parts (worker, kv-audit scan) on a ThreadSanitizer build"
	@echo "make lint   luacheck + C warnings as errors"
	@echo "make fuzz   libFuzzer harnesses of the C parsers, FUZZ_SECONDS each (default 20)"
	@echo "make bench  benchmarks against curl / lua / wrk (writes docs/BENCH.md)"
	@echo "make valgrind  the host under valgrind: no definite leak, no memory error"
	@echo "make demo   build, start the local hub, rotate its queue key"
