# claude: call Anthropic's Claude Messages API from PostgreSQL
EXTENSION = claude
MODULE_big = claude
OBJS = src/claude.o src/guc.o src/secret.o src/queue.o src/request.o \
       src/json.o src/errors.o src/http.o src/worker.o src/api.o
DATA = sql/claude--0.1.0.sql

REGRESS = setup complete messages privileges
REGRESS_OPTS = --load-extension=claude

PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wextra -Wno-unused-parameter \
              -Wno-sign-compare -Wno-missing-field-initializers
SHLIB_LINK = -lcurl

# no JIT bitcode: nothing here is worth inlining
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: test demo bench
test:
	bash test/run-tests.sh

demo:
	bash test/demo.sh

bench:
	bash test/bench/run-bench.sh

print-regress:
	@echo $(REGRESS)
