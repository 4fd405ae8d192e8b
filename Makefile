# claude: call Anthropic's Claude Messages API from PostgreSQL
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

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
# a fresh machine: 'make test' and 'make demo' install what is missing
all install installcheck:
	@echo "pg_config not found: run 'make demo' or 'make test' (they install the dependencies)," >&2
	@echo "or install postgresql-server-dev-15 and libcurl4-openssl-dev." >&2
	@exit 1
endif

.PHONY: test demo bench
test:
	bash test/run-tests.sh

demo:
	bash test/demo.sh

bench:
	bash test/bench/run-bench.sh

# PGXS tracks no header dependencies: a changed struct must rebuild all
$(OBJS): $(wildcard $(srcdir)/src/*/*.h)

print-regress:
	@echo $(REGRESS)
