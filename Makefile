# claude: call Anthropic's Claude Messages API from PostgreSQL
# PostgreSQL 15 or later (15, 17 and 18 tested): see README, Supported versions.
#   make / make install / make installcheck    PGXS, against PG_CONFIG's PostgreSQL
#   make test                                  the whole suite on PostgreSQL 15
#   make PG=17 / make test PG=17 (or 18)       build / test against that release
#   make demo                                  installs into the system's PostgreSQL
EXTENSION = claude
MODULE_big = claude
# one folder per process that runs the code: see README, Architecture
SRCS = $(sort $(wildcard $(srcdir)/src/*.c $(srcdir)/src/*/*.c))
OBJS = $(patsubst $(srcdir)/%.c,%.o,$(SRCS))
DATA = sql/claude--0.1.0.sql

REGRESS = setup complete messages privileges cache bulk triggers stats structured search_path stream
REGRESS_OPTS = --load-extension=claude

PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wextra -Wno-unused-parameter \
              -Wno-sign-compare -Wno-missing-field-initializers
# OpenSSL: what waits on a pooled TLS connection is read through it
SHLIB_LINK = -lcurl -lssl -lcrypto

# no JIT bitcode: nothing here is worth inlining
override with_llvm = no

# PG=17, PG=18: another release's headers, fetched and cached by
# test/pg-versions.sh; the build runs in a copy in build/pgNN (15's objects
# stay here)
ifneq ($(filter-out 15,$(PG)),)
.PHONY: all test clean install installcheck demo
all:
	bash test/pg-versions.sh build $(PG) $(CURDIR)
test:
	bash test/run-tests.sh $(PG)
clean:
	rm -rf build/pg$(PG)
install installcheck demo:
	@echo "PG=$(PG) builds and tests against a private copy of PostgreSQL $(PG)." >&2
	@echo "To install into your own PostgreSQL $(PG): make PG_CONFIG=/path/to/its/pg_config install" >&2
	@exit 1
else

# Set by test/pg-versions.sh: headers configured by a newer distribution.
# Its gcc knows warnings Debian 12's does not, and its glibc has strlcpy.
ifdef FOREIGN_HEADERS
PG_CPPFLAGS += -include $(srcdir)/build/glibc-strlcpy.h
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
ifdef FOREIGN_HEADERS
override CFLAGS := $(filter-out -Wmissing-variable-declarations,$(CFLAGS))
endif
else
# a fresh machine: 'make test' and 'make demo' install what is missing
all install installcheck:
	@echo "pg_config not found: run 'make demo' or 'make test' (they install the dependencies)," >&2
	@echo "or install postgresql-server-dev-15 (or later) and libcurl4-openssl-dev." >&2
	@exit 1
endif

.PHONY: test demo bench
test:
	bash test/run-tests.sh

# installs the extension into the system's PostgreSQL 15 (as root or with sudo)
demo:
	bash test/demo.sh

bench:
	bash test/bench/run-bench.sh

# PGXS tracks no header dependencies: a changed struct must rebuild all
$(OBJS): $(wildcard $(srcdir)/src/*/*.h)

endif

print-regress:
	@echo $(REGRESS)
