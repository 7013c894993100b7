-- Every query seriatim runs, by name. Loaded by actors/store/queries.py.

-- name: insert_client
INSERT INTO clients (name, secret_hash, admin) VALUES ($1, $2, $3)
RETURNING id, name, admin;

-- name: client_credentials
SELECT id, secret_hash, admin, disabled, tokens_valid_after FROM clients
WHERE id = $1 AND deleted_at IS NULL;

-- name: client_standing
-- What a client's tokens are checked against on use; no row: no client.
SELECT disabled, tokens_valid_after FROM clients WHERE id = $1 AND deleted_at IS NULL;

-- name: clients_intake
-- What the gateway checks a request against, for many clients in one round trip: the standing
-- of their tokens and their limits. No row: no such client (or deleted).
SELECT id, disabled, tokens_valid_after, rate_per_second, rate_burst, max_backlog,
       max_stored_events, max_stored_bytes
FROM clients WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL;

-- name: set_client_standing
-- Absent fields ($2, $3 NULL) keep their value. Disabling a client or taking its admin right
-- away refuses every token issued until now: valid again from the next whole second.
UPDATE clients
SET disabled = coalesce($2, disabled),
    admin = coalesce($3, admin),
    tokens_valid_after = CASE
        WHEN ($2 AND NOT disabled) OR (NOT $3 AND admin)
        THEN to_timestamp(ceil(extract(epoch FROM clock_timestamp())))
        ELSE tokens_valid_after END
WHERE id = $1 AND deleted_at IS NULL
RETURNING id;

-- name: set_client_secret
-- A new secret hash; every token issued until now is refused from the next whole second.
UPDATE clients
SET secret_hash = $2, tokens_valid_after = to_timestamp(ceil(extract(epoch FROM clock_timestamp())))
WHERE id = $1 AND deleted_at IS NULL
RETURNING id;

-- name: delete_client
-- The row is locked (FOR NO KEY UPDATE, as every statement that locks clients), marked deleted
-- and disabled; its tokens and webhook secrets stop working. The row and its events are kept,
-- and events accepted before go on to their outcome (the mailbox drains as usual).
-- `deleted` NULL: no such client.
WITH target AS (
    SELECT id FROM clients WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE
), marked AS (
    UPDATE clients c
    SET deleted_at = now(), disabled = true,
        tokens_valid_after = to_timestamp(ceil(extract(epoch FROM clock_timestamp())))
    FROM target WHERE c.id = target.id
    RETURNING c.id
), retired AS (
    UPDATE webhook_secrets SET expires_at = now()
    WHERE client_id IN (SELECT id FROM marked) AND (expires_at IS NULL OR expires_at > now())
)
SELECT (SELECT true FROM target) AS deleted;

-- name: accept_event
-- One statement, so one atomic step: bump the client's counter under its row lock and insert
-- the event with that seq. A unique violation (idempotency key race) rolls back both.
-- A client whose backlog (accepted, unfinished) has reached $8, or whose stored events would
-- pass its quota ($9 events, $10 bytes: within_quota), matches no row: nothing written;
-- nor does a disabled or deleted one (checked under the row lock: no event after the change).
WITH counter AS (
    UPDATE clients SET last_seq = last_seq + 1, stored_events = stored_events + 1,
                       stored_bytes = stored_bytes + octet_length($3)
    WHERE id = $1 AND last_seq - done_seq < coalesce(max_backlog, $8)
      AND within_quota(stored_events, stored_bytes, coalesce(max_stored_events, $9),
                       coalesce(max_stored_bytes, $10), 1, octet_length($3))
      AND NOT disabled AND deleted_at IS NULL
    RETURNING last_seq, done_seq
)
INSERT INTO events (client_id, seq, type, payload, idempotency_key, request_hash, redrive_of,
                    traceparent, bytes)
SELECT $1, counter.last_seq, $2, $3::jsonb, $4, $5, $6, $7, octet_length($3) FROM counter
RETURNING id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
          finished_at, result, error, redrive_of, traceparent,
          (SELECT done_seq FROM counter) AS done_seq;

-- name: accept_refusal
-- Why accept_event or accept_batch wrote nothing for a client that exists ($2: the backlog
-- cap, $3 and $4 the quota, as given to it). No row: no such client.
SELECT NOT disabled AND deleted_at IS NULL AS accepts, last_seq - done_seq AS backlog,
       last_seq - done_seq >= coalesce(max_backlog, $2) AS backlog_full,
       coalesce(max_backlog, $2) AS max_backlog,
       stored_events, stored_bytes,
       coalesce(max_stored_events, $3) AS max_stored_events,
       coalesce(max_stored_bytes, $4) AS max_stored_bytes
FROM clients WHERE id = $1;

-- name: accept_batch
-- A batch of one client's events, all or nothing, in one statement: the counter moves by the
-- batch's size under the client's row lock and the k-th item ($2..$5 are parallel arrays, in
-- the order given) gets seq last_seq + k. No row when the client is disabled, deleted or
-- missing, when its backlog with the batch would pass its cap ($7), or when its stored events
-- with the batch's would pass its quota ($8 events, $9 bytes: within_quota, as accept_event
-- applies it): nothing written. A unique violation (an idempotency key used meanwhile) rolls
-- back the whole statement.
WITH size AS (
    SELECT cardinality($2::text[]) AS events,
           (SELECT coalesce(sum(octet_length(p)), 0) FROM unnest($3::text[]) AS p) AS bytes
),
counter AS (
    UPDATE clients SET last_seq = last_seq + size.events,
                       stored_events = stored_events + size.events,
                       stored_bytes = stored_bytes + size.bytes
    FROM size
    WHERE id = $1
      AND last_seq - done_seq + size.events <= coalesce(max_backlog, $7)
      AND within_quota(stored_events, stored_bytes, coalesce(max_stored_events, $8),
                       coalesce(max_stored_bytes, $9), size.events, size.bytes)
      AND NOT disabled AND deleted_at IS NULL
    RETURNING last_seq - size.events AS before, done_seq
)
INSERT INTO events (client_id, seq, type, payload, idempotency_key, request_hash, traceparent,
                    bytes)
SELECT $1, counter.before + item.ord, item.type, item.payload::jsonb, item.idempotency_key,
       item.request_hash, $6, octet_length(item.payload)
FROM counter,
     unnest($2::text[], $3::text[], $4::text[], $5::bytea[])
         WITH ORDINALITY AS item (type, payload, idempotency_key, request_hash, ord)
ORDER BY item.ord
RETURNING id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
          finished_at, result, error, redrive_of, traceparent,
          (SELECT done_seq FROM counter) AS done_seq;

-- name: events_by_keys
-- The client's events under any of these idempotency keys, with their request hashes.
SELECT id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
       finished_at, result, error, redrive_of, traceparent, request_hash, idempotency_key
FROM events WHERE client_id = $1 AND idempotency_key = ANY($2::text[]);

-- name: accept_events
-- accept_event for every request waiting at one moment (group commit), one result row per
-- request in the order given ($1..$10 are parallel arrays; $8 the deployment's backlog cap,
-- $9 and $10 its quota). The clients' rows are locked in id order, so two batches (or a batch
-- and the worker's writes in the same order) cannot deadlock. The k-th request of a client
-- gets seq last_seq + k while its backlog stays under the cap and its stored events within
-- its quota (within_quota, with the k requests' count and bytes); the first refusal refuses
-- the rest of that client's requests (bool_and), so the accepted ones are a prefix and seqs
-- stay gapless. `refusal` says why: 'backlog' or 'quota'.
-- A client that does not exist, or is disabled or deleted (checked under the row lock, so no
-- event is accepted after the change commits), gets admitted = NULL. A unique violation (an
-- idempotency key
-- already used) aborts the whole statement, nothing written: the caller then runs
-- accept_event per request.
WITH item AS MATERIALIZED (
    SELECT i.*, row_number() OVER (PARTITION BY i.client_id ORDER BY i.ord) AS k,
           sum(octet_length(i.payload)) OVER (PARTITION BY i.client_id ORDER BY i.ord)
               AS running_bytes
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::uuid[],
                $7::text[], $8::bigint[], $9::bigint[], $10::bigint[])
         WITH ORDINALITY AS i (client_id, type, payload, idempotency_key, request_hash,
                               redrive_of, traceparent, cap, max_events, max_bytes, ord)
),
locked AS MATERIALIZED (
    SELECT id, last_seq, done_seq, max_backlog, stored_events, stored_bytes, max_stored_events,
           max_stored_bytes
    FROM clients
    WHERE id = ANY($1::uuid[]) AND NOT disabled AND deleted_at IS NULL
    ORDER BY id
    FOR NO KEY UPDATE
),
checked AS MATERIALIZED (
    SELECT item.*, locked.last_seq + item.k AS seq, locked.last_seq, locked.done_seq,
           bool_and(locked.last_seq - locked.done_seq + item.k - 1
                    < coalesce(locked.max_backlog, item.cap))
               OVER (PARTITION BY item.client_id ORDER BY item.ord) AS backlog_ok,
           bool_and(within_quota(locked.stored_events, locked.stored_bytes,
                                 coalesce(locked.max_stored_events, item.max_events),
                                 coalesce(locked.max_stored_bytes, item.max_bytes),
                                 item.k, item.running_bytes))
               OVER (PARTITION BY item.client_id ORDER BY item.ord) AS quota_ok
    FROM item JOIN locked ON locked.id = item.client_id
),
judged AS MATERIALIZED (
    SELECT checked.*, backlog_ok AND quota_ok AS admitted,
           CASE WHEN NOT backlog_ok THEN 'backlog' WHEN NOT quota_ok THEN 'quota' END
               AS refusal
    FROM checked
),
counter AS (
    UPDATE clients
    SET last_seq = top.seq, stored_events = clients.stored_events + top.events,
        stored_bytes = clients.stored_bytes + top.bytes
    FROM (SELECT client_id, max(seq) AS seq, count(*) AS events,
                 sum(octet_length(payload)) AS bytes
          FROM judged WHERE admitted GROUP BY client_id) AS top
    WHERE clients.id = top.client_id
),
inserted AS (
    INSERT INTO events (client_id, seq, type, payload, idempotency_key, request_hash,
                        redrive_of, traceparent, bytes)
    SELECT client_id, seq, type, payload::jsonb, idempotency_key, request_hash, redrive_of,
           traceparent, octet_length(payload)
    FROM judged WHERE admitted
    RETURNING id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
              finished_at, result, error, redrive_of, traceparent
)
SELECT judged.admitted, judged.refusal, judged.done_seq,
       judged.last_seq - judged.done_seq
           + count(*) FILTER (WHERE judged.admitted) OVER (PARTITION BY judged.client_id)
           AS backlog,
       inserted.*
FROM item
LEFT JOIN judged ON judged.ord = item.ord
LEFT JOIN inserted ON inserted.client_id = judged.client_id AND inserted.seq = judged.seq
ORDER BY item.ord;

-- name: event_by_key
SELECT id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
       finished_at, result, error, redrive_of, traceparent, request_hash
FROM events WHERE client_id = $1 AND idempotency_key = $2;

-- name: event_by_id
SELECT id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
       finished_at, result, error, redrive_of, traceparent
FROM events WHERE id = $1 AND client_id = $2;

-- name: event_text_by_id
-- As event_by_id, with payload, result and error as JSON text, never decoded.
SELECT id, client_id, seq, type, payload::text AS payload, status, attempts, accepted_at,
       started_at, finished_at, result::text AS result, error::text AS error, redrive_of,
       traceparent
FROM events WHERE id = $1 AND client_id = $2;

-- name: list_events
SELECT id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
       finished_at, result, error, redrive_of, traceparent
FROM events
WHERE client_id = $1 AND seq > $2 AND ($3::text IS NULL OR status = $3)
ORDER BY seq
LIMIT $4;

-- name: event_page
-- A page of a client's events: at most $4 rows and, past its first row, at most $5 bytes of
-- JSON text, measured before anything decodes it: payload, result, error and type, plus $6 per
-- row for the other fields. Payload, result and error come as text, never decoded. `fits` is
-- false on the one row after a page cut short by bytes: its JSON is not sent, it says there
-- is more.
-- The JSON text is built only for the rows within the budget: `candidate` first cuts the page
-- by each event's stored size (`events.bytes`: its payload as sent, compact, and its result
-- and error as text), read from the row without detoasting its JSON; only those rows, and
-- the one after them, are turned into text and measured exactly. PostgreSQL's text of a jsonb
-- value is at least as long as the compact JSON the gateway stored (it adds spaces), so the
-- first cut keeps every row the exact one would (where it is shorter, a `-0.0` written `0.0`,
-- the page is cut a little early); a row past the first cut says only "there is more".
WITH candidate AS (
    SELECT id, seq, within
    FROM (
        SELECT id, seq, estimate,
               sum(estimate) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running,
               row_number() OVER (ORDER BY seq) AS n
        FROM (
            SELECT id, seq, bytes + octet_length(type) + $6::int AS estimate
            FROM events
            WHERE client_id = $1 AND seq > $2 AND ($3::text IS NULL OR status = $3)
            ORDER BY seq
            LIMIT $4
        ) AS listed_ids
    ) AS estimated,
    LATERAL (SELECT n = 1 OR running <= $5::bigint AS within) AS w
    WHERE n <= 2 OR running - estimate <= $5::bigint
), listed AS MATERIALIZED (  -- each row's JSON turned into text once
    SELECT e.id, e.client_id, e.seq, e.type, e.status, e.attempts, e.accepted_at, e.started_at,
           e.finished_at, e.redrive_of, e.traceparent, e.payload::text AS payload,
           e.result::text AS result, e.error::text AS error, candidate.within
    FROM candidate JOIN events e ON e.id = candidate.id
), sized AS (
    SELECT *, octet_length(payload) + coalesce(octet_length(result), 0)
              + coalesce(octet_length(error), 0) + octet_length(type) + $6::int AS bytes
    FROM listed
), measured AS (
    SELECT *, sum(bytes) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running,
           row_number() OVER (ORDER BY seq) AS n
    FROM sized
)
SELECT id, client_id, seq, type, status, attempts, accepted_at, started_at, finished_at,
       redrive_of, traceparent, fits,
       CASE WHEN fits THEN payload END AS payload,
       CASE WHEN fits THEN result END AS result,
       CASE WHEN fits THEN error END AS error
FROM (SELECT *, within AND (n = 1 OR running <= $5::bigint) AS fits FROM measured) AS judged
WHERE n <= 2 OR running - bytes <= $5::bigint
ORDER BY seq;

-- name: events_between
-- The journal's copy of a client's events after done_seq, to fill a gap in delivery.
SELECT id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
       finished_at, result, error, redrive_of, traceparent
FROM events
WHERE client_id = $1 AND seq > $2 AND seq < $3
ORDER BY seq;

-- name: mark_published
-- Rows locked in id order, as mark_attempts and record_outcomes lock them (no deadlocks).
-- Committed without waiting for its WAL flush (`unflushed`: synchronous_commit off for this
-- transaction alone): a mark a database crash takes back costs one more publish by the relay,
-- which the mailbox acks as a duplicate (docs/reliability.md, "Commits that do not wait").
WITH unflushed AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
),
locked AS (
    SELECT id FROM events
    WHERE id = ANY($1::uuid[]) AND published_at IS NULL
      AND (SELECT setting FROM unflushed) IS NOT NULL
    ORDER BY id FOR NO KEY UPDATE
)
UPDATE events e SET published_at = now() FROM locked WHERE e.id = locked.id;

-- name: unpublished_events
SELECT id, client_id, seq, type, payload, status, attempts, accepted_at, started_at,
       finished_at, result, error, redrive_of, traceparent
FROM events
WHERE published_at IS NULL AND status NOT IN ('succeeded', 'dead')
  AND accepted_at < now() - make_interval(secs => $1)
ORDER BY accepted_at
LIMIT $2;

-- name: mark_attempts
-- mark_attempt for many events in one statement (group commit; actors/store/group_commit.py). The
-- rows are locked in id order, as every statement that locks several events does, so that
-- two such statements cannot deadlock. An attempt starts only under its mailbox's current
-- placement ($2: the epoch the caller holds; NULL only in tests of the journal alone). Each
-- attempt started gets its row in `attempts`, in the same statement. An event RabbitMQ
-- delivered ($3) is marked published by the same update, if it was not yet: the gateway marks
-- its events a moment after their confirms (gateway/publishing.py), by when most single events
-- have started, and finds nothing left to update; an event the journal gave (a gap, a
-- catch-up, a batch's events below its message) is not, and the gateway's mark is its own.
-- Committed without waiting for its WAL flush (`unflushed`: synchronous_commit off for this
-- transaction alone). A worker's crash loses nothing of it (PostgreSQL has it); a database
-- crash can take back the attempts started in its last fraction of a second, never an outcome
-- recorded after them: the argument is in docs/reliability.md, "Commits that do not wait".
WITH unflushed AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
),
input AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::boolean[]) AS t (id, epoch, delivered)
    WHERE (SELECT setting FROM unflushed) IS NOT NULL
),
locked AS (
    SELECT id FROM events WHERE id IN (SELECT id FROM input) ORDER BY id FOR NO KEY UPDATE
),
started AS (
    UPDATE events e
    SET status = 'processing', attempts = e.attempts + 1,
        started_at = coalesce(e.started_at, now()),
        published_at = CASE WHEN input.delivered THEN coalesce(e.published_at, now())
                            ELSE e.published_at END
    FROM locked JOIN input ON input.id = locked.id
    WHERE e.id = locked.id AND e.status NOT IN ('succeeded', 'dead')
      AND (input.epoch IS NULL
           OR EXISTS (SELECT 1 FROM clients c
                      WHERE c.id = e.client_id AND c.state = 'active' AND c.epoch = input.epoch))
    RETURNING e.id, e.client_id, e.seq, e.attempts
),
timeline AS (  -- the attempt's row in the event's timeline, on the mailbox's host
    INSERT INTO attempts (client_id, seq, attempt, started_at, worker)
    SELECT started.client_id, started.seq, started.attempts, now(),
           (SELECT c.host FROM clients c WHERE c.id = started.client_id)
    FROM started
    ON CONFLICT (client_id, seq, attempt) DO NOTHING
)
SELECT id, attempts FROM started;

-- name: mark_attempt
-- mark_attempts for one event: what a batch of one runs (the usual batch at light load). The
-- same update, fence, published mark, timeline row and unflushed commit, as one plain update:
-- one row needs no locks taken in order beforehand (it holds no other), and a statement with
-- scalar parameters keeps a generic plan where the array form is planned at every run (the
-- spike in docs/decisions.md, "Single-row forms of the worker's statements": 0.58 against
-- 1.10-1.14 ms of backend CPU per event for the pair of statements).
WITH unflushed AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
),
started AS (
    UPDATE events e
    SET status = 'processing', attempts = e.attempts + 1,
        started_at = coalesce(e.started_at, now()),
        published_at = CASE WHEN $3::boolean THEN coalesce(e.published_at, now())
                            ELSE e.published_at END
    WHERE e.id = $1 AND (SELECT setting FROM unflushed) IS NOT NULL
      AND e.status NOT IN ('succeeded', 'dead')
      AND ($2::bigint IS NULL
           OR EXISTS (SELECT 1 FROM clients c
                      WHERE c.id = e.client_id AND c.state = 'active' AND c.epoch = $2))
    RETURNING e.id, e.client_id, e.seq, e.attempts
),
timeline AS (
    INSERT INTO attempts (client_id, seq, attempt, started_at, worker)
    SELECT started.client_id, started.seq, started.attempts, now(),
           (SELECT c.host FROM clients c WHERE c.id = started.client_id)
    FROM started
    ON CONFLICT (client_id, seq, attempt) DO NOTHING
)
SELECT id, attempts FROM started;

-- name: mark_retrying
-- A failed attempt that will be retried: the mailbox restarts (counted per client).
-- Refused (no row) once the event is terminal or the caller's epoch ($3) is not current.
-- The attempt's row in `attempts` ends with the error.
WITH event AS (
    UPDATE events e SET status = 'retrying', error = $2::jsonb
    WHERE e.id = $1 AND e.status NOT IN ('succeeded', 'dead')
      AND ($3::bigint IS NULL
           OR EXISTS (SELECT 1 FROM clients c
                      WHERE c.id = e.client_id AND c.state = 'active' AND c.epoch = $3))
    RETURNING e.client_id, e.seq, e.attempts
),
timeline AS (  -- the attempt ends with this error
    UPDATE attempts a SET finished_at = now(), error = $2::jsonb
    FROM event
    WHERE a.client_id = event.client_id AND a.seq = event.seq AND a.attempt = event.attempts
)
UPDATE clients SET restarts = restarts + 1 FROM event WHERE clients.id = event.client_id
RETURNING clients.id;

-- name: record_outcomes
-- record_outcome for many events in one statement (group commit), each behind its own fence:
-- a row is recorded only if its client's done_seq is still its seq - 1 and the mailbox is
-- still under the caller's placement (epoch; NULL only in tests of the journal alone).
-- Clients are locked in id order, then events in id order (as accept and mark_attempts do).
-- The result's and the error's JSON text join the event's bytes and its client's stored_bytes.
-- The event's newest attempt in `attempts` ends with it.
WITH input AS (
    SELECT *
    FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::int[], $6::jsonb[],
                $7::jsonb[], $8::bigint[])
         AS t (event_id, client_id, seq, status, attempts, result, error, epoch)
),
client_locks AS (
    SELECT id FROM clients WHERE id IN (SELECT client_id FROM input)
    ORDER BY id FOR NO KEY UPDATE
),
fence AS (
    UPDATE clients c
    SET done_seq = input.seq,
        stored_bytes = c.stored_bytes + coalesce(octet_length(input.result::text), 0)
                       + coalesce(octet_length(input.error::text), 0)
    FROM client_locks JOIN input ON input.client_id = client_locks.id
    WHERE c.id = client_locks.id AND c.done_seq = input.seq - 1
      AND (input.epoch IS NULL OR (c.state = 'active' AND c.epoch = input.epoch))
    RETURNING input.event_id
),
event_locks AS (
    SELECT e.id, e.attempts FROM events e JOIN fence ON fence.event_id = e.id
    ORDER BY e.id FOR NO KEY UPDATE OF e
),
timeline AS (  -- the newest attempt (mark_attempts counted it) ends with the outcome
    UPDATE attempts a SET finished_at = now(), error = input.error
    FROM event_locks JOIN input ON input.event_id = event_locks.id
    WHERE a.client_id = input.client_id AND a.seq = input.seq
      AND a.attempt = event_locks.attempts AND a.finished_at IS NULL
)
UPDATE events e
SET status = input.status, attempts = input.attempts, result = input.result,
    error = input.error, finished_at = now(), started_at = coalesce(e.started_at, now()),
    bytes = e.bytes + coalesce(octet_length(input.result::text), 0)
            + coalesce(octet_length(input.error::text), 0)
FROM event_locks JOIN input ON input.event_id = event_locks.id
WHERE e.id = event_locks.id
RETURNING e.id;

-- name: record_outcome
-- record_outcomes for one event, as mark_attempt is mark_attempts for one: the client's fence
-- (done_seq still seq - 1, the placement still the caller's) updated first, then the event
-- locked and its attempts count read under the lock (the newest committed, as record_outcomes
-- reads it), the event updated, and that attempt's row in `attempts` ended: clients before
-- events, as record_outcomes locks them. $3 is a bigint wherever it appears.
WITH fence AS (
    UPDATE clients c
    SET done_seq = $3::bigint,
        stored_bytes = c.stored_bytes + coalesce(octet_length($6::jsonb::text), 0)
                       + coalesce(octet_length($7::jsonb::text), 0)
    WHERE c.id = $2 AND c.done_seq = $3::bigint - 1
      AND ($8::bigint IS NULL OR (c.state = 'active' AND c.epoch = $8))
    RETURNING c.id
),
locked AS (
    SELECT e.id, e.attempts FROM events e, fence WHERE e.id = $1 FOR NO KEY UPDATE OF e
),
event AS (
    UPDATE events e
    SET status = $4, attempts = $5, result = $6::jsonb, error = $7::jsonb, finished_at = now(),
        started_at = coalesce(e.started_at, now()),
        bytes = e.bytes + coalesce(octet_length($6::jsonb::text), 0)
                + coalesce(octet_length($7::jsonb::text), 0)
    FROM locked
    WHERE e.id = locked.id
    RETURNING e.id, e.client_id, e.seq, locked.attempts AS counted
),
timeline AS (  -- the newest attempt (mark_attempt counted it) ends with the outcome
    UPDATE attempts a SET finished_at = now(), error = $7::jsonb
    FROM event
    WHERE a.client_id = event.client_id AND a.seq = event.seq
      AND a.attempt = event.counted AND a.finished_at IS NULL
)
SELECT id FROM event;

-- name: mailbox
SELECT c.id AS client_id, c.state, c.last_seq, c.done_seq, c.host, c.restarts, c.policy,
       c.max_restarts, c.restart_period, c.suspended_reason, c.suspended_at,
       (SELECT min(e.seq) FROM events e
        WHERE e.client_id = c.id AND e.status IN ('processing', 'retrying')) AS in_flight_seq,
       (SELECT e.status FROM events e
        WHERE e.client_id = c.id AND e.seq = c.done_seq + 1) AS head_status
FROM clients c WHERE c.id = $1;

-- name: mailboxes
SELECT c.id AS client_id, c.state, c.last_seq, c.done_seq, c.host, c.restarts, c.policy,
       c.max_restarts, c.restart_period, c.suspended_reason, c.suspended_at,
       (SELECT min(e.seq) FROM events e
        WHERE e.client_id = c.id AND e.status IN ('processing', 'retrying')) AS in_flight_seq,
       (SELECT e.status FROM events e
        WHERE e.client_id = c.id AND e.seq = c.done_seq + 1) AS head_status
FROM clients c
WHERE ($1::text IS NULL OR c.state = $1) AND c.id > $2
ORDER BY c.id
LIMIT $3;

-- name: place_mailboxes
-- Assign mailboxes to workers ($1 client ids, $2 worker ids, pairwise), each under a new epoch;
-- suspended ones stay, and so does a mailbox active on a live worker ($3, $4: liveness, as in
-- live_worker_ids): a mailbox moves only off a dead worker, whatever a stale supervisor
-- decided from an older read. Rows locked in id order, as every statement that locks several
-- clients locks them. Returns each placed client's position: its done_seq cannot move after
-- this commits but by the new owner (every outcome write is fenced by the epoch).
WITH live AS (SELECT live_worker_ids($3, $4) AS id),
locked AS (
    SELECT id FROM clients WHERE id = ANY($1::uuid[]) AND state <> 'suspended'
    ORDER BY id FOR NO KEY UPDATE
)
UPDATE clients AS c SET state = 'active', host = p.host, epoch = c.epoch + 1
FROM locked JOIN unnest($1::uuid[], $2::text[]) AS p (id, host) ON p.id = locked.id
WHERE c.id = locked.id AND c.state <> 'suspended'
  AND NOT (c.state = 'active' AND c.host IS NOT NULL AND c.host IN (SELECT id FROM live))
RETURNING c.id, c.epoch, c.done_seq, c.last_seq;

-- name: release_mailbox
-- $3: only that placement (NULL: whichever placement the worker has).
UPDATE clients SET state = 'idle', host = NULL, epoch = epoch + 1
WHERE id = $1 AND host = $2 AND state = 'active' AND ($3::bigint IS NULL OR epoch = $3)
RETURNING last_seq > done_seq AS has_backlog;

-- name: release_worker_mailboxes
WITH locked AS (
    SELECT id FROM clients WHERE host = $1 AND state = 'active' ORDER BY id FOR NO KEY UPDATE
)
UPDATE clients c SET state = 'idle', host = NULL, epoch = c.epoch + 1
FROM locked WHERE c.id = locked.id AND c.host = $1 AND c.state = 'active';

-- name: mailboxes_wanted
SELECT c.id AS client_id, c.state, c.last_seq > c.done_seq AS has_backlog,
       coalesce(c.host IN (SELECT live_worker_ids($2, $3)), false) AS host_alive
FROM clients c
WHERE c.id = ANY($1::uuid[]);

-- name: stranded_mailboxes
-- Mailboxes with a backlog and no live host: never placed, passivated early, or orphaned;
-- with the trace context of the event at the head of the backlog (what the activation is for).
WITH live AS (SELECT live_worker_ids($1, $2) AS id)
SELECT c.id,
       (SELECT e.traceparent FROM events e WHERE e.client_id = c.id AND e.seq = c.done_seq + 1)
           AS traceparent
FROM clients c
WHERE c.done_seq < c.last_seq AND c.state <> 'suspended'
  AND (c.host IS NULL OR c.host NOT IN (SELECT id FROM live))
ORDER BY c.id
LIMIT $3;

-- name: resume_mailbox
UPDATE clients SET state = 'idle', host = NULL, suspended_reason = NULL, suspended_at = NULL,
                   epoch = epoch + 1
WHERE id = $1 AND state = 'suspended'
RETURNING id;

-- name: client_position
SELECT done_seq, last_seq, state, policy, max_restarts, restart_period, host, epoch
FROM clients WHERE id = $1;

-- name: suspend_mailbox
-- $3: the epoch of the placement asking for it (a mailbox's own escalation), refused when the
-- mailbox has been placed anew since; NULL for an operator's suspension.
UPDATE clients
SET state = 'suspended', host = NULL, suspended_reason = $2, suspended_at = now(),
    epoch = epoch + 1
WHERE id = $1 AND state <> 'suspended' AND ($3::bigint IS NULL OR epoch = $3)
RETURNING id;

-- name: set_mailbox_policy
-- Absent fields ($2, $3, $4 NULL with $5 false) keep their value; $5 resets the intensity.
UPDATE clients
SET policy = coalesce($2, policy),
    max_restarts = CASE WHEN $5 THEN NULL ELSE coalesce($3, max_restarts) END,
    restart_period = CASE WHEN $5 THEN NULL ELSE coalesce($4, restart_period) END
WHERE id = $1
RETURNING id;

-- name: heartbeat
-- $4: the lease's lock key, held by this session on this server (lock_server says which: see
-- live_worker_ids). $5: whether this worker's supervisor is the active one
-- (supervising_since keeps when it became so).
INSERT INTO workers (id, hostname, pid, lock_key, lock_server, supervising_since)
VALUES ($1, $2, $3, $4, pg_postmaster_start_time(), CASE WHEN $5 THEN now() END)
ON CONFLICT (id) DO UPDATE
SET last_seen = now(), lock_key = $4, lock_server = pg_postmaster_start_time(),
    supervising_since = CASE WHEN $5 THEN coalesce(workers.supervising_since, now()) END;

-- name: cluster_workers
-- Every live worker (draining ones too) for `seriatim status`: where it runs, its mailboxes,
-- and since when its supervisor is the active one (NULL: a standby).
SELECT w.id, w.hostname, w.pid, w.started_at, w.last_seen, w.draining, w.supervising_since,
       (SELECT count(*) FROM clients c WHERE c.host = w.id AND c.state = 'active') AS load
FROM workers w
WHERE w.id IN (SELECT live_worker_ids($1, $2))
ORDER BY w.id;

-- name: take_worker_lock
-- Held by the heartbeat's session until it ends (actors/store/lease.py); false when taken.
SELECT pg_try_advisory_lock($1, $2);

-- name: forget_worker
DELETE FROM workers WHERE id = $1;

-- name: live_workers
-- Workers that may take mailboxes: alive and not draining.
SELECT w.id, (SELECT count(*) FROM clients c WHERE c.host = w.id AND c.state = 'active') AS load
FROM workers w
WHERE w.id IN (SELECT live_worker_ids($1, $2)) AND NOT w.draining
ORDER BY w.id;

-- name: mark_draining
UPDATE workers SET draining = true WHERE id = $1;

-- name: mailboxes_placed_on
SELECT id, epoch FROM clients WHERE host = $1 AND state = 'active';

-- name: lock_signing_keys
SELECT pg_advisory_xact_lock(7215002);

-- name: signing_keys
SELECT kid, private_jwk, created_at, revoked_at IS NOT NULL AS revoked
FROM signing_keys ORDER BY created_at, kid;

-- name: revoke_signing_key
-- No row: no such key, or it was revoked already.
UPDATE signing_keys SET revoked_at = now() WHERE kid = $1 AND revoked_at IS NULL RETURNING kid;

-- name: insert_signing_key
INSERT INTO signing_keys (kid, private_jwk) VALUES ($1, $2::jsonb) ON CONFLICT DO NOTHING;

-- name: ping
SELECT 1;

-- name: durability
-- What a crash or a failover could lose (actors/store/durability.py). Standbys are the physical
-- ones pg_stat_replication lists, base backups and logical subscribers left out; a role
-- without pg_read_all_stats sees their states as NULL, which count as asynchronous.
WITH standbys AS (
    SELECT r.sync_state FROM pg_stat_replication r
    WHERE r.state IS DISTINCT FROM 'backup'
      AND NOT EXISTS (
          SELECT 1 FROM pg_replication_slots s
          WHERE s.active_pid = r.pid AND s.slot_type = 'logical'
      )
)
SELECT current_setting('fsync') AS fsync,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       (SELECT count(*) FROM standbys)::int AS standbys,
       (SELECT count(*) FROM standbys WHERE sync_state IN ('sync', 'quorum'))::int
           AS synchronous_standbys;

-- name: observability_gauges
-- The journal-wide figures the metrics report: mailboxes by state, the backlog, the age of
-- the oldest unfinished event (each client's head, by the (client_id, seq) index) and the
-- relay lag (the oldest event not yet published, by the outbox index).
WITH states AS (  -- one scan of clients for the counts
    SELECT count(*) FILTER (WHERE state = 'idle') AS idle,
           count(*) FILTER (WHERE state = 'active') AS active,
           count(*) FILTER (WHERE state = 'suspended') AS suspended,
           coalesce(sum(last_seq - done_seq) FILTER (WHERE done_seq < last_seq), 0) AS backlog
    FROM clients
)
SELECT
    states.idle, states.active, states.suspended,
    (SELECT count(*)
     FROM clients c JOIN events e ON e.client_id = c.id AND e.seq = c.done_seq + 1
     WHERE c.done_seq < c.last_seq AND c.state = 'active' AND e.status = 'retrying')
        AS backing_off,
    states.backlog,
    (SELECT extract(epoch FROM now() - min(e.accepted_at))::float8
     FROM clients c JOIN events e ON e.client_id = c.id AND e.seq = c.done_seq + 1
     WHERE c.done_seq < c.last_seq) AS oldest_age,
    (SELECT extract(epoch FROM now() - min(accepted_at))::float8
     FROM events WHERE published_at IS NULL AND status NOT IN ('succeeded', 'dead'))
        AS relay_lag
FROM states;

-- name: client_settings
SELECT id, name, admin, disabled, webhook_type_pointer, rate_per_second, rate_burst,
       max_backlog, last_seq - done_seq AS backlog, max_stored_events, max_stored_bytes,
       stored_events, stored_bytes
FROM clients WHERE id = $1 AND deleted_at IS NULL;

-- name: set_client_settings
-- Absent fields keep their value ($3/$4 only with $5, $6 only with $7, $8 only with $9, $10
-- only with $11); NULL is the default.
UPDATE clients
SET webhook_type_pointer = coalesce($2, webhook_type_pointer),
    rate_per_second = CASE WHEN $5 THEN $3 ELSE rate_per_second END,
    rate_burst = CASE WHEN $5 THEN $4 ELSE rate_burst END,
    max_backlog = CASE WHEN $7 THEN $6 ELSE max_backlog END,
    max_stored_events = CASE WHEN $9 THEN $8 ELSE max_stored_events END,
    max_stored_bytes = CASE WHEN $11 THEN $10 ELSE max_stored_bytes END
WHERE id = $1 AND deleted_at IS NULL
RETURNING id;

-- name: webhook_verifiers
-- The type pointer and the secrets that verify a client's webhooks now; no row: no client.
SELECT c.webhook_type_pointer,
       coalesce(array_agg(s.secret ORDER BY s.created_at DESC)
                FILTER (WHERE s.secret IS NOT NULL), '{}') AS secrets
FROM clients c
LEFT JOIN webhook_secrets s
       ON s.client_id = c.id AND (s.expires_at IS NULL OR s.expires_at > now())
WHERE c.id = $1 AND NOT c.disabled
GROUP BY c.id;

-- name: lock_client
-- The client's row, locked (FOR NO KEY UPDATE, as every statement on clients) until the end of
-- the transaction; no row: no such client.
SELECT id FROM clients WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE;

-- name: valid_webhook_secrets
SELECT count(*) FROM webhook_secrets
WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > now());

-- name: add_webhook_secret
-- Secrets still valid expire $3 seconds from now (sooner if they already would).
WITH retire AS (
    UPDATE webhook_secrets
    SET expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $3))
    WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > now())
)
INSERT INTO webhook_secrets (client_id, secret)
SELECT id, $2 FROM clients WHERE id = $1 AND deleted_at IS NULL
RETURNING id, created_at;

-- name: webhook_secrets
SELECT id, created_at, expires_at FROM webhook_secrets
WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at;

-- name: take_retention_lock
-- Held by the session that deletes finished events, so one deleter runs at a time.
SELECT pg_try_advisory_lock(7215011);

-- name: give_retention_lock
SELECT pg_advisory_unlock(7215011);

-- name: retire_events
-- One batch of retention: at most $2 finished events (succeeded or dead) finished more than
-- $1 seconds ago, oldest first, that no event redrives (a redrive still needs its original;
-- once the redrive itself is retired, the original goes in a later batch). Their clients'
-- rows are locked first, in id order, as every statement that locks clients and then events
-- does, so the deleter cannot deadlock with an accept or an outcome; their stored events and
-- bytes go down by what the deleted rows counted. Their idempotency keys are free from then on.
-- Their attempts (the timeline) are deleted with them.
-- A suspended mailbox's dead events stay (the one it halted on is what its operator must see
-- and redrive), checked again under the client's lock.
WITH candidate AS MATERIALIZED (
    SELECT e.id, e.client_id FROM events e
    WHERE e.status IN ('succeeded', 'dead')
      AND e.finished_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM events r WHERE r.redrive_of = e.id)
      AND NOT (e.status = 'dead'
               AND EXISTS (SELECT 1 FROM clients c
                           WHERE c.id = e.client_id AND c.state = 'suspended'))
    ORDER BY e.finished_at
    LIMIT $2
),
client_locks AS MATERIALIZED (
    SELECT id, state FROM clients WHERE id IN (SELECT client_id FROM candidate)
    ORDER BY id FOR NO KEY UPDATE
),
deleted AS (
    DELETE FROM events e
    USING candidate
    WHERE e.id = candidate.id AND e.status IN ('succeeded', 'dead')
      AND (SELECT count(*) FROM client_locks) >= 0  -- the clients are locked before any delete
      AND NOT (e.status = 'dead'
               AND e.client_id IN (SELECT id FROM client_locks WHERE state = 'suspended'))
      AND NOT EXISTS (SELECT 1 FROM events r WHERE r.redrive_of = e.id)
    RETURNING e.client_id, e.seq, e.bytes
),
timelines AS (  -- the deleted events' attempts go with them
    DELETE FROM attempts a USING deleted
    WHERE a.client_id = deleted.client_id AND a.seq = deleted.seq
),
per_client AS (
    SELECT client_id, count(*) AS events, sum(bytes) AS bytes FROM deleted GROUP BY client_id
),
counted AS (
    UPDATE clients c
    SET stored_events = c.stored_events - per_client.events,
        stored_bytes = c.stored_bytes - per_client.bytes
    FROM per_client WHERE c.id = per_client.client_id
)
SELECT count(*) AS events FROM deleted;

-- name: insert_audit_entry
INSERT INTO audit_log (actor, action, client_id, event_id, detail)
VALUES ($1, $2, $3, $4, $5::jsonb)
RETURNING id, at;

-- name: audit_entries
-- Newest first, before id $1 (NULL: from the newest); $2: one client's only (NULL: all).
SELECT id, at, actor, action, client_id, event_id, detail
FROM audit_log
WHERE ($1::bigint IS NULL OR id < $1) AND ($2::uuid IS NULL OR client_id = $2)
ORDER BY id DESC
LIMIT $3;

-- name: console_signing_key
-- The key new console sessions are signed with: the newest; ($1, $2) is stored when there is
-- none yet.
WITH made AS (
    INSERT INTO console_session_keys (kid, key)
    SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM console_session_keys)
    ON CONFLICT (kid) DO NOTHING
    RETURNING kid, key
)
SELECT kid, key FROM made
UNION ALL
(SELECT kid, key FROM console_session_keys ORDER BY created_at DESC, kid DESC LIMIT 1)
LIMIT 1;

-- name: console_verifying_key
SELECT key FROM console_session_keys WHERE kid = $1;

-- name: rotate_console_key
-- A new console signing key ($1, $2) signs from now on; the expired and ended sessions go, and
-- so do the older keys no live session was signed with.
WITH added AS (
    INSERT INTO console_session_keys (kid, key) VALUES ($1, $2) RETURNING kid
),
swept AS (
    DELETE FROM console_sessions WHERE expires_at <= now() OR ended_at IS NOT NULL
    RETURNING kid
),
dropped AS (
    DELETE FROM console_session_keys k
    WHERE NOT EXISTS (SELECT 1 FROM console_sessions s
                      WHERE s.kid = k.kid AND s.expires_at > now() AND s.ended_at IS NULL)
    RETURNING kid
)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM dropped) AS dropped;

-- name: console_session_start
-- A console session of client $1 (admin: $2) signed with key $3, its id hashed $4, its CSRF
-- token $5, lasting $6 seconds. Issued at the database's clock, no earlier than the client's
-- tokens_valid_after (a session begun in the second of a revocation must not predate it).
-- The client's expired and ended sessions go.
WITH swept AS (
    DELETE FROM console_sessions
    WHERE client_id = $1 AND (expires_at <= now() OR ended_at IS NOT NULL)
)
INSERT INTO console_sessions (id_hash, client_id, admin, kid, csrf, issued_at, expires_at)
SELECT $4, c.id, $2, $3, $5, t.at, t.at + make_interval(secs => $6)
FROM clients c,
     LATERAL (SELECT greatest(clock_timestamp(), c.tokens_valid_after) AS at) t
WHERE c.id = $1
RETURNING issued_at, expires_at;

-- name: console_session
-- The live session of id hash $1 signed with key $2: not ended, not expired by the database's
-- clock, its client neither disabled nor deleted nor revoked since (tokens_valid_after), and
-- an admin's only while its client is one.
SELECT s.client_id, s.admin AND c.admin AS admin, s.csrf, s.issued_at, s.expires_at
FROM console_sessions s
JOIN clients c ON c.id = s.client_id
WHERE s.id_hash = $1 AND s.kid = $2 AND s.ended_at IS NULL AND s.expires_at > now()
  AND NOT c.disabled AND c.deleted_at IS NULL
  AND (c.tokens_valid_after IS NULL OR s.issued_at >= c.tokens_valid_after);

-- name: console_session_end
UPDATE console_sessions SET ended_at = now() WHERE id_hash = $1 AND ended_at IS NULL;

-- name: console_clients
-- The console's list of clients, ordered by a sort key then id, from the cursor ($5, $6) on.
-- $1 stored state or NULL; $2 a LIKE pattern on the name or NULL; $3 hide idle ones (idle
-- with nothing to do); $4 'backlog' (largest first) or 'age' (oldest unfinished first).
-- Only clients with a backlog have keys of their own: by backlog they come in order from
-- clients_by_backlog, by age those few are sorted. Every other client has the same key (0: no
-- backlog; infinity: nothing unfinished), so they follow in id order straight from the
-- primary key. Each part stops reading once it has a page.
WITH by_backlog AS (
    SELECT c.id, (c.done_seq - c.last_seq)::float8 AS sort_key
    FROM clients c
    WHERE $4 = 'backlog' AND c.done_seq < c.last_seq
      AND (c.done_seq - c.last_seq, c.id)
          > (coalesce($5::float8::bigint, -9223372036854775807),
             coalesce($6::uuid, '00000000-0000-0000-0000-000000000000'))
      AND c.deleted_at IS NULL
      AND ($1::text IS NULL OR c.state = $1)
      AND ($2::text IS NULL OR c.name ILIKE $2)
    ORDER BY c.done_seq - c.last_seq, c.id
    LIMIT $7
),
by_age AS (
    SELECT c.id, coalesce(extract(epoch FROM head.accepted_at), 'infinity')::float8 AS sort_key
    FROM clients c
    LEFT JOIN events head ON head.client_id = c.id AND head.seq = c.done_seq + 1
    WHERE $4 = 'age' AND c.done_seq < c.last_seq AND c.deleted_at IS NULL
      AND ($1::text IS NULL OR c.state = $1)
      AND ($2::text IS NULL OR c.name ILIKE $2)
),
rest AS (
    SELECT CASE WHEN $4 = 'age' THEN 'infinity'::float8 ELSE 0::float8 END AS sort_key
),
page AS (
    SELECT * FROM by_backlog
    UNION ALL
    (SELECT * FROM by_age
     WHERE $5::float8 IS NULL OR (sort_key, id) > ($5::float8, $6::uuid)
     ORDER BY sort_key, id
     LIMIT $7)
    UNION ALL
    (SELECT c.id, rest.sort_key FROM clients c, rest
     WHERE NOT c.done_seq < c.last_seq  -- estimated as most rows (`=` would be 0.5%)
       AND c.deleted_at IS NULL
       AND ($1::text IS NULL OR c.state = $1)
       AND ($2::text IS NULL OR c.name ILIKE $2)
       AND (NOT $3 OR c.state <> 'idle')
       -- past the cursor: all of them, those after its id, or none
       AND c.id > CASE WHEN $5::float8 IS NULL OR $5::float8 < rest.sort_key
                       THEN '00000000-0000-0000-0000-000000000000'::uuid
                       WHEN $5::float8 = rest.sort_key THEN $6::uuid
                       ELSE 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid END
     ORDER BY c.id
     LIMIT $7)
)
SELECT c.id, c.name, c.admin, c.disabled, c.state, c.host, c.restarts,
       c.last_seq - c.done_seq AS backlog, c.done_seq, c.last_seq, c.suspended_reason,
       head.accepted_at AS oldest_unfinished, head.status AS head_status,
       coalesce(head.error, (SELECT d.error FROM events d
                             WHERE d.client_id = c.id AND d.status = 'dead'
                             ORDER BY d.seq DESC LIMIT 1))::text AS last_error,
       p.sort_key
FROM (SELECT * FROM page ORDER BY sort_key, id LIMIT $7) p
JOIN clients c ON c.id = p.id
LEFT JOIN events head ON head.client_id = c.id AND head.seq = c.done_seq + 1
ORDER BY p.sort_key, p.id;

-- name: console_tape
-- A client's events from seq $2 to $3, with the ids of the events that redrove each.
SELECT e.id, e.seq, e.type, e.status, e.attempts, e.accepted_at, e.started_at, e.finished_at,
       e.error::text AS error, e.redrive_of,
       (SELECT array_agg(r.id ORDER BY r.seq) FROM events r WHERE r.redrive_of = e.id)
           AS redriven_by
FROM events e
WHERE e.client_id = $1 AND e.seq BETWEEN $2 AND $3
ORDER BY e.seq;

-- name: console_event
-- One event of a client, its payload cut to $3 characters of JSON text.
SELECT e.id, e.client_id, e.seq, e.type, e.status, e.attempts, e.accepted_at, e.published_at,
       e.started_at, e.finished_at, e.redrive_of, e.traceparent,
       left(e.payload::text, $3) AS payload, length(e.payload::text) AS payload_length,
       left(e.result::text, $3) AS result, e.error::text AS error,
       (SELECT array_agg(r.id ORDER BY r.seq) FROM events r WHERE r.redrive_of = e.id)
           AS redriven_by
FROM events e
WHERE e.client_id = $1 AND e.id = $2;

-- name: dead_events_matching
-- Dead events not yet redriven, by client ($1, NULL: all) and time of death ($2 <= t < $3,
-- NULL: open), in seq order per client; at most $4.
SELECT e.client_id, e.id, e.seq
FROM events e
JOIN clients c ON c.id = e.client_id AND c.deleted_at IS NULL
WHERE e.status = 'dead'
  AND ($1::uuid IS NULL OR e.client_id = $1)
  AND ($2::timestamptz IS NULL OR e.finished_at >= $2)
  AND ($3::timestamptz IS NULL OR e.finished_at < $3)
  AND NOT EXISTS (SELECT 1 FROM events r WHERE r.redrive_of = e.id)
ORDER BY e.client_id, e.seq
LIMIT $4;

-- name: event_attempts
-- One event's attempts, oldest first: its timeline.
SELECT a.attempt, a.started_at, a.finished_at, a.error::text AS error, a.worker
FROM attempts a JOIN events e ON e.client_id = a.client_id AND e.seq = a.seq
WHERE e.id = $1 AND e.client_id = $2
ORDER BY a.attempt;

-- name: event_owner
SELECT client_id FROM events WHERE id = $1;

-- name: insert_first_admin
-- An admin client, only when the journal has no client at all (its first start).
INSERT INTO clients (name, secret_hash, admin)
SELECT $1, $2, true WHERE NOT EXISTS (SELECT 1 FROM clients)
RETURNING id;

-- name: console_minutes
-- Events that ended in each of the last $2 minutes, succeeded and dead, of one client ($1)
-- or of all.
SELECT date_trunc('minute', finished_at) AS minute,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'dead') AS dead
FROM events
WHERE finished_at > date_trunc('minute', now()) - make_interval(mins => $2 - 1)
  AND ($1::uuid IS NULL OR client_id = $1)
GROUP BY 1
ORDER BY 1;

-- name: insert_redrive_job
-- A redrive-by-filter job of $3 events, run by the gateway $2 for the operator $1.
INSERT INTO redrive_jobs (actor, runner, total) VALUES ($1, $2, $3)
RETURNING id, actor, runner, total, processed, redriven, state, error, created_at, seen_at,
          finished_at;

-- name: redrive_job_progress
-- The running job's progress, which also says its gateway is still at it. No row: the job is
-- no longer running (a reader found it silent and marked it interrupted): it must stop.
UPDATE redrive_jobs SET processed = $2, redriven = $3, seen_at = now()
WHERE id = $1 AND state = 'running'
RETURNING id;

-- name: finish_redrive_job
-- The running job ends ($4: finished, failed or interrupted); no row when it was not running.
UPDATE redrive_jobs
SET processed = $2, redriven = $3, state = $4, error = $5, seen_at = now(), finished_at = now()
WHERE id = $1 AND state = 'running'
RETURNING id;

-- name: redrive_job
-- One job; a running one whose gateway has said nothing for $2 seconds is marked interrupted
-- first, with the progress it last reported.
WITH silent AS (
    UPDATE redrive_jobs SET state = 'interrupted', finished_at = now(),
                            error = 'its gateway stopped reporting'
    WHERE id = $1 AND state = 'running' AND seen_at < now() - make_interval(secs => $2)
    RETURNING id, actor, runner, total, processed, redriven, state, error, created_at, seen_at,
              finished_at
)
SELECT * FROM silent
UNION ALL
SELECT id, actor, runner, total, processed, redriven, state, error, created_at, seen_at,
       finished_at
FROM redrive_jobs WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM silent);
