//! Reading ahead on a page view: when the session record is loaded from Redis, the browser
//! sign-in's liveness and the learner's enrolment mark are read in the same round trip, so the
//! checks that follow cost nothing more. Speed only: a request that reads nothing ahead does the
//! same checks itself, one round trip later.

use std::cell::RefCell;

use super::LiveSignIn;

tokio::task_local! {
    /// What the page view this task serves would read beside its session record.
    static READ_AHEAD: RefCell<ReadAhead>;
}

/// What a page view reads beside its session record, in the same Redis round trip: its browser
/// sign-in's liveness and its learner's enrolment mark. Set for one request by
/// [`ReadAhead::scope`], filled by the record's load, and taken once by the check that would
/// otherwise read them, so nothing of it outlives the request or is used twice.
#[derive(Debug)]
pub struct ReadAhead {
    session_id: String,
    sid: String,
    /// The change mark to read: the learner's, as this instance last saw the session.
    mark: String,
    read: Option<ReadBeside>,
}

/// A sign-in's liveness and a change mark, as one round trip found them; each is taken once
/// (`None` once taken).
#[derive(Debug)]
pub struct ReadBeside {
    pub live: Option<Option<LiveSignIn>>,
    pub mark: Option<Option<String>>,
    /// How long that round trip took (session record included).
    pub seconds: f64,
}

impl ReadAhead {
    /// Runs `request` with the session `session_id`'s load also reading sign-in `sid`'s liveness
    /// and the change mark `mark`.
    pub async fn scope<F: Future>(
        session_id: String,
        sid: String,
        mark: String,
        request: F,
    ) -> F::Output {
        let ahead = Self {
            session_id,
            sid,
            mark,
            read: None,
        };
        READ_AHEAD.scope(RefCell::new(ahead), request).await
    }

    /// The liveness this request's record load read for exactly this session and sign-in, once,
    /// with how long the round trip took.
    pub fn take_live(session_id: &str, sid: &str) -> Option<(Option<LiveSignIn>, f64)> {
        READ_AHEAD
            .try_with(|ahead| {
                let mut ahead = ahead.borrow_mut();
                if ahead.session_id != session_id || ahead.sid != sid {
                    return None;
                }
                let read = ahead.read.as_mut()?;
                Some((read.live.take()?, read.seconds))
            })
            .ok()
            .flatten()
    }

    /// The change mark this request's record load read, if it read `mark`, once.
    pub fn take_mark(mark: &str) -> Option<Option<String>> {
        READ_AHEAD
            .try_with(|ahead| {
                let mut ahead = ahead.borrow_mut();
                if ahead.mark != mark {
                    return None;
                }
                ahead.read.as_mut()?.mark.take()
            })
            .ok()
            .flatten()
    }

    /// The sign-in and mark to read with record `id`, when this request asked and has not read
    /// them yet.
    pub(super) fn wanted(id: &str) -> Option<(String, String)> {
        READ_AHEAD
            .try_with(|ahead| {
                let ahead = ahead.borrow();
                (ahead.session_id == id && ahead.read.is_none())
                    .then(|| (ahead.sid.clone(), ahead.mark.clone()))
            })
            .ok()
            .flatten()
    }

    pub(super) fn keep(read: ReadBeside) {
        let _ = READ_AHEAD.try_with(|ahead| ahead.borrow_mut().read = Some(read));
    }
}

/// The learner of each browser session this instance has recently shown a page to, so the next
/// view's record load can read that learner's enrolment mark too. Only a hint: a wrong or missing
/// entry costs that view a second round trip, never a wrong answer. A clone shares it.
#[derive(Clone)]
pub struct KnownLearners(moka::sync::Cache<String, String>);

impl Default for KnownLearners {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(300))
                .build(),
        )
    }
}

impl KnownLearners {
    /// The learner last seen on browser session `session_id`.
    pub fn of(&self, session_id: &str) -> Option<String> {
        self.0.get(session_id)
    }

    /// Notes that browser session `session_id` is `user_id`'s.
    pub fn remember(&self, session_id: &str, user_id: &str) {
        if self.0.get(session_id).as_deref() != Some(user_id) {
            self.0.insert(session_id.to_owned(), user_id.to_owned());
        }
    }
}
