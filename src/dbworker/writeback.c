/*
 * writeback.c
 *		A reply written back to its row by primary key, as a role: one row
 *		(trigger jobs, and a Message Batch chunk that failed) or many at
 *		once (a Message Batch chunk).  Callers: jobs.c, batch_apply.c.
 *
 * The key is the jsonb object the row's key printed to, its members the
 * key columns.  Every statement is written as the role restricted, with
 * every name qualified and every operator named by its schema, so the
 * table's privileges, row security, triggers and checks apply as to the
 * role's own UPDATE and nothing in its search_path can step in.
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/catalog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "common/template.h"
#include "common/json.h"
#include "common/security.h"
#include "dbworker/writeback.h"

/*
 * The UPDATE of the last (table, column, role, key columns, inputs) written
 * back, prepared once and kept across transactions until the table's
 * relcache entry is invalidated (ALTER TABLE, a new policy, a GRANT), when
 * its text (names, key types) may no longer hold.  Trigger jobs come one
 * or two a transaction: preparing each time cost a catalog query a row.
 */
static struct
{
	bool		valid;
	Oid			relid;
	Oid			role;
	NameData	target;
	char	   *keys;			/* the key columns, as the job names them */
	char	   *inputs;			/* the inputs it checks, or NULL */
	SPIPlanPtr	plan;
} pk_update;

static void
pk_update_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == pk_update.relid)
		pk_update.valid = false;
}

static void
pk_key_found(void *arg, const char *key, int keylen, const char *value, Size len)
{
	appendBinaryStringInfo((StringInfo) arg, key, keylen);
	appendStringInfoChar((StringInfo) arg, ',');
}

/* The keys of a job's primary key object, as they stand. */
static char *
pk_keys(const char *pkjson)
{
	StringInfoData keys;

	initStringInfo(&keys);
	(void) claude_json_members(pkjson, strlen(pkjson), pk_key_found, &keys);
	return keys.data;
}

/* OPERATOR(schema.=) of a type's default equality, immune to search_path */
static char *
equality_operator(Oid type, const char *relname)
{
	TypeCacheEntry *tc = lookup_type_cache(type, TYPECACHE_EQ_OPR);
	HeapTuple	tup;
	Form_pg_operator op;
	char	   *result;

	if (!OidIsValid(tc->eq_opr) ||
		!HeapTupleIsValid(tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(tc->eq_opr))))
		elog(ERROR, "claude: the key of %s has a type with no equality operator", relname);
	op = (Form_pg_operator) GETSTRUCT(tup);
	result = psprintf("OPERATOR(%s.%s)", quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tup);
	return result;
}

/*
 * The check that a row r still holds the prompt inputs (columns) it was
 * asked with, their MD5 in v.h, as trigger jobs check theirs.
 */
static char *
inputs_check(char **columns, int ncolumns)
{
	return psprintf(" AND (v.h IS NULL OR %s OPERATOR(pg_catalog.=) v.h)",
					claude_inputs_md5_of_columns("r", columns, ncolumns));
}

/*
 * UPDATE table SET target = $1::type WHERE key = ($2->>'key')::type ...;
 * or, for many rows, the same from the arrays $1 (values) and $2 (keys),
 * where the row's inputs still have the MD5 of $3 (NULL: unchecked),
 * returning the ordinal of each row written.
 */
static char *
update_statement(Oid relid, const char *relname, const char *target, Datum pk, bool many,
				 const char *also)
{
	StringInfoData sql;
	Oid			target_type;
	int32		target_typmod;
	Oid			target_coll;
	SPITupleTable *keys;
	char	   *table;

	if (SPI_execute_with_args("SELECT k, a.atttypid, a.atttypmod "
							  "FROM pg_catalog.jsonb_object_keys($1::pg_catalog.jsonb) k "
							  "JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) $2 "
							  "AND a.attname OPERATOR(pg_catalog.=) k::pg_catalog.name "
							  "AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
							  2, (Oid[]) {TEXTOID, OIDOID},
							  (Datum[]) {pk, ObjectIdGetDatum(relid)},
							  NULL, true, 0) != SPI_OK_SELECT || SPI_processed == 0)
		elog(ERROR, "claude: the key %s does not name columns of %s",
			 TextDatumGetCString(pk), relname);
	keys = SPI_tuptable;
	get_atttypetypmodcoll(relid, get_attnum(relid, target),
						  &target_type, &target_typmod, &target_coll);
	table = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), relname);
	initStringInfo(&sql);
	if (many)
		/* both sides qualified: the table may have columns named c, k or o */
		appendStringInfo(&sql, "UPDATE %s AS r SET %s = %s FROM (SELECT u.c, "
						 "u.k::pg_catalog.jsonb AS k, u.h, u.o FROM ROWS FROM ("
						 "pg_catalog.unnest($1::pg_catalog.text[]), "
						 "pg_catalog.unnest($2::pg_catalog.text[]), "
						 "pg_catalog.unnest($3::pg_catalog.text[])) "
						 "WITH ORDINALITY u(c, k, h, o)) v WHERE ",
						 table, quote_identifier(target),
						 claude_assigned_text("v.c", target_type, target_typmod));
	else
		appendStringInfo(&sql, "UPDATE %s SET %s = %s WHERE ", table, quote_identifier(target),
						 claude_assigned_text("$1", target_type, target_typmod));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *key = SPI_getvalue(keys->vals[i], keys->tupdesc, 1);
		Oid			type = DatumGetObjectId(SPI_getbinval(keys->vals[i], keys->tupdesc, 2, &isnull));
		int32		typmod = DatumGetInt32(SPI_getbinval(keys->vals[i], keys->tupdesc, 3, &isnull));

		appendStringInfo(&sql, "%s%s%s %s (%s OPERATOR(pg_catalog.->>) %s)::%s",
						 i > 0 ? " AND " : "", many ? "r." : "", quote_identifier(key),
						 equality_operator(type, relname),
						 many ? "v.k" : "$2::pg_catalog.jsonb", quote_literal_cstr(key),
						 format_type_extended(type, typmod,
											  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
	}
	if (many)
		appendStringInfo(&sql, "%s RETURNING v.o", also);
	return sql.data;
}


/* Prepared as role: privileges and row security are role's, at plan time too. */
static SPIPlanPtr
prepare_update(Oid relid, const char *relname, const char *target, Datum pk, Oid role,
			   const char *inputs)
{
	static bool registered = false;
	char	   *keys = pk_keys(TextDatumGetCString(pk));
	char	   *sql;
	SPIPlanPtr	plan;

	if (pk_update.valid && pk_update.relid == relid && pk_update.role == role &&
		strcmp(NameStr(pk_update.target), target) == 0 && strcmp(pk_update.keys, keys) == 0 &&
		(inputs == NULL ? pk_update.inputs == NULL :
		 pk_update.inputs != NULL && strcmp(pk_update.inputs, inputs) == 0))
		return pk_update.plan;
	if (!registered)
	{
		CacheRegisterRelcacheCallback(pk_update_relcache_callback, (Datum) 0);
		registered = true;
	}
	pk_update.valid = false;
	if (pk_update.plan)
		SPI_freeplan(pk_update.plan);
	pk_update.plan = NULL;
	sql = update_statement(relid, relname, target, pk, false, NULL);
	/* the row must still hold the inputs its reply answers */
	if (inputs != NULL)
		sql = psprintf("%s AND %s OPERATOR(pg_catalog.=) $3", sql, inputs);
	plan = SPI_prepare(sql, 3, (Oid[]) {TEXTOID, TEXTOID, TEXTOID});
	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "claude: could not prepare the update of %s: %s", relname,
			 SPI_result_code_string(SPI_result));
	if (pk_update.keys)
		pfree(pk_update.keys);
	if (pk_update.inputs)
		pfree(pk_update.inputs);
	pk_update.plan = plan;
	pk_update.relid = relid;
	pk_update.role = role;
	namestrcpy(&pk_update.target, target);
	pk_update.keys = MemoryContextStrdup(TopMemoryContext, keys);
	pk_update.inputs = inputs ? MemoryContextStrdup(TopMemoryContext, inputs) : NULL;
	pk_update.valid = true;
	return pk_update.plan;
}

/*
 * A reply goes only to an ordinary table of a user's: never a catalog (a
 * row that names pg_authid is not one the extension wrote), a view or
 * another session's temporary table.  Returns the table's name, or NULL
 * when it is gone.
 */
static char *
writable_target(Oid relid, const char *target)
{
	HeapTuple	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Form_pg_class rel;
	char	   *name;
	bool		ok;

	if (!HeapTupleIsValid(tp))
		return NULL;
	rel = (Form_pg_class) GETSTRUCT(tp);
	name = pstrdup(NameStr(rel->relname));
	ok = (rel->relkind == RELKIND_RELATION || rel->relkind == RELKIND_PARTITIONED_TABLE) &&
		rel->relpersistence != RELPERSISTENCE_TEMP &&
		!IsCatalogNamespace(rel->relnamespace) && !IsToastNamespace(rel->relnamespace) &&
		relid >= FirstNormalObjectId;
	ReleaseSysCache(tp);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("claude writes replies only to ordinary tables, not to \"%s\"", name),
				 errdetail("Column \"%s\" was not written.", target)));
	return name;
}

/*
 * Set target of the row whose primary key is the jsonb object pkjson (the
 * key columns are the object's keys), as role, restricted: the table's
 * privileges, row security, triggers and checks apply as to role's own
 * UPDATE.  Returns the rows updated (0: gone, or hidden from role), or -1
 * when the table is gone.
 */
int64
claude_update_by_pk(Oid relid, const char *target, const char *pkjson, text *value,
					Oid role, const char *inputs, const char *inputs_md5)
{
	char	   *relname = writable_target(relid, target);
	Datum		pk = CStringGetTextDatum(pkjson);
	SPIPlanPtr	plan;
	ClaudeRoleSwitch as_role;

	if (relname == NULL)
		return -1;
	claude_become(&as_role, role, true);
	if (inputs_md5 == NULL)
		inputs = NULL;
	plan = prepare_update(relid, relname, target, pk, role, inputs);
	if (SPI_execute_plan(plan, (Datum[]) {PointerGetDatum(value), pk,
		inputs ? CStringGetTextDatum(inputs_md5) : (Datum) 0},
						 inputs ? NULL : "  n", false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "claude: could not write a reply back to %s", relname);
	claude_unbecome(&as_role);
	return (int64) SPI_processed;
}

/*
 * Set target of n rows at once, values[i] (text) to the row keyed pks[i]
 * (jsonb text, every key naming the same columns), as role, restricted,
 * in one statement, each only where the row's inputs (the columns named
 * by inputs) still have the MD5 md5s[i] (a text, or NULL: unchecked);
 * written[i] says whether row i was (not: gone, hidden from role, its
 * inputs changed).  Returns false, writing nothing, when the table is
 * gone.  An error of any row (a check, a trigger) is the statement's: the
 * caller falls back to one row a statement.
 */
bool
claude_update_by_pks(Oid relid, const char *target, int n, Datum *values, Datum *pks,
					 Datum *md5s, char **inputs, int ninputs, Oid role, bool *written)
{
	char	   *relname = writable_target(relid, target);
	ClaudeRoleSwitch as_role;
	char	   *sql;
	Datum		args[3];
	bool	   *md5_nulls = palloc(n * sizeof(bool));

	if (relname == NULL)
		return false;
	memset(written, 0, n * sizeof(bool));
	if (n == 0)
		return true;
	for (int i = 0; i < n; i++)
		md5_nulls[i] = md5s[i] == (Datum) 0;
	claude_become(&as_role, role, true);
	sql = update_statement(relid, relname, target, pks[0], true, inputs_check(inputs, ninputs));
	args[0] = PointerGetDatum(construct_array(values, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(pks, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(md5s, md5_nulls, 1, (int[]) {n}, (int[]) {1},
												 TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_execute_with_args(sql, 3, (Oid[]) {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID}, args, NULL,
							  false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claude: could not write replies back to %s", relname);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		o = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													SPI_tuptable->tupdesc, 1, &isnull));

		if (!isnull && o >= 1 && o <= n)
			written[o - 1] = true;
	}
	claude_unbecome(&as_role);
	return true;
}
