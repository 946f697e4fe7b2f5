-- The worker's ledger batch on PostgreSQL: fragments of ONE statement, joined by
-- postburner_py/store/postgres_batch.py as "WITH close_ctes, admit_ctes admit_answer"
-- ($1: the closings, $2: the deliveries, as JSON arrays; $3: the allow-list's rules;
-- $4: the global catch-up window in seconds, a schedule's own in its snapshot wins). {allowed} is replaced by the allow-list condition.

-- name: close_ctes
-- Settlement: close the history rows, dispatch rows and one-off rows of finished attempts ($1).
-- Each UPDATE reaches its rows through "key = ANY(ARRAY(SELECT ... FROM the batch))", an index
-- condition on the primary or unique key, and guards the status with IS NOT DISTINCT FROM
-- (no status index: their dead entries pile up under a busy worker until vacuum).
closed_history AS (
    UPDATE postburner_job_history AS h
    SET status = i.status, worker_id = i.worker_id, finished_at = i.finished_at,
        execution_time_ms = i.execution_time_ms, started_at = i.started_at,
        queue_time_ms = i.queue_time_ms, results = coalesce(i.results, 'null'::jsonb),
        error_message = i.error_message, error_stack = i.error_stack
    FROM jsonb_to_recordset($1::jsonb) AS i(
        history_id bigint, status text, worker_id text, finished_at timestamptz,
        execution_time_ms float8, started_at timestamptz, queue_time_ms float8,
        results jsonb, error_message text, error_stack text)
    WHERE h.id = ANY(ARRAY(
            SELECT (e ->> 'history_id')::bigint FROM jsonb_array_elements($1::jsonb) e))
      AND h.id = i.history_id AND h.status IS NOT DISTINCT FROM 'started'
    RETURNING h.id
), closed_dispatches AS (
    UPDATE postburner_dispatches AS d
    SET status = coalesce(i.final_status, d.status),
        lease_expires_at = CASE WHEN i.final_status IS NULL THEN i.finished_at END,
        updated_at = i.finished_at,
        running_key = CASE WHEN i.final_status IS NULL THEN d.running_key END
    FROM jsonb_to_recordset($1::jsonb) AS i(
        key text, fire_time timestamptz, attempt int, final_status text,
        finished_at timestamptz)
    WHERE d.key = ANY(ARRAY(SELECT e ->> 'key' FROM jsonb_array_elements($1::jsonb) e))
      AND d.key = i.key AND d.fire_time = i.fire_time
      AND d.status IS NOT DISTINCT FROM 'dispatched' AND d.attempt = i.attempt
    RETURNING d.id
), closed_one_offs AS (
    UPDATE postburner_delayed_jobs AS j
    SET status = i.delayed_status, updated_at = i.finished_at
    FROM jsonb_to_recordset($1::jsonb) AS i(
        delayed_id bigint, delayed_status text, finished_at timestamptz)
    WHERE j.id = ANY(ARRAY(
            SELECT (e ->> 'delayed_id')::bigint FROM jsonb_array_elements($1::jsonb) e))
      AND j.id = i.delayed_id AND j.status IS NOT DISTINCT FROM 'pending'
    RETURNING j.id
)

-- name: admit_ctes
-- Admission: lock the rows the deliveries ($2) name, in id order, keep those still live for
-- the body's key and run_at, and claim each (first of a batch only) with its start record,
-- when the allow-list ($3) admits its job class, it is on time (catch-up window $4; an
-- occurrence an operator asked for is never late) and has no jitter. Unless its overlap is
-- allowed, the claim takes its schedule's running slot (running_key, unique): when another
-- occurrence holds it (running, or a dead worker's), nothing is claimed here and the
-- admission's transaction decides by the overlap policy.
input AS (
    SELECT (a.o - 1)::int AS n, i.*
    FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS a(j, o),
         jsonb_to_record(a.j) AS i(
             kind text, id bigint, key text, run_at timestamptz, node_id text,
             now timestamptz, correlation_id text, started_at timestamptz,
             queue_time_ms float8, expires_at timestamptz)
), one_offs AS (
    SELECT i.n, j.id, 'job:' || j.job_id AS key, j.job_id AS job_id, j.run_at,
           j.status, 'pending' AS live_status, j.job_class, j.args, j.kwargs, j.priority,
           j.ttr, j.max_attempts, j.timeout, j.no_retry_on,
           NULL::bigint AS schedule_id, NULL::timestamptz AS next_run_at,
           NULL::jsonb AS cached_schedule, j.queue, j.trace_context, 'allow' AS overlap,
           'schedule' AS trigger, 0::float8 AS jitter
    FROM postburner_delayed_jobs AS j
    JOIN input AS i ON i.kind = 'delayed' AND j.id = i.id
    WHERE j.id = ANY(ARRAY(SELECT id FROM input WHERE kind = 'delayed'))
    ORDER BY j.id
    FOR UPDATE OF j
), executions AS (
    SELECT i.n, e.id, e.cached_schedule ->> 'name' AS key, e.id::text AS job_id,
           e.run_at, e.status, 'scheduled' AS live_status,
           e.cached_schedule ->> 'job_class' AS job_class,
           NULL::jsonb AS args, NULL::jsonb AS kwargs, NULL::bigint AS priority,
           NULL::int AS ttr, s.max_attempts, s.timeout, s.no_retry_on, e.schedule_id,
           e.next_run_at, e.cached_schedule, e.cached_schedule ->> 'queue' AS queue,
           NULL::jsonb AS trace_context,
           coalesce(e.cached_schedule ->> 'overlap', s.overlap, 'allow') AS overlap,
           coalesce(e.cached_schedule ->> 'trigger', 'schedule') AS trigger,
           coalesce((e.cached_schedule ->> 'jitter')::float8, 0) AS jitter
    FROM postburner_schedule_executions AS e
    JOIN input AS i ON i.kind = 'execution' AND e.id = i.id
    LEFT JOIN postburner_schedules AS s ON s.id = e.schedule_id
    WHERE e.id = ANY(ARRAY(SELECT id FROM input WHERE kind = 'execution'))
    ORDER BY e.id
    FOR UPDATE OF e
), found AS (
    SELECT * FROM one_offs UNION ALL SELECT * FROM executions
), fresh AS (
    SELECT DISTINCT ON (f.key, f.run_at)
           f.n, f.key, f.run_at, f.job_class, f.job_id, f.overlap, f.trigger, i.node_id, i.now,
           i.correlation_id, i.started_at, i.queue_time_ms, i.expires_at,
           i.now + make_interval(secs => coalesce(f.ttr, (f.cached_schedule ->> 'ttr')::int, 300))
               AS lease_until
    FROM found AS f
    JOIN input AS i ON i.n = f.n
    WHERE f.status = f.live_status AND f.key = i.key AND f.run_at = i.run_at
      AND {allowed}
      AND f.jitter = 0
      AND (f.live_status = 'pending' OR f.trigger <> 'schedule'
           OR (f.run_at >= i.now - make_interval(secs => coalesce(
                   (f.cached_schedule ->> 'catch_up_window')::float8, $4::float8))
               AND (f.next_run_at IS NULL OR f.next_run_at > i.now)))
    ORDER BY f.key, f.run_at, f.n
), claimed AS (
    INSERT INTO postburner_dispatches
        (key, fire_time, dispatched_at, node_id, status, attempt, lease_expires_at, updated_at,
         trigger, running_key)
    SELECT key, run_at, now, node_id, 'dispatched', 1, lease_until, now, trigger,
           CASE WHEN overlap <> 'allow' THEN key END
    FROM fresh
    ON CONFLICT DO NOTHING
    RETURNING key, fire_time
), started AS (
    INSERT INTO postburner_job_history
        (job_id, correlation_id, task_identifier, schedule_name, status, worker_id, attempt,
         run_at, started_at, queue_time_ms, expires_at, results, trigger)
    SELECT f.job_id, f.correlation_id, f.job_class, f.key, 'started', f.node_id, 1,
           f.run_at, f.started_at, f.queue_time_ms, f.expires_at, 'null'::jsonb, f.trigger
    FROM fresh AS f
    JOIN claimed AS c ON c.key = f.key AND c.fire_time = f.run_at
    RETURNING id, schedule_name, run_at
)

-- name: admit_answer
-- The answer: one row per delivery whose row exists: its number, whether only the admission's
-- transaction can decide it, and the row as one JSON array (instants as epoch microseconds).
SELECT f.n,
       f.status = f.live_status AND f.run_at = i.run_at AND s.id IS NULL AS undecided,
       json_build_array(
           f.id, f.key, f.job_id, (extract(epoch FROM f.run_at) * 1000000)::bigint,
           f.status = f.live_status, f.job_class, f.args, f.kwargs, f.priority, f.ttr,
           f.max_attempts, f.schedule_id,
           (extract(epoch FROM f.next_run_at) * 1000000)::bigint, f.cached_schedule, s.id,
           f.timeout, f.no_retry_on, f.queue, f.trace_context, f.overlap)
FROM found AS f
JOIN input AS i ON i.n = f.n
LEFT JOIN fresh AS x ON x.n = f.n
LEFT JOIN started AS s ON s.schedule_name = x.key AND s.run_at = x.run_at

-- name: session_setup
-- Run once on the ledger's connection: the batch reaches every row through a key; on a young
-- table a sequential scan looks cheaper and the prepared plan keeps it while the table grows.
SET enable_seqscan = off
