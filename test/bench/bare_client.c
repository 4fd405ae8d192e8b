/*
 * bare_client.c -- the baseline for `make bench`: N sequential Messages API
 * requests through ONE libcurl easy handle (so one kept-alive, verified TLS
 * connection), each checked for HTTP 200.
 *
 * usage: bare_client --url BASE_URL --cacert FILE --key API_KEY [-n N]
 *                    [--http2] [--prefix TEXT] [--stream]
 *
 * Prints one line: "<n> requests in <seconds> s, <rate> requests/s,
 * <us> us/request"; with --stream ("stream": true) also ", first delta
 * <us> us" (mean time to the first content_block_delta event).  Exits
 * non-zero on the first failure.
 *
 * build: cc -O2 -o test/bench/bare_client test/bench/bare_client.c -lcurl
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

struct sink
{
	size_t		len;
	char		head[256];		/* start of the reply, for error messages */
	double		first_delta;	/* when the first text came, 0 before */
};

static double now_s(void);

static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct sink *s = userdata;
	size_t		n = size * nmemb;

	if (s->len < sizeof(s->head) - 1)
	{
		size_t		room = sizeof(s->head) - 1 - s->len;
		size_t		c = n < room ? n : room;

		memcpy(s->head + s->len, ptr, c);
		s->head[s->len + c] = '\0';
	}
	s->len += n;
	/* a delta split across two reads is seen one read late: close enough */
	if (s->first_delta == 0 && n >= 19 && memmem(ptr, n, "content_block_delta", 19))
		s->first_delta = now_s();
	return n;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
usage(void)
{
	fprintf(stderr, "usage: bare_client --url BASE_URL --cacert FILE --key API_KEY "
			"[-n N] [--http2] [--prefix TEXT]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *base = NULL,
			   *cacert = NULL,
			   *key = NULL,
			   *prefix = "bench";
	long		n = 1;
	int			http2 = 0;
	int			stream = 0;
	double		first_sum = 0;

	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
			base = argv[++i];
		else if (strcmp(argv[i], "--cacert") == 0 && i + 1 < argc)
			cacert = argv[++i];
		else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
			key = argv[++i];
		else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc)
			prefix = argv[++i];
		else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			n = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--http2") == 0)
			http2 = 1;
		else if (strcmp(argv[i], "--stream") == 0)
			stream = 1;
		else
			usage();
	}
	if (!base || !cacert || !key || n < 1)
		usage();

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		fprintf(stderr, "bare_client: curl_global_init failed\n");
		return 1;
	}

	char		url[2048];
	char		keyhdr[1024];

	size_t		blen0 = strlen(base);

	while (blen0 > 0 && base[blen0 - 1] == '/')
		blen0--;
	snprintf(url, sizeof(url), "%.*s/v1/messages", (int) blen0, base);
	snprintf(keyhdr, sizeof(keyhdr), "x-api-key: %s", key);

	struct curl_slist *hdrs = NULL;

	hdrs = curl_slist_append(hdrs, keyhdr);
	hdrs = curl_slist_append(hdrs, "anthropic-version: 2023-06-01");
	hdrs = curl_slist_append(hdrs, "content-type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:");

	CURL	   *h = curl_easy_init();

	if (!h || !hdrs)
	{
		fprintf(stderr, "bare_client: out of memory\n");
		return 1;
	}

	struct sink sink;
	char		body[1024];
	char		errbuf[CURL_ERROR_SIZE];

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_CAINFO, cacert);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
					 http2 ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);

	double		t0 = now_s();

	for (long i = 1; i <= n; i++)
	{
		int			blen = snprintf(body, sizeof(body),
									"{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":1024,%s"
									"\"messages\":[{\"role\":\"user\",\"content\":\"%s %ld\"}]}",
									stream ? "\"stream\":true," : "", prefix, i);
		double		start = now_s();

		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) blen);
		sink.len = 0;
		sink.head[0] = '\0';
		sink.first_delta = 0;
		errbuf[0] = '\0';

		CURLcode	rc = curl_easy_perform(h);

		if (rc != CURLE_OK)
		{
			fprintf(stderr, "bare_client: request %ld: %s\n", i,
					errbuf[0] ? errbuf : curl_easy_strerror(rc));
			return 1;
		}

		long		status = 0;

		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		if (status != 200)
		{
			fprintf(stderr, "bare_client: request %ld: HTTP %ld: %s\n", i, status, sink.head);
			return 1;
		}
		if (stream && sink.first_delta == 0)
		{
			fprintf(stderr, "bare_client: request %ld: no content_block_delta: %s\n", i, sink.head);
			return 1;
		}
		first_sum += sink.first_delta - start;
	}

	double		el = now_s() - t0;

	printf("%ld requests in %.3f s, %.1f requests/s, %.1f us/request",
		   n, el, n / el, el * 1e6 / n);
	if (stream)
		printf(", first delta %.1f us", first_sum * 1e6 / n);
	printf("\n");

	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	curl_global_cleanup();
	return 0;
}
