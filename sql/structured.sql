-- Structured output, classification, token counting, models and images,
-- against the mock (it fills a forced tool's input from the user text).
SET claude.cache = off;

-- claude_extract: the tool input, as jsonb matching the schema
SELECT claude_extract('Alice is 30',
  '{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}');
-- "type": "object" may be left out
SELECT claude_extract('x', '{"properties": {"ok": {"type": "boolean"}}}', instructions => 'Be exact.');
SELECT claude_extract(NULL, '{"type": "object"}') IS NULL AS null_input;
-- rejected before any request
SELECT claude_extract('x', NULL);
SELECT claude_extract('x', '[1, 2]');
SELECT claude_extract('x', '{"type": "string"}');
SELECT claude_extract('x', '{"type": "object"');
SELECT claude_extract('x', '{"type": "object"}', model => '');
-- a model without structured output (the mock does not know this one)
-- gets a strict tool; a reply without the tool call is an error that gives
-- the stop reason
SELECT claude_extract('[[mock:no_tool]] x', '{"type": "object"}', model => 'claude-mock');
-- the reply is checked against the whole schema: the API is sent no bound,
-- the mock obeys the one in the description, or breaks it when told
SELECT claude_extract('Great', '{"properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["rating"]}');
SELECT claude_extract('[[mock:schema_break=bound]] Great', '{"properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["rating"]}');
SELECT claude_extract('[[mock:schema_break=missing]] Great', '{"properties": {"rating": {"type": "integer"}}, "required": ["rating"]}', model => 'claude-mock');
-- a schema the check cannot read is refused before anything is sent
SELECT claude_extract('x', '{"properties": {"a": {"$ref": "#/b"}}}');
SELECT claude_extract('x', '{"properties": {"a": {"type": "integer", "maximum": "5"}}}');

-- claude_classify: exactly one of the labels
SELECT claude_classify('The app crashes on start: surely a bug', ARRAY['bug', 'question', 'request']);
SELECT claude_classify('nothing in particular', ARRAY['bug', 'question']);
SELECT claude_classify('x', ARRAY['only']);
SELECT claude_classify(NULL, ARRAY['a']) IS NULL AS null_input;
SELECT claude_classify('x', NULL);
SELECT claude_classify('x', ARRAY[]::text[]);
SELECT claude_classify('x', ARRAY['a', 'b', 'a']);
SELECT claude_classify('x', ARRAY['a', NULL]);
SELECT claude_classify('x', ARRAY['a', '']);
SELECT claude_classify('x', ARRAY[['a'], ['b']]);
SELECT claude_classify('[[mock:schema_break=label]] x', ARRAY['a', 'b']);

-- token counting
SELECT claude_count_tokens('hello world');
SELECT claude_count_tokens('hello world', system => 'Answer in French.') > claude_count_tokens('hello world') AS system_counts;
SELECT claude_count_tokens('');
SELECT claude_count_tokens(NULL) IS NULL AS null_prompt;

-- models
SELECT id, display_name, created_at FROM claude_models() ORDER BY created_at DESC, id;

-- images
SELECT claude_image('\x89504e470d0a1a0a00'::bytea, 'image/png');
SELECT claude_image('\xffd8ffe0'::bytea, 'image/jpeg')->'source'->>'media_type' AS jpeg;
SELECT claude_image('\x474946383961'::bytea, 'image/gif')->'source'->>'data' AS gif;
SELECT claude_image('\x52494646000000005745425056503820'::bytea, 'image/webp') IS NOT NULL AS webp;
SELECT claude_image('\x00'::bytea, 'image/png');
SELECT claude_image('\x89504e470d0a1a0a'::bytea, 'image/bmp');
SELECT claude_image(''::bytea, 'image/png');
SELECT claude_image(NULL, 'image/png') IS NULL AS null_data;
-- an image block goes into claude_messages
SELECT claude_messages(jsonb_build_object('messages', jsonb_build_array(jsonb_build_object(
         'role', 'user', 'content', jsonb_build_array(
           claude_image('\x89504e470d0a1a0a00'::bytea, 'image/png'),
           jsonb_build_object('type', 'text', 'text', 'What is in this image?'))))))
       -> 'content' -> 0 ->> 'text' AS reply;

-- cache_control passes through claude_messages untouched
SELECT claude_messages('{"system": [{"type": "text", "text": "Shared instructions.", "cache_control": {"type": "ephemeral"}}],
                         "messages": [{"role": "user", "content": "hi"}]}') -> 'usage' ? 'cache_creation_input_tokens' AS cache_written;
