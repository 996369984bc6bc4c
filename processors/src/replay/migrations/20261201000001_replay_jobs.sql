-- Replay jobs (owned by processors/src/replay/jobs.rs): the spec and plan fixed at
-- creation, the checkpoint per partition and the counters, both moved together after
-- the target acknowledged a batch, and a lease so that one runner works a job at a time.
CREATE TABLE IF NOT EXISTS replay_jobs (
    id               text PRIMARY KEY,
    spec             jsonb NOT NULL,
    plan             jsonb NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    cancel_requested boolean NOT NULL DEFAULT false,
    checkpoint       jsonb NOT NULL DEFAULT '{}'::jsonb,
    records_read     bigint NOT NULL DEFAULT 0,
    records_written  bigint NOT NULL DEFAULT 0,
    records_skipped  bigint NOT NULL DEFAULT 0,
    dead_letters     bigint NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_until      timestamptz,
    error            text,
    created_by       text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS replay_jobs_runnable ON replay_jobs (created_at) WHERE state IN ('pending', 'running');

-- What operators did with dead letters (a Kafka record cannot be deleted one by one):
-- redriven (by which replay job) or purged. `switchboard dlq list` hides purged ones.
CREATE TABLE IF NOT EXISTS dead_letter_marks (
    topic      text NOT NULL,
    partition  int NOT NULL,
    "offset"   bigint NOT NULL,
    state      text NOT NULL CHECK (state IN ('redriven', 'purged')),
    job_id     text,
    marked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
