-- model and max_tokens come from the settings when absent
SELECT r->>'model' AS model, r->'content'->0->>'text' AS text, r->>'type' AS type
FROM claude_messages('{"messages": [{"role": "user", "content": "Hello"}]}') AS r;

-- multi-turn, system blocks, content blocks, cache_control pass through
SELECT claude_messages('{
  "model": "claude-haiku-4-5", "max_tokens": 50, "temperature": 0,
  "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
  "messages": [
    {"role": "user", "content": "First"},
    {"role": "assistant", "content": "Ok"},
    {"role": "user", "content": [{"type": "text", "text": "Second"}]}
  ]}')->'content'->0->>'text' AS text;

-- key order and whitespace do not matter
SELECT claude_messages('{"messages":[{"content":"ordered","role":"user"}],"max_tokens":7}')
       ->'content'->0->>'text' AS text;

-- a NULL request is NULL
SELECT claude_messages(NULL) IS NULL AS is_null;

-- invalid requests fail before any request
\set VERBOSITY terse
SELECT claude_messages('[]');
SELECT claude_messages('"text"');
SELECT claude_messages('{}');
SELECT claude_messages('{"messages": []}');
SELECT claude_messages('{"messages": {}}');
SELECT claude_messages('{"messages": ["hi"]}');
SELECT claude_messages('{"messages": [{"role": "system", "content": "x"}]}');
SELECT claude_messages('{"messages": [{"role": "user"}]}');
SELECT claude_messages('{"messages": [{"role": "user", "content": 5}]}');
SELECT claude_messages('{"messages": [{"role": "user", "content": "x"}], "model": ""}');
SELECT claude_messages('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}');
SELECT claude_messages('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}');
SELECT claude_messages('{"messages": [{"role": "user", "content": "x"}], "temperature": 3}');
SELECT claude_messages('{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}');
SELECT claude_messages('{"messages": [');
\set VERBOSITY default
