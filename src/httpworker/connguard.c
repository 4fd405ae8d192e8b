/*
 * connguard.c
 *		Which connection may carry a request: none that holds input no
 *		request asked for.  Caller: http.c (libcurl's socket and
 *		pre-request callbacks).
 *
 * libcurl 7.88 hands an idle HTTP/1.1 connection to the next request even
 * when bytes wait on it (8.1 stopped that: curl pull request 10690), so a
 * server or proxy that sent a reply twice had its copy read as the answer
 * of the next request, another role's.  So just before a request goes out
 * on a connection that carried one before (CURLOPT_PREREQFUNCTION), what
 * waits on it is judged: anything, even the server's close, refuses the
 * connection, and the attempt starts again on a new one (dispatch.c), with
 * nothing sent and nothing counted.  Over TLS, plaintext OpenSSL already
 * holds counts, and bytes on the socket are read through OpenSSL: a TLS 1.3
 * session ticket is harmless, application data is not.  A check before
 * reuse leaves a race (a copy may still be on its way), so after one
 * unsolicited byte HTTP/1.1 connections to that server are not reused for
 * a minute (http.c asks claude_conn_spoilt).  HTTP/2 frames name their
 * stream: such connections are left to libcurl.
 *
 * When libcurl starts a request over on a new connection by itself, none
 * of its body went out (http.c refuses to rewind a body that did): the
 * body is read again from its start.  A connection is found by its ports
 * among the sockets this file opened.  Nothing here raises: it all runs
 * inside libcurl.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "utils/timestamp.h"

#include "httpworker/transfer.h"
#include "shmem/slots.h"

/* how long a server that sent unsolicited bytes gets no reused HTTP/1.1 connection */
#define SPOILT_MS		(60 * 1000)
#define MAX_SPOILT		8
#define ENDPOINT_LEN	256

typedef struct OurSocket
{
	curl_socket_t fd;
	bool		used;			/* a request went out on it */
} OurSocket;

static OurSocket *sockets;
static int	nsockets;
static int	socket_cap;

/* servers whose HTTP/1.1 connections are not reused until a time */
static struct
{
	char		endpoint[ENDPOINT_LEN];
	TimestampTz until;
}			spoilt[MAX_SPOILT];

curl_socket_t
claude_conn_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	curl_socket_t s = socket(addr->family, addr->socktype, addr->protocol);

	if (s == CURL_SOCKET_BAD)
		return s;
	pg_atomic_fetch_add_u64(&claude_shared->connections_opened, 1);
	pg_atomic_fetch_add_u32(&claude_shared->connections_open, 1);
	if (nsockets == socket_cap)
	{
		int			cap = Max(socket_cap * 2, 16);
		OurSocket  *grown = realloc(sockets, cap * sizeof(OurSocket));

		/* without memory it is not checked: never refused for that */
		if (grown == NULL)
			return s;
		sockets = grown;
		socket_cap = cap;
	}
	sockets[nsockets].fd = s;
	sockets[nsockets].used = false;
	nsockets++;
	return s;
}

int
claude_conn_close_socket(void *clientp, curl_socket_t s)
{
	for (int i = 0; i < nsockets; i++)
		if (sockets[i].fd == s)
		{
			sockets[i] = sockets[--nsockets];
			break;
		}
	pg_atomic_fetch_sub_u32(&claude_shared->connections_open, 1);
	return close(s);
}

static int
port_of(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *) a)->sin_port);
	if (a->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *) a)->sin6_port);
	return -1;
}

/* The socket with these ports (and peer address), or NULL. */
static OurSocket *
find_socket(const char *peer_ip, int peer_port, int local_port)
{
	for (int i = 0; i < nsockets; i++)
	{
		struct sockaddr_storage local,
					peer;
		socklen_t	len = sizeof(local);
		char		ip[INET6_ADDRSTRLEN];
		const void *in;

		if (getsockname(sockets[i].fd, (struct sockaddr *) &local, &len) != 0 ||
			port_of(&local) != local_port)
			continue;
		len = sizeof(peer);
		if (getpeername(sockets[i].fd, (struct sockaddr *) &peer, &len) != 0 ||
			port_of(&peer) != peer_port)
			continue;
		in = peer.ss_family == AF_INET ? (const void *) &((struct sockaddr_in *) &peer)->sin_addr :
			(const void *) &((struct sockaddr_in6 *) &peer)->sin6_addr;
		if (inet_ntop(peer.ss_family, in, ip, sizeof(ip)) && strcmp(ip, peer_ip) == 0)
			return &sockets[i];
	}
	return NULL;
}

/* What waits on a socket, not looking inside: a byte, the server's close, or nothing. */
static ConnRefusal
judge_socket(curl_socket_t fd)
{
	char		c;
	ssize_t		n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n > 0)
		return CONN_UNSOLICITED;
	if (n == 0)
		return CONN_CLOSED;
	return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? CONN_TAKEN : CONN_CLOSED;
}

/*
 * Read what waits on a TLS connection through OpenSSL, without taking it.
 * curl's own BIOs work only inside curl's calls on that connection, so the
 * socket is read here through a socket BIO of our own, put in their place
 * for the time of one SSL_peek (it may write too: a KeyUpdate's answer).
 * A session ticket is taken in passing (curl does not keep it then).
 */
static ConnRefusal
peek_through_tls(SSL *ssl, curl_socket_t fd)
{
	BIO		   *curl_r = SSL_get_rbio(ssl);
	BIO		   *curl_w = SSL_get_wbio(ssl);
	BIO		   *sock = BIO_new_socket(fd, BIO_NOCLOSE);
	char		c;
	int			n,
				err;
	bool		partial;

	if (sock == NULL || curl_r == NULL || curl_w == NULL)
	{
		BIO_free(sock);
		return CONN_UNCLEAR;
	}
	/* one reference for each slot the BIOs leave and come back to */
	BIO_up_ref(curl_r);
	BIO_up_ref(curl_w);
	BIO_up_ref(sock);
	SSL_set0_rbio(ssl, sock);
	SSL_set0_wbio(ssl, sock);
	ERR_clear_error();
	n = SSL_peek(ssl, &c, 1);
	err = n > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl, n);
	partial = SSL_has_pending(ssl);
	SSL_set0_rbio(ssl, curl_r);
	SSL_set0_wbio(ssl, curl_w);
	ERR_clear_error();

	if (n > 0)
		return CONN_UNSOLICITED;
	if (err == SSL_ERROR_WANT_READ)
		return partial ? CONN_UNCLEAR : CONN_TAKEN;
	return CONN_CLOSED;			/* close_notify, or broken */
}

static ConnRefusal
judge_tls(SSL *ssl, curl_socket_t fd, bool direct)
{
	ConnRefusal raw;

	if (SSL_pending(ssl) > 0)
		return CONN_UNSOLICITED;
	/* through a TLS proxy the socket carries the proxy's records */
	if (!direct)
		return SSL_has_pending(ssl) ? CONN_UNCLEAR : CONN_TAKEN;
	raw = judge_socket(fd);
	if (!SSL_has_pending(ssl) && raw != CONN_UNSOLICITED)
		return raw;
	return peek_through_tls(ssl, fd);
}

/* The scheme, host and port of a URL, as far as they go. */
static void
endpoint_of(const char *url, char *buf)
{
	const char *p = strstr(url, "://");
	size_t		len = p ? (size_t) (p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);

	len = Min(len, ENDPOINT_LEN - 1);
	memcpy(buf, url, len);
	buf[len] = '\0';
}

/* No HTTP/1.1 connection to the server of this URL is reused for a while. */
static void
spoil(const char *url)
{
	char		endpoint[ENDPOINT_LEN];
	TimestampTz now = GetCurrentTimestamp();
	int			slot = 0;

	endpoint_of(url, endpoint);
	for (int i = 0; i < MAX_SPOILT; i++)
	{
		if (strcmp(spoilt[i].endpoint, endpoint) == 0)
		{
			slot = i;
			break;
		}
		if (spoilt[i].until < spoilt[slot].until)
			slot = i;			/* the first to expire makes room */
	}
	strlcpy(spoilt[slot].endpoint, endpoint, ENDPOINT_LEN);
	spoilt[slot].until = TimestampTzPlusMilliseconds(now, SPOILT_MS);
}

/* Whether HTTP/1.1 connections to the server of this URL are not to be reused. */
bool
claude_conn_spoilt(const char *url)
{
	char		endpoint[ENDPOINT_LEN];
	TimestampTz now = GetCurrentTimestamp();

	endpoint_of(url, endpoint);
	for (int i = 0; i < MAX_SPOILT; i++)
		if (spoilt[i].until > now && strcmp(spoilt[i].endpoint, endpoint) == 0)
			return true;
	return false;
}

static bool
is_h2(SSL *ssl)
{
	const unsigned char *alpn = NULL;
	unsigned int len = 0;

	SSL_get0_alpn_selected(ssl, &alpn, &len);
	return len == 2 && memcmp(alpn, "h2", 2) == 0;
}

/*
 * libcurl starts a request over on a new connection by itself when the one
 * it used died before an answer (a stale keep-alive connection, an HTTP/2
 * stream the server refused).  Once a byte of the body went out it first
 * asks to rewind the body, and is refused (http.c); so here nothing of the
 * body went out, but curl may have read some of it: it reads it again.
 */
static bool
rewind_unsent(Transfer *t)
{
	if (t->sent == 0)
		return true;
	if (t->in != NULL && fseeko(t->in, 0, SEEK_SET) != 0)
		return false;
	t->sent = 0;
	return true;
}

/*
 * CURLOPT_PREREQFUNCTION: a connection is ready for the request, which is
 * not sent yet.
 */
int
claude_conn_prereq(void *clientp, char *primary_ip, char *local_ip,
				   int primary_port, int local_port)
{
	Transfer   *t = clientp;
	struct curl_tlssessioninfo *tls = NULL;
	SSL		   *ssl = NULL;
	OurSocket  *sock;
	ConnRefusal verdict;

	t->on_connection = GetCurrentTimestamp();
	if (!rewind_unsent(t))
	{
		t->refused = CONN_RESEND;
		return CURL_PREREQFUNC_ABORT;
	}
	if (curl_easy_getinfo(t->easy, CURLINFO_TLS_SSL_PTR, &tls) == CURLE_OK && tls &&
		tls->backend == CURLSSLBACKEND_OPENSSL)
		ssl = tls->internals;
	if ((t->h2 = ssl != NULL && is_h2(ssl)))
		return CURL_PREREQFUNC_OK;
	sock = find_socket(primary_ip, primary_port, local_port);
	/* a new connection holds nothing yet but the handshake's leftovers */
	if (sock == NULL || !sock->used)
	{
		if (sock)
			sock->used = true;
		return CURL_PREREQFUNC_OK;
	}
	verdict = ssl ? judge_tls(ssl, sock->fd,
							  t->req.proxy == NULL || pg_strncasecmp(t->req.proxy, "https:", 6) != 0) :
		judge_socket(sock->fd);
	if (verdict == CONN_TAKEN)
		return CURL_PREREQFUNC_OK;
	if (verdict == CONN_UNSOLICITED)
		spoil(t->req.url);
	t->refused = verdict;
	return CURL_PREREQFUNC_ABORT;
}
