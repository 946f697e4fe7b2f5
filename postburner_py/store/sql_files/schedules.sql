-- name: advisory_lock
-- Wait for one schedule's transaction-scoped advisory lock (PostgreSQL).
SELECT pg_advisory_xact_lock(:key);

-- name: try_advisory_lock
-- Take one schedule's transaction-scoped advisory lock if it is free; true when taken.
SELECT pg_try_advisory_xact_lock(:key);

-- name: try_advisory_locks
-- Take every free advisory lock of an array of keys at once; each key with whether it was taken.
SELECT k, pg_try_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k;

-- name: insert_executions
-- Insert planned executions, already claimed for the put, from one JSON document; the
-- snapshot (cached_schedule) is built from the schedule row exactly as Schedule.snapshot()
-- does, the instants (anchor, starts_at, ends_at) passed in as the UTC ISO-8601 text Python
-- writes. Rows the live unique index refuses are skipped and not returned.
INSERT INTO postburner_schedule_executions (schedule_id, run_at, next_run_at, status,
    enqueued_at, cached_schedule, created_at, updated_at)
SELECT v.schedule_id, v.run_at, v.next_run_at, 'scheduled', :now,
    jsonb_build_object('job_class', s."job_class", 'args', s."args", 'kwargs', s."kwargs",
        'queue', s."queue", 'priority', s."priority", 'ttr', s."ttr",
        'timezone', s."timezone", 'anchor', v.anchor, 'interval', s."interval",
        'interval_unit', s."interval_unit", 'cron', s."cron", 'catch_up', s."catch_up",
        'name', s."name", 'catch_up_window', s."catch_up_window", 'starts_at', v.starts_at,
        'ends_at', v.ends_at, 'dst_gap', s."dst_gap", 'dst_fold', s."dst_fold",
        'jitter', s."jitter"),
    :stamp, :stamp
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
    AS v(schedule_id bigint, run_at timestamptz, next_run_at timestamptz, anchor jsonb,
         starts_at jsonb, ends_at jsonb)
JOIN postburner_schedules AS s ON s.id = v.schedule_id
ON CONFLICT DO NOTHING
RETURNING id, schedule_id, run_at;

-- name: record_puts
-- Store the job ids of one put chunk (one server) on rows still live and still without a
-- job id; returns the ids of the rows that took theirs.
UPDATE postburner_schedule_executions AS e
SET beanstalk_job_id = v.job_id, beanstalk_server_id = :server, updated_at = :stamp
FROM unnest(CAST(:ids AS bigint[]), CAST(:jobs AS bigint[])) AS v(id, job_id)
WHERE e.id = v.id AND e.beanstalk_job_id IS NULL AND e.status IN ('pending', 'scheduled')
RETURNING e.id;
