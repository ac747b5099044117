-- one action that writes several audit rows (a password change ending every other sign-in, a
-- sign-out everywhere) gives them one transaction id, so the account page shows it once and the
-- events sent to other applications for it carry the same `txn`.
alter table audit_events add column txn text;

-- the endings every instance reads each second (see auth::ledger).
create index sign_ins_by_end on sign_ins (revoked_at) where revoked_at is not null;
