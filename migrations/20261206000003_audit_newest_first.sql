-- the account page reads a learner's newest rows, ties broken by id: with the id in the index
-- the read stops at the rows it shows instead of sorting every row of the learner's.
drop index audit_events_by_user;
create index audit_events_by_user on audit_events (user_id, at, id);
