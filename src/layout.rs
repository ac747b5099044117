//! What `templates/base.html` needs on every page: the CSRF token, who is signed in, a notice,
//! and the addresses of the embedded style sheet and scripts.

/// The data of the page frame. Built by the auth layer's extractors for a request, or bare for
/// error pages rendered without one.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub csrf_token: String,
    /// The signed-in learner's display name; `None` for visitors.
    pub user_name: Option<String>,
    pub notice: Option<Notice>,
    /// The homepage right after a sign-out: the script clears client state and tells other tabs.
    pub signed_out: bool,
    /// For a signed-in learner's page: the sign-in's clock, for its script.
    pub sign_in: Option<SignInClock>,
    /// The page reloads itself in a moment: its request came without a bound cookie the browser
    /// was being given just then (see [`crate::auth::bound`]).
    pub look_again: bool,
}

/// What a signed-in page's script needs to warn before the idle timeout, keep a shared computer's
/// sign-in open while a page is, and keep typed work for the same learner.
#[derive(Debug, Clone, Default)]
pub struct SignInClock {
    /// The server's time (unix seconds), so the page can reckon with its own clock's offset.
    pub now: i64,
    /// When the sign-in idles out unless the learner is active.
    pub idle_until: i64,
    /// How long before that the page warns, in seconds.
    pub warn_before: i64,
    /// How often an open page sends a heartbeat, in seconds; 0 when it need not (not a shared
    /// computer).
    pub heartbeat_every: i64,
    /// An id of the learner for this page's script alone (not the account id).
    pub learner: String,
}

impl Layout {
    /// A layout for pages rendered without a request context (error pages).
    pub fn bare() -> Self {
        Self::default()
    }

    /// A visitor's page frame, with the stateless CSRF token their forms carry.
    pub fn visitor(csrf_token: String) -> Self {
        Self {
            csrf_token,
            ..Self::default()
        }
    }

    pub fn authenticated(&self) -> bool {
        self.user_name.is_some()
    }

    pub fn with_notice(mut self, notice: Notice) -> Self {
        self.notice = Some(notice);
        self
    }

    /// The versioned address of an embedded asset (see [`crate::assets`]).
    pub fn asset(&self, name: &str) -> String {
        crate::assets::url(name)
    }
}

/// A one-line message in the page's `aria-live` region.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `success`, `info` or `error`: the CSS modifier.
    pub kind: &'static str,
    pub text: String,
}

impl Notice {
    pub fn info(text: impl Into<String>) -> Self {
        Self {
            kind: "info",
            text: text.into(),
        }
    }

    pub fn success(text: impl Into<String>) -> Self {
        Self {
            kind: "success",
            text: text.into(),
        }
    }
}
