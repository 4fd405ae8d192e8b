-- The extension is created by pg_regress --load-extension.
SELECT extname, extversion FROM pg_extension WHERE extname = 'claude';
SELECT proname FROM pg_proc WHERE proname LIKE 'claude\_%' ORDER BY 1;
-- the HTTP worker runs (give it a moment after start-up)
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'claude http worker');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'claude http worker';
SHOW claude.default_model;
SHOW claude.default_max_tokens;
SELECT current_setting('claude.base_url') LIKE 'https://127.0.0.1:%' AS mock_configured;
