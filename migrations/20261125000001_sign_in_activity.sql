-- when a sign-in was last active: written when its idle deadline is moved (at most once a
-- minute) and at each refresh, never on every request. null until the first such write.
alter table sign_ins add column last_seen_at bigint;
