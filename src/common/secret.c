/*
 * secret.c
 *		The API key: its sources, and redaction of log lines and stored errors
 *		that would carry it.  Callers: the call path, errors.c, _PG_init.
 *
 * The key is looked up for every request, in this order: claude.api_key,
 * the file named by claude.api_key_file, the postmaster's
 * ANTHROPIC_API_KEY.  The file is re-read whenever it changes on disk, so
 * rotating it (with or without a reload) takes effect for the next request
 * while requests already sent finish with the old key.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#include "common/errors.h"
#include "common/guc.h"
#include "common/secret.h"

#define MAX_KEY_FILE_SIZE 4096

static emit_log_hook_type prev_emit_log_hook = NULL;

/* the key file as last read, recognised by path, inode, size and mtime */
static char *file_key = NULL;
static char *file_key_path = NULL;
static struct stat file_key_stat;

static char *
trim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
					   end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

static void
forget_file_key(void)
{
	if (file_key)
	{
		explicit_bzero(file_key, strlen(file_key));
		pfree(file_key);
	}
	if (file_key_path)
		pfree(file_key_path);
	file_key = NULL;
	file_key_path = NULL;
}

static const char *
read_key_file(const char *path)
{
	struct stat st;
	FILE	   *f;
	char		buf[MAX_KEY_FILE_SIZE + 1];
	size_t		n;

	if (stat(path, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the file named by claude.api_key_file: %m")));

	if (file_key && strcmp(file_key_path, path) == 0 &&
		st.st_ino == file_key_stat.st_ino && st.st_size == file_key_stat.st_size &&
		st.st_mtime == file_key_stat.st_mtime &&
		st.st_ctime == file_key_stat.st_ctime)
		return file_key;

	forget_file_key();
	if (st.st_size > MAX_KEY_FILE_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the file named by claude.api_key_file is larger than %d bytes",
						MAX_KEY_FILE_SIZE)));
	f = AllocateFile(path, "r");
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the file named by claude.api_key_file: %m")));
	n = fread(buf, 1, MAX_KEY_FILE_SIZE, f);
	FreeFile(f);
	buf[n] = '\0';

	file_key = MemoryContextStrdup(TopMemoryContext, trim(buf));
	file_key_path = MemoryContextStrdup(TopMemoryContext, path);
	file_key_stat = st;
	explicit_bzero(buf, sizeof(buf));
	return file_key;
}

/*
 * The key for the next request, as a palloc'd string.  Fails before any
 * request when none is configured.
 */
char *
claude_resolve_api_key(void)
{
	const char *key = NULL;

	if (claude_api_key_setting && claude_api_key_setting[0])
		key = claude_api_key_setting;
	else if (claude_api_key_file && claude_api_key_file[0])
		key = read_key_file(claude_api_key_file);
	else
		key = getenv("ANTHROPIC_API_KEY");

	if (key == NULL || key[0] == '\0')
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_AUTH),
				 errmsg("no Claude API key is configured"),
				 errhint("Put the key in a file readable by the server and set claude.api_key_file to its path, then reload.")));
	if (strpbrk(key, "\r\n") != NULL)
		ereport(ERROR,
				(errcode(CLAUDE_ERRCODE_AUTH),
				 errmsg("the Claude API key contains a line break")));
	return pstrdup(key);
}

/* ---- log redaction ---- */

#define NSECRETS	3
#define MIN_SECRET	8			/* shorter values are no key worth hiding */

/* Every key this process may send. */
static void
key_list(const char *secrets[NSECRETS])
{
	secrets[0] = claude_api_key_setting;
	secrets[1] = file_key;
	secrets[2] = getenv("ANTHROPIC_API_KEY");
}

static char *
replace_all(const char *s, const char *secret)
{
	StringInfoData buf;
	size_t		len = strlen(secret);
	const char *p;

	initStringInfo(&buf);
	while ((p = strstr(s, secret)) != NULL)
	{
		appendBinaryStringInfo(&buf, s, p - s);
		appendStringInfoString(&buf, "********");
		s = p + len;
	}
	appendStringInfoString(&buf, s);
	return buf.data;
}

static char *
redact_keys(char *text)
{
	const char *secrets[NSECRETS];

	key_list(secrets);
	for (int i = 0; i < NSECRETS; i++)
		if (secrets[i] && strlen(secrets[i]) >= MIN_SECRET && strstr(text, secrets[i]))
			text = replace_all(text, secrets[i]);
	return text;
}

static const char *
find_setting_name(const char *s)
{
	for (; *s; s++)
		if (pg_strncasecmp(s, "claude.api_key", 14) == 0 &&
			pg_strncasecmp(s + 14, "_file", 5) != 0)
			return s;
	return NULL;
}

/*
 * Whatever follows a mention of claude.api_key may be its value
 * ("parameter ... changed to", a logged SET or ALTER SYSTEM): cut it.
 */
static char *
redact_text(char *text)
{
	const char *at;

	if (text == NULL)
		return NULL;

	if ((at = find_setting_name(text)) != NULL)
	{
		const char *end = at + 14;

		if (*end == '"' || *end == '\'')
			end++;
		/* the name alone ("permission denied to set ...") is harmless */
		if (strspn(end, " \t\n;") != strlen(end))
			text = psprintf("%.*s [value redacted]", (int) (end - text), text);
	}

	return redact_keys(text);
}

/*
 * A copy of text fit to be stored or shown: every key replaced, a tail
 * that could be the start of a key (text cut by someone else) dropped, and
 * at most maxlen bytes (0: no limit), cut at a character boundary.
 */
char *
claude_redact(const char *text, int maxlen)
{
	char	   *r;
	const char *secrets[NSECRETS];
	int			len;

	if (text == NULL)
		return NULL;
	r = redact_keys(pstrdup(text));
	len = strlen(r);
	key_list(secrets);
	for (int i = 0; i < NSECRETS; i++)
	{
		int			slen = secrets[i] ? strlen(secrets[i]) : 0;

		if (slen < MIN_SECRET)
			continue;
		for (int k = Min(slen - 1, len); k >= 4; k--)
		{
			if (strncmp(r + len - k, secrets[i], k) == 0)
			{
				r = psprintf("%.*s********", len - k, r);
				len = strlen(r);
				break;
			}
		}
	}
	if (maxlen > 0 && len > maxlen)
		r[pg_mbcliplen(r, len, maxlen)] = '\0';
	return r;
}

static void
claude_emit_log_hook(ErrorData *edata)
{
	edata->message = redact_text(edata->message);
	edata->detail = redact_text(edata->detail);
	edata->detail_log = redact_text(edata->detail_log);
	edata->context = redact_text(edata->context);
	if (debug_query_string && find_setting_name(debug_query_string))
		edata->hide_stmt = true;

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
claude_install_log_redaction(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = claude_emit_log_hook;
}
