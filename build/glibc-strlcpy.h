/*
 * glibc-strlcpy.h: forced into builds against another distribution's
 * headers (make PG=17, PG=18).  Those headers were configured on glibc
 * 2.38 or later, which has strlcpy, so PostgreSQL's port.h leaves it
 * undeclared; Debian 12's glibc 2.36 has none.  The server exports its
 * own (src/port), which is what the module calls then.
 */
#include <features.h>
#include <stddef.h>
#if defined(__GLIBC__) && !__GLIBC_PREREQ(2, 38)
extern size_t strlcpy(char *dst, const char *src, size_t siz);
#endif
