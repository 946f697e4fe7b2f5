-- name: ping
-- One round trip: the database answers (status, and the long-running processes at start).
SELECT 1;
