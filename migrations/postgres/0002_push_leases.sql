-- Push worker leases (guarantee 6). The SQLite twin is
-- migrations/sqlite/0002_push_leases.sql.
--
-- A worker claims due jobs (`status = 'pending' AND next_attempt_at <= now`,
-- `FOR UPDATE SKIP LOCKED`) by stamping each with a fresh `claim_token` and
-- moving `next_attempt_at` (and `locked_until`) to the end of its lease. A
-- worker killed mid-send therefore loses no job: once the lease has passed
-- the job is due again and another worker claims it. Finishing a job
-- (sent, failed, rescheduled) needs the claim token, so a worker whose
-- lease ran out cannot overwrite the outcome of the one that took over.
ALTER TABLE push_outbox ADD COLUMN claim_token text NULL;

-- Device tokens this job is done with (sent, pruned, or failed for good),
-- as a JSON array of strings: a retry sends only to the others.
ALTER TABLE push_outbox ADD COLUMN done_tokens text NOT NULL DEFAULT '[]';
