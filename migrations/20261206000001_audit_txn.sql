-- one action that writes several audit rows (a password change ending every other sign-in, a
-- sign-out everywhere) gives them one transaction id, so the account page shows it once and the
-- events sent to other applications for it carry the same `txn`.
alter table audit_events add column txn text;

-- the endings every instance reads each second (see auth::ledger).
create index sign_ins_by_end on sign_ins (revoked_at) where revoked_at is not null;

-- whether a sign-in was made on a shared or public computer (1) or not (0).
alter table sign_ins add column shared integer not null default 0;

-- an account an operator disabled: its sign-ins ended, and it cannot sign in until enabled.
alter table users add column disabled_at bigint;

-- the endings of a deleted account's sign-ins, kept without anything that names the learner
-- until their lifetime runs out, so that every instance keeps refusing them (see auth::ledger).
create table forgotten_endings (
    sign_in_id text primary key,
    revoked_at bigint not null,
    expires_at bigint not null
);
