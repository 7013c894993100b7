-- seriatim: all DDL. Idempotent; applied by `seriatim migrate` and `seriatim up`.

CREATE TABLE IF NOT EXISTS clients (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_hash text NOT NULL,
    admin       boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The mailbox: last_seq is the newest accepted event, done_seq the newest terminal one.
    last_seq    bigint NOT NULL DEFAULT 0,
    done_seq    bigint NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'idle' CHECK (state IN ('idle', 'active', 'suspended')),
    host        text,
    restarts    integer NOT NULL DEFAULT 0,
    policy      text NOT NULL DEFAULT 'skip' CHECK (policy IN ('skip', 'halt')),
    CHECK (0 <= done_seq AND done_seq <= last_seq)
);

CREATE INDEX IF NOT EXISTS clients_backlog ON clients (id) WHERE done_seq < last_seq;
CREATE INDEX IF NOT EXISTS clients_host ON clients (host) WHERE host IS NOT NULL;

CREATE TABLE IF NOT EXISTS events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id       uuid NOT NULL REFERENCES clients (id),
    seq             bigint NOT NULL CHECK (seq > 0),
    type            text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'processing', 'retrying', 'succeeded', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    idempotency_key text,
    request_hash    bytea,
    redrive_of      uuid REFERENCES events (id),
    traceparent     text,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    result          jsonb,
    error           jsonb,
    UNIQUE (client_id, seq)
);

CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key
    ON events (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The outbox: unfinished events never handed to RabbitMQ (finished ones leave it).
DROP INDEX IF EXISTS events_unpublished;
CREATE INDEX IF NOT EXISTS events_outbox ON events (accepted_at)
    WHERE published_at IS NULL AND status NOT IN ('succeeded', 'dead');
CREATE INDEX IF NOT EXISTS events_by_status ON events (client_id, status, seq);

-- Worker processes announce themselves here; a row not seen for a few seconds is a dead worker.
CREATE TABLE IF NOT EXISTS workers (
    id         text PRIMARY KEY,
    hostname   text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- Token signing keys generated on first start when no SERIATIM_JWT_KEY_FILE is given.
CREATE TABLE IF NOT EXISTS signing_keys (
    kid         text PRIMARY KEY,
    private_jwk jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A draining worker finishes its events but takes no new mailboxes.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS draining boolean NOT NULL DEFAULT false;

-- Liveness: a worker is alive while its heartbeat is recent and, when `by_lock`, while the
-- session that sends it still holds the advisory lock (LOCK_CLASS, lock_key): a dead
-- process's session ends at once, so its lock is gone long before its heartbeat is stale.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS lock_key integer;
-- The server that lock is held on (its pg_postmaster_start_time()): a lock taken on another
-- server, or before this one restarted, says nothing about the worker.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS lock_server timestamptz;

CREATE OR REPLACE FUNCTION live_worker_ids(alive_within double precision, by_lock boolean)
RETURNS SETOF text LANGUAGE sql STABLE AS $$
    SELECT w.id FROM workers w
    WHERE w.last_seen > now() - make_interval(secs => alive_within)
      AND (NOT by_lock
           OR w.lock_key IS NULL
           -- a lock taken on another server (a standby promoted since) or before a restart
           -- ended with that server's sessions, not with the worker: judge by heartbeat alone
           -- until the worker's lease has locked again here
           OR w.lock_server IS DISTINCT FROM pg_postmaster_start_time()
           OR w.lock_key::bigint IN (
               SELECT l.objid::bigint FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.classid = 7215010 AND l.objsubid = 2
                 AND l.granted
                 AND l.database = (SELECT oid FROM pg_database
                                   WHERE datname = current_database())))
$$;

-- Supervision policy per client (NULL: the deployment's default) and why a mailbox is suspended.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS max_restarts integer CHECK (max_restarts > 0);
ALTER TABLE clients ADD COLUMN IF NOT EXISTS restart_period double precision
    CHECK (restart_period > 0);
ALTER TABLE clients ADD COLUMN IF NOT EXISTS suspended_reason text;
ALTER TABLE clients ADD COLUMN IF NOT EXISTS suspended_at timestamptz;

-- Webhook intake and per-client limits (NULL: the deployment's default).
ALTER TABLE clients ADD COLUMN IF NOT EXISTS webhook_type_pointer text NOT NULL DEFAULT '/type';
ALTER TABLE clients ADD COLUMN IF NOT EXISTS rate_per_second double precision
    CHECK (rate_per_second > 0);
ALTER TABLE clients ADD COLUMN IF NOT EXISTS rate_burst integer CHECK (rate_burst > 0);
ALTER TABLE clients ADD COLUMN IF NOT EXISTS max_backlog bigint CHECK (max_backlog > 0);

-- Standard Webhooks signing secrets. Kept as the key bytes: an HMAC is checked with the key
-- itself, so a hash would not do. Several per client while a rotation's grace period runs.
CREATE TABLE IF NOT EXISTS webhook_secrets (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id  uuid NOT NULL REFERENCES clients (id),
    secret     bytea NOT NULL CHECK (length(secret) BETWEEN 24 AND 64),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_secrets_client ON webhook_secrets (client_id, created_at);

-- Fencing (I3): every placement of a mailbox, and every end of one (release, suspension,
-- resumption), gives it a new epoch. The owner carries its placement's epoch on every
-- attempt write (start, retry, outcome) and a write with another epoch is refused, so a
-- worker that lost the mailbox (frozen, slow, cut off) can neither start nor record anything.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;

-- Revocation: a disabled client gets no tokens, its tokens and webhooks are refused. Tokens
-- issued (`iat`) before tokens_valid_after are refused: disabling a client, taking its admin
-- right away and rotating its secret move it to the next whole second (`iat` is in seconds).
ALTER TABLE clients ADD COLUMN IF NOT EXISTS disabled boolean NOT NULL DEFAULT false;
ALTER TABLE clients ADD COLUMN IF NOT EXISTS tokens_valid_after timestamptz;
-- A revoked signing key verifies nothing from then on (whatever it signed is refused).
ALTER TABLE signing_keys ADD COLUMN IF NOT EXISTS revoked_at timestamptz;
-- A deleted client is gone from the API but its row and events stay: the journal is kept.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS deleted_at timestamptz;

-- Quota: what each client has stored, kept by the accept (payload), the outcome (result and
-- error) and retention (what it deletes), so that the accept checks it without counting rows.
-- events.bytes is what the event counts for in stored_bytes: the JSON text of its payload,
-- result and error. The columns are added, and filled from the rows already there, once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'clients'
                     AND column_name = 'stored_events') THEN
        ALTER TABLE events ADD COLUMN bytes bigint NOT NULL DEFAULT 0;
        UPDATE events SET bytes = octet_length(payload::text)
                                  + coalesce(octet_length(result::text), 0)
                                  + coalesce(octet_length(error::text), 0);
        ALTER TABLE clients ADD COLUMN stored_events bigint NOT NULL DEFAULT 0,
                            ADD COLUMN stored_bytes bigint NOT NULL DEFAULT 0;
        UPDATE clients c SET stored_events = s.n, stored_bytes = s.bytes
        FROM (SELECT client_id, count(*) AS n, sum(bytes) AS bytes FROM events
              GROUP BY client_id) AS s
        WHERE c.id = s.client_id;
    END IF;
END
$$;
-- Per-client quota (NULL: the deployment's default).
ALTER TABLE clients ADD COLUMN IF NOT EXISTS max_stored_events bigint
    CHECK (max_stored_events > 0);
ALTER TABLE clients ADD COLUMN IF NOT EXISTS max_stored_bytes bigint
    CHECK (max_stored_bytes > 0);

-- Whether a client storing `events` more events of `bytes` bytes in all stays within its
-- quota. The one rule every accept path applies (accept_event, accept_events, and a batch of
-- any size): the client's row must be locked FOR NO KEY UPDATE by the caller, which then adds
-- the same figures to stored_events and stored_bytes in the same statement.
CREATE OR REPLACE FUNCTION within_quota(
    stored_events bigint, stored_bytes bigint, max_events bigint, max_bytes bigint,
    events bigint, bytes bigint
) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT stored_events + events <= max_events AND stored_bytes + bytes <= max_bytes
$$;

-- Retention: finished events by age, for the deleter; and what references an event through
-- a redrive (so that deleting an event does not scan the table for referencing rows).
CREATE INDEX IF NOT EXISTS events_finished ON events (finished_at)
    WHERE status IN ('succeeded', 'dead');

-- The audit log: every operator action (admin API, console, command line), written in the
-- same transaction as the action where it can be. `actor` is the operator's client id;
-- `detail` is a small JSON object that never holds a secret (actors/store/audit.py).
CREATE TABLE IF NOT EXISTS audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     uuid NOT NULL,
    action    text NOT NULL,
    client_id uuid,
    event_id  uuid,
    detail    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object')
);
CREATE INDEX IF NOT EXISTS audit_log_client ON audit_log (client_id, id) WHERE client_id IS NOT NULL;

-- The console's single session-signing key of releases before console_session_keys; no longer
-- read (kept so that gateways of the previous release work during a rolling upgrade).
CREATE TABLE IF NOT EXISTS console_keys (
    id  integer PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL CHECK (length(key) >= 32)
);
-- The console links a dead event to the events that redrove it.
CREATE INDEX IF NOT EXISTS events_redrive_of ON events (redrive_of) WHERE redrive_of IS NOT NULL;
-- The console's charts read events finished in the last hour. BRIN costs the hot path almost
-- nothing (recent rows sit in unsummarised ranges, which a query reads whole).
CREATE INDEX IF NOT EXISTS events_finished_brin ON events USING brin (finished_at);

-- The console's session-signing keys, by key id (gateway/console/sessions.py). The first
-- gateway that needs one makes it; the newest signs new sessions, an older one still verifies
-- the sessions it signed until they expire. `seriatim keys rotate-console` adds a key and drops
-- those no live session needs.
CREATE TABLE IF NOT EXISTS console_session_keys (
    kid        text PRIMARY KEY,
    key        bytea NOT NULL CHECK (length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Console sessions, kept server-side so that signing out ends one on every gateway; the cookie
-- carries a random id (only its SHA-256 is stored) signed with the key `kid`. issued_at and
-- expires_at come from the database's clock, never a gateway's.
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash    bytea PRIMARY KEY,
    client_id  uuid NOT NULL,
    admin      boolean NOT NULL,
    kid        text NOT NULL,
    csrf       text NOT NULL,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    ended_at   timestamptz
);
CREATE INDEX IF NOT EXISTS console_sessions_client ON console_sessions (client_id);
CREATE INDEX IF NOT EXISTS console_sessions_kid ON console_sessions (kid);
-- The console's clients list, largest backlog first, reads its page from here instead of
-- sorting every backlogged client. Its columns change on every accept and outcome; so does
-- clients_backlog's predicate, so those updates were never HOT and this index adds one index
-- entry to each while the client has a backlog (docs/decisions.md, docs/benchmarks.md).
CREATE INDEX IF NOT EXISTS clients_by_backlog ON clients ((done_seq - last_seq), id)
    WHERE done_seq < last_seq;
-- The worker whose supervisor is the active one (the supervisor queue's single active
-- consumer) says so with its heartbeat, from when: `seriatim status` names the live worker
-- with the newest claim (an old claim may linger for a heartbeat after a handover).
ALTER TABLE workers ADD COLUMN IF NOT EXISTS supervising_since timestamptz;

-- Each attempt at an event, for its timeline: written by the statements that already run on
-- the event's path (mark_attempts starts one, mark_retrying and record_outcomes finish the
-- newest), so an attempt costs no round trip of its own. `worker` is the mailbox's host when
-- the attempt started. An attempt never finished is one its worker died or was fenced in.
-- Retention deletes an event's attempts with it (retire_events).
CREATE TABLE IF NOT EXISTS attempts (
    client_id   uuid NOT NULL,
    seq         bigint NOT NULL,
    attempt     integer NOT NULL CHECK (attempt > 0),
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    error       jsonb,
    worker      text,
    PRIMARY KEY (client_id, seq, attempt)
);
-- Redrive-by-filter jobs, so that any gateway shows a job's progress and a job outlives the
-- gateway that ran it: a job its gateway stopped reporting on (`seen_at`) is marked
-- interrupted, with how far it got (docs/decisions.md "Redrive jobs: interrupted, not resumed").
CREATE TABLE IF NOT EXISTS redrive_jobs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    actor       uuid NOT NULL,
    runner      text NOT NULL,
    total       integer NOT NULL CHECK (total >= 0),
    processed   integer NOT NULL DEFAULT 0,
    redriven    integer NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'running'
                CHECK (state IN ('running', 'finished', 'failed', 'interrupted')),
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
