-- accounts, courses and enrolments. one schema for sqlite and postgresql:
-- ids are text, times are unix seconds (bigint), so sqlx's any driver carries them unchanged.

create table users (
    id text primary key,
    -- normalised (trimmed, lowercased) so uniqueness is case-insensitive
    email text not null unique,
    display_name text not null,
    -- argon2id phc string; also the session auth hash, so a new password ends old sessions
    password_hash text not null,
    created_at bigint not null
);

create table courses (
    id text primary key,
    title text not null,
    summary text not null,
    position integer not null
);

create table enrolments (
    user_id text not null references users (id) on delete cascade,
    course_id text not null references courses (id) on delete cascade,
    enrolled_at bigint not null,
    primary key (user_id, course_id)
);

-- the seed catalog
insert into courses (id, title, summary, position) values
    ('rust-foundations', 'Rust foundations', 'Ownership, borrowing and the type system, one small program at a time.', 1),
    ('web-security-101', 'Web security 101', 'Sessions, cookies, CSRF and how a careful site signs you out.', 2),
    ('sql-in-practice', 'SQL in practice', 'Schemas, indexes and queries that stay fast as the data grows.', 3),
    ('async-rust', 'Async Rust', 'Futures, tasks and tokio without the mystery.', 4),
    ('accessible-html', 'Accessible HTML', 'Forms, focus and landmarks that work for every learner.', 5);
