-- Shared Signals (SSF 1.0): Lectern tells other applications when a sign-in ends, and hears
-- from the identity providers it trusts. See src/ssf.rs.

-- the keys Security Event Tokens are signed with (RS256), shared by every instance. The newest is
-- the one that signs; an older one stays published until `retired_at` plus the outbox's give-up
-- age. The private key is sealed under a key derived from LECTERN_SECRET.
create table ssf_keys (
    kid text primary key,
    public_jwk text not null,
    private_sealed text not null,
    created_at bigint not null,
    retired_at bigint
);

-- receivers an operator registered (`lectern ssf clients create`): the SHA-256 of their secret,
-- and the audience their streams' events carry.
create table ssf_clients (
    id text primary key,
    name text not null,
    secret_hash text not null,
    audience text not null,
    created_at bigint not null
);

-- the streams receivers configured. `retry_at` and `failures` are a push stream's backoff;
-- `lease_until` and `leased_by` let one instance at a time deliver a stream's events, in order.
create table ssf_streams (
    id text primary key,
    client_id text not null,
    method text not null,
    endpoint_url text,
    authorization_header text,
    events_requested text,
    description text,
    status text not null,
    status_reason text,
    created_at bigint not null,
    verified_at bigint not null default 0,
    retry_at bigint not null default 0,
    failures integer not null default 0,
    lease_until bigint not null default 0,
    leased_by text
);
create index ssf_streams_by_client on ssf_streams (client_id);

-- the outbox: one row per event and stream, written in the same transaction as what it tells
-- (the ended sign-in's row, the new password, the deleted account), until the receiver has it.
-- The SET itself is made and signed when it is sent, from these fields. Rows go out in the
-- order of `at` (whole seconds) and then `seq` (when the row was written, in microseconds).
create table ssf_outbox (
    jti text primary key,
    stream_id text not null,
    kind text not null,
    user_id text,
    sign_in_id text,
    reason text,
    initiator text,
    detail text,
    txn text not null,
    at bigint not null,
    seq bigint not null
);
create index ssf_outbox_by_stream on ssf_outbox (stream_id, at, seq);

-- SETs received from trusted transmitters, so a replayed one is refused.
create table ssf_received (
    iss text not null,
    jti text not null,
    received_at bigint not null,
    primary key (iss, jti)
);

-- a trusted issuer's subject (`iss_sub`) an operator linked to a learner.
create table ssf_links (
    iss text not null,
    sub text not null,
    user_id text not null,
    primary key (iss, sub)
);

-- when a sign-in was bound to its browser's key (DBSC, see auth::bound), for the account page.
alter table sign_ins add column bound_at bigint;
