/*
 * ratelimit.c
 *		Token buckets for requests, input and output tokens per minute, shared
 *		by the whole server.  Caller: the HTTP worker.
 *
 * Each bucket refills continuously at limit/60 per second and holds at most
 * one second's worth, so pacing is even.  A request that needs more than a
 * full bucket (a prompt larger than a second's input tokens) waits for a
 * full bucket and drives it negative: large prompts are paced by their
 * size and nobody starves.  A 429, or a server that reports nothing
 * remaining, pauses all dispatch until the time it names, a minute at
 * most whatever header named it (the request told to wait longer still
 * waits, alone, until its caller gives up); smaller
 * remaining counts than ours lower our buckets, so servers that share one
 * key stay under its limit without talking to each other.
 */
#include "postgres.h"

#include <math.h>

#include "utils/timestamp.h"

#include "shmem/ratelimit.h"
#include "shmem/slots.h"

/* what a server's headers may claim, at most */
#define SERVER_RESET_MAX_MS		(60 * 1000)
#define SERVER_COUNT_MAX		1e12

typedef struct Bucket
{
	int			per_minute;		/* 0: no limit */
	double		level;
	TimestampTz updated;
} Bucket;

typedef struct LimitsShared
{
	slock_t		mutex;
	Bucket		buckets[3];		/* requests, input tokens, output tokens */
	TimestampTz paused_until;
	ClaudeLimitCounters counters;
} LimitsShared;

static LimitsShared *limits = NULL;
ClaudeLimitCounters *claude_limit_counters = NULL;

Size
claude_limits_shmem_size(void)
{
	return MAXALIGN(sizeof(LimitsShared));
}

static void
init_limits(void *ptr)
{
	LimitsShared *l = ptr;

	SpinLockInit(&l->mutex);
	pg_atomic_init_u64(&l->counters.retries, 0);
	pg_atomic_init_u64(&l->counters.rate_limited, 0);
	pg_atomic_init_u64(&l->counters.throttled_us, 0);
}

void
claude_limits_shmem_startup(void)
{
	limits = claude_shmem_struct("claude limits", claude_limits_shmem_size(),
								 init_limits);
	claude_limit_counters = &limits->counters;
}

static double
capacity(const Bucket *b)
{
	return b->per_minute / 60.0;
}

static void
refill(Bucket *b, TimestampTz now)
{
	if (b->per_minute > 0 && now > b->updated)
		b->level = Min(capacity(b),
					   b->level + (now - b->updated) * b->per_minute / 60e6);
	b->updated = now;
}

/* Apply new limits (at start and on reload); a new limit starts full. */
void
claude_limits_configure(int rpm, int itpm, int otpm)
{
	int			per_minute[3] = {rpm, itpm, otpm};
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&limits->mutex);
	for (int i = 0; i < 3; i++)
	{
		Bucket	   *b = &limits->buckets[i];

		refill(b, now);
		if (b->per_minute == 0 && per_minute[i] > 0)
			b->level = per_minute[i] / 60.0;
		b->per_minute = per_minute[i];
		if (b->per_minute > 0)
			b->level = Min(b->level, capacity(b));
	}
	/* whatever a server said, a reload or a new worker starts afresh */
	limits->paused_until = 0;
	SpinLockRelease(&limits->mutex);
}

/*
 * Take the cost of a request if the limits allow it now: returns 0, or
 * else the milliseconds to wait before asking again (nothing is taken).
 */
long
claude_limits_admit(const ClaudeCost *cost, TimestampTz now)
{
	double		need[3] = {cost->requests, cost->input_tokens, cost->output_tokens};
	double		wait_us = 0;

	SpinLockAcquire(&limits->mutex);
	if (limits->paused_until > now)
		wait_us = limits->paused_until - now;
	for (int i = 0; i < 3; i++)
	{
		Bucket	   *b = &limits->buckets[i];
		double		want;

		refill(b, now);
		if (b->per_minute == 0)
			continue;
		/* never more than a full bucket, or a large request would wait forever */
		want = Min(need[i], capacity(b));
		if (b->level < want - 1e-9)
			wait_us = Max(wait_us, (want - b->level) * 60e6 / b->per_minute);
	}
	if (wait_us == 0)
	{
		for (int i = 0; i < 3; i++)
			if (limits->buckets[i].per_minute > 0)
				limits->buckets[i].level -= need[i];
	}
	SpinLockRelease(&limits->mutex);
	return (long) ceil(wait_us / 1000.0);
}

/*
 * Correct a bucket by what a reply says was used: never above full, and
 * never owing more than a minute of the limit, whatever the reply said.
 */
static void
settle(Bucket *b, double reserved, double used)
{
	if (b->per_minute > 0)
		b->level = Max(-(double) b->per_minute,
					   Min(capacity(b), b->level + reserved - used));
}

/* Correct a reservation with what the reply says was used. */
void
claude_limits_settle(const ClaudeCost *reserved, double input_used,
					 double output_used)
{
	SpinLockAcquire(&limits->mutex);
	settle(&limits->buckets[1], reserved->input_tokens, input_used);
	settle(&limits->buckets[2], reserved->output_tokens, output_used);
	SpinLockRelease(&limits->mutex);
}

void
claude_limits_pause_until(TimestampTz until)
{
	TimestampTz latest = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 SERVER_RESET_MAX_MS);

	until = Min(until, latest);
	SpinLockAcquire(&limits->mutex);
	limits->paused_until = Max(limits->paused_until, until);
	SpinLockRelease(&limits->mutex);
}

/*
 * When a server with this much left gives the next unit: it refills
 * linearly until reset, so one unit takes (reset - now) / (limit -
 * remaining); without a limit, wait for the reset.
 */
static TimestampTz
next_unit_at(double limit, double remaining, TimestampTz reset, TimestampTz now)
{
	if (remaining >= 1 || reset <= now)
		return 0;
	/* per-minute limits: a reset further ahead is not believed */
	reset = Min(reset, TimestampTzPlusMilliseconds(now, SERVER_RESET_MAX_MS));
	if (limit > remaining)
		return Min(reset, now + (TimestampTz) ((reset - now) * (1 - remaining) / (limit - remaining)));
	return reset;
}

void
claude_limits_feedback(const ClaudeServerLimits *server, TimestampTz now)
{
	SpinLockAcquire(&limits->mutex);
	for (int i = 0; i < 4; i++)
	{
		Bucket	   *b = &limits->buckets[i == 3 ? 1 : i];
		double		remaining = server->remaining[i];

		if (remaining < 0)
			continue;
		limits->paused_until = Max(limits->paused_until,
								   next_unit_at(server->limit[i], remaining,
												server->reset[i], now));
		if (b->per_minute > 0)
		{
			refill(b, now);
			b->level = Min(b->level, remaining);
		}
	}
	SpinLockRelease(&limits->mutex);
}

void
claude_server_limits_init(ClaudeServerLimits *server)
{
	for (int i = 0; i < 4; i++)
	{
		server->limit[i] = -1;
		server->remaining[i] = -1;
		server->reset[i] = 0;
	}
}

/* RFC 3339 (2026-11-21T23:18:00Z, with optional fraction and offset). */
static TimestampTz
parse_rfc3339(const char *s)
{
	struct pg_tm tm;
	int			n = 0;
	double		frac = 0;
	int			tz = 0;
	TimestampTz result;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%d-%d-%dT%d:%d:%d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
		return 0;
	s += n;
	if (*s == '.')
	{
		char	   *end;

		frac = strtod(s, &end);
		s = end;
	}
	if (*s == '+' || *s == '-')
	{
		int			h,
					m;

		if (sscanf(s + 1, "%d:%d", &h, &m) != 2)
			return 0;
		tz = (*s == '+' ? 1 : -1) * (h * 3600 + m * 60);
	}
	if (tm2timestamp(&tm, 0, NULL, &result) != 0)
		return 0;
	return result - (TimestampTz) tz * USECS_PER_SEC + (TimestampTz) (frac * USECS_PER_SEC);
}

/* A count in a header: finite, from 0 to a bound; else -1 (unknown). */
static double
header_count(const char *value)
{
	char	   *end;
	double		v = strtod(value, &end);

	if (end == value || !(v >= 0 && v <= SERVER_COUNT_MAX))
		return -1;
	return v;
}

/* Record an anthropic-ratelimit-* header; returns false for other headers. */
bool
claude_server_limits_header(ClaudeServerLimits *server, const char *name,
							size_t namelen, const char *value)
{
	static const char *const kinds[] = {"requests", "input-tokens", "output-tokens", "tokens"};
	const char *prefix = "anthropic-ratelimit-";
	size_t		plen = strlen(prefix);

	if (namelen <= plen || pg_strncasecmp(name, prefix, plen) != 0)
		return false;
	name += plen;
	namelen -= plen;
	for (int i = 0; i < lengthof(kinds); i++)
	{
		size_t		klen = strlen(kinds[i]);
		const char *what;

		if (namelen <= klen || pg_strncasecmp(name, kinds[i], klen) != 0 || name[klen] != '-')
			continue;
		what = name + klen + 1;
		namelen -= klen + 1;
		if (namelen == 5 && pg_strncasecmp(what, "limit", 5) == 0)
			server->limit[i] = header_count(value);
		else if (namelen == 9 && pg_strncasecmp(what, "remaining", 9) == 0)
			server->remaining[i] = header_count(value);
		else if (namelen == 5 && pg_strncasecmp(what, "reset", 5) == 0)
			server->reset[i] = parse_rfc3339(value);
		return true;
	}
	return false;
}
