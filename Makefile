# vmstrap — GNU make.  `make check` installs what is missing (Debian
# packages), builds and runs every test; `make bench` compares with the peers.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
DESTDIR ?=
INSTALL ?= install
PKG_CONFIG ?= pkg-config

VERSION := 0.1.0

# `make check SANITIZE=1` builds apart, with ASan and UBSan.
ifeq ($(SANITIZE),1)
BUILD ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD ?= build
SANFLAGS :=
endif

CC ?= cc
CFLAGS ?= -O2 -g
override CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wpedantic -Wshadow \
	-Wformat=2 -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
	-Wcast-qual -Wvla -Wwrite-strings -Werror=implicit-function-declaration \
	-fstack-protector-strong -D_FORTIFY_SOURCE=2 -D_FILE_OFFSET_BITS=64 \
	-DVS_VERSION='"$(VERSION)"' -Icommon $(SANFLAGS) $(CFLAGS)
override LDFLAGS := $(SANFLAGS) $(LDFLAGS)

# Libraries, looked up only when something is built, so that `make check`
# can install them first.  $(call pkg,MODULE,DEBIAN-PACKAGE,cflags|libs)
pkg = $(or $(shell $(PKG_CONFIG) --$(3) $(1) 2>/dev/null && echo ' '),$(error $(1) not found by pkg-config: install the Debian package $(2), or run scripts/install-deps))
JANSSON = $(call pkg,jansson,libjansson-dev,$(1))
YAML = $(call pkg,yaml-0.1,libyaml-dev,$(1))
EXT2FS = $(call pkg,ext2fs com_err,libext2fs-dev,$(1))
CURL = $(call pkg,libcurl,libcurl4-openssl-dev,$(1))
CRYPTO = $(call pkg,libcrypto,libssl-dev,$(1))
ARCHIVE = $(call pkg,libarchive,libarchive-dev,$(1))
ZLIB = $(call pkg,zlib,zlib1g-dev,$(1))
ZSTD = $(call pkg,libzstd,libzstd-dev,$(1))
# ISA-L inflates gzip four times as fast as zlib: used where it is
# installed (libisal-dev), zlib otherwise (ISAL=0 builds without it).
ifneq ($(ISAL),0)
HAVE_ISAL := $(shell $(PKG_CONFIG) --exists libisal 2>/dev/null && echo 1)
endif
INFLATE_LIBS = $(call ZLIB,libs) $(if $(HAVE_ISAL),$(shell $(PKG_CONFIG) --libs libisal))

# Each tool: its objects from common/ (listed, so it links only what it uses)
# and its libraries.
TOOLS := cowclone imgcheck imgprep kextract mkbase oci-fetch oci-prune oci-push oci-unpack vmrun
cowclone_COMMON := atomic clone doc err ext4w fe lock path progress qmp run size stop vmstate
cowclone_LIBS = $(call JANSSON,libs) $(call EXT2FS,libs) -pthread
cowclone_CFLAGS = $(call JANSSON,cflags) $(call EXT2FS,cflags)
imgcheck_COMMON := dedupe doc err fe fsmap lock path run size stop vmstate
imgcheck_LIBS = $(call JANSSON,libs) $(call EXT2FS,libs)
imgcheck_CFLAGS = $(call JANSSON,cflags) $(call EXT2FS,cflags)
imgprep_COMMON := atomic config doc err ext4w fe lock path run size sshkey stop \
	vmstate
imgprep_LIBS = $(call EXT2FS,libs) $(call JANSSON,libs) $(call YAML,libs) \
	$(call CURL,libs) $(call CRYPTO,libs)
imgprep_CFLAGS = $(call EXT2FS,cflags) $(call JANSSON,cflags) $(call CURL,cflags)
kextract_COMMON := artifact atomic digest doc err fe image inflate kernel layout lock path \
	progress ref rootfs run stamp stop
kextract_LIBS = $(call ARCHIVE,libs) $(call JANSSON,libs) $(call CRYPTO,libs) \
	$(call EXT2FS,libs) $(INFLATE_LIBS)
kextract_CFLAGS = $(call ARCHIVE,cflags) $(call JANSSON,cflags) \
	$(call EXT2FS,cflags)
mkbase_COMMON := artifact atomic clone config sshkey digest doc err ext4w fe image inflate layers \
	layout lend lock path progress ref rootfs rootless run size stamp stop \
	strmap tree
mkbase_LIBS = $(call EXT2FS,libs) $(call JANSSON,libs) $(call YAML,libs) \
	$(call CRYPTO,libs) $(call ARCHIVE,libs) $(INFLATE_LIBS) $(call ZSTD,libs) -pthread
mkbase_CFLAGS = $(call EXT2FS,cflags) $(call JANSSON,cflags) $(call ARCHIVE,cflags)
oci-fetch_COMMON := artifact atomic config sshkey creds digest doc err fe image layout lock path prune strmap \
	progress ref registry size stop
oci-fetch_LIBS = $(call CURL,libs) $(call JANSSON,libs) $(call YAML,libs) \
	$(call CRYPTO,libs)
oci-fetch_CFLAGS = $(call CURL,cflags) $(call JANSSON,cflags)
oci-prune_COMMON := atomic config digest doc err fe image layout lock path \
	prune ref size sshkey stop strmap
oci-prune_LIBS = $(call JANSSON,libs) $(call YAML,libs) $(call CRYPTO,libs)
oci-prune_CFLAGS = $(call JANSSON,cflags)
oci-push_COMMON := artifact atomic config creds digest doc err fe kernel layout lock path \
	progress ref registry size sshkey stop
oci-push_LIBS = $(call CURL,libs) $(call JANSSON,libs) $(call YAML,libs) \
	$(call CRYPTO,libs) $(call ZSTD,libs) -pthread
oci-push_CFLAGS = $(call CURL,cflags) $(call JANSSON,cflags) $(call ZSTD,cflags)
oci-unpack_COMMON := atomic digest doc err fe image inflate layers layout lock \
	path progress ref rootless stamp stop strmap tree
oci-unpack_LIBS = $(call ARCHIVE,libs) $(call JANSSON,libs) $(call CRYPTO,libs) \
	$(INFLATE_LIBS) -pthread
oci-unpack_CFLAGS = $(call ARCHIVE,cflags) $(call JANSSON,cflags)
vmrun_COMMON := atomic config sshkey doc err fe kernel lock path qmp run size stamp stop \
	vmstate
vmrun_LIBS = $(call JANSSON,libs) $(call YAML,libs) $(call CRYPTO,libs)
vmrun_CFLAGS = $(call JANSSON,cflags)

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:common/%.c=$(BUILD)/common/%.o)
COMMON_CFLAGS = $(call JANSSON,cflags) $(call YAML,cflags) $(call CURL,cflags) \
	$(call ARCHIVE,cflags) $(if $(HAVE_ISAL),-DHAVE_ISAL)
UNIT_LIBS = $(call JANSSON,libs) $(call YAML,libs) $(call CURL,libs) $(call ZSTD,libs) \
	$(call CRYPTO,libs) $(call ARCHIVE,libs) $(call EXT2FS,libs) $(INFLATE_LIBS) \
	-pthread

# vmstrap: a shell script, built from the tools
SCRIPTS := vmstrap
BINS := $(TOOLS:%=$(BUILD)/bin/%) $(SCRIPTS:%=$(BUILD)/bin/%)
UNIT := $(BUILD)/tests/test-common
MANS := $(wildcard man/*.[1-9])
BASHCOMP := $(wildcard completions/bash/*)

all: $(BINS)

$(BUILD)/common/%.o: common/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(COMMON_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj/%.o: bin/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $($*_CFLAGS) -MMD -MP -c -o $@ $<

$(SCRIPTS:%=$(BUILD)/bin/%): $(BUILD)/bin/%: bin/%
	@mkdir -p $(@D)
	cp $< $@
	chmod 755 $@

.SECONDEXPANSION:
$(BUILD)/bin/%: $(BUILD)/obj/%.o $$(addprefix $(BUILD)/common/,$$(addsuffix .o,$$($$*_COMMON)))
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $($*_LIBS) $(LDLIBS)

$(UNIT): tests/test-common.c $(COMMON_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(COMMON_CFLAGS) -MMD -MP -o $@ $< \
		$(COMMON_OBJ) $(LDFLAGS) $(UNIT_LIBS) $(LDLIBS)

-include $(wildcard $(BUILD)/*/*.d)

# The test runner installs nothing; `check` installs, builds, then tests.
deps:
	scripts/install-deps

check:
	scripts/install-deps
	$(MAKE) all unit
	BUILD=$(BUILD) VALGRIND=$(VALGRIND) tests/run

# A test tool: a loopback proxy that injects faults (tests/faultproxy.c).
FAULTPROXY := $(BUILD)/tests/faultproxy
$(FAULTPROXY): tests/faultproxy.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(call CRYPTO,cflags) -MMD -MP -o $@ $< $(LDFLAGS) \
		$(call CRYPTO,libs) $(LDLIBS)

unit: $(UNIT) $(FAULTPROXY)

test: all unit
	BUILD=$(BUILD) VALGRIND=$(VALGRIND) tests/run

bench: deps
	$(MAKE) all
	bench/run

install: all
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	$(INSTALL) -m 755 $(BINS) $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 644 $(filter %.1,$(MANS)) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 644 $(filter %.7,$(MANS)) $(DESTDIR)$(MANDIR)/man7
	$(INSTALL) -m 644 $(BASHCOMP) $(DESTDIR)$(BASHCOMPDIR)
	$(INSTALL) -m 644 completions/zsh/_vmstrap $(DESTDIR)$(ZSHCOMPDIR)

uninstall:
	rm -f $(TOOLS:%=$(DESTDIR)$(BINDIR)/%) $(SCRIPTS:%=$(DESTDIR)$(BINDIR)/%) \
		$(patsubst man/%,$(DESTDIR)$(MANDIR)/man1/%,$(filter %.1,$(MANS))) \
		$(patsubst man/%,$(DESTDIR)$(MANDIR)/man7/%,$(filter %.7,$(MANS))) \
		$(patsubst completions/bash/%,$(DESTDIR)$(BASHCOMPDIR)/%,$(BASHCOMP)) \
		$(DESTDIR)$(ZSHCOMPDIR)/_vmstrap

# The whole flow on a small image built offline (scripts/demo).
demo:
	scripts/install-deps
	$(MAKE) all
	scripts/demo $(DEMO_DIR)

clean:
	rm -rf build

.PHONY: all check deps unit test bench install uninstall demo clean
