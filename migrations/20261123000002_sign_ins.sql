-- sign-ins, refresh tokens and the audit log.

-- one row per successful sign-in (html form or api). the id is the `sid` claim of its access
-- tokens and the refresh-token family; it is never the session cookie's value.
create table sign_ins (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    created_at bigint not null,
    expires_at bigint not null,
    ip text not null,
    user_agent text not null,
    revoked_at bigint,
    revoked_reason text
);
create index sign_ins_by_user on sign_ins (user_id, created_at);

-- refresh tokens are stored only as sha-256 hashes; a token is used once (used_at) and its
-- successor is issued in the same family.
create table refresh_tokens (
    token_hash text primary key,
    sign_in_id text not null references sign_ins (id) on delete cascade,
    issued_at bigint not null,
    used_at bigint
);
create index refresh_tokens_by_sign_in on refresh_tokens (sign_in_id);

-- every sign-in, sign-out, refresh-token reuse and revocation.
create table audit_events (
    id text primary key,
    event text not null,
    user_id text,
    sign_in_id text,
    at bigint not null,
    ip text not null,
    user_agent text not null
);
create index audit_events_by_user on audit_events (user_id, at);
