//! The account page: profile, the sign-ins that still work, recent activity.

use askama::Template;
use askama_web::WebTemplate;
use axum::{Router, extract::State, routing::get};

use crate::{
    accounts::User,
    audit,
    auth::{CurrentUser, sign_ins::SignIn},
    error::Result,
    layout::Layout,
    state::AppState,
};

/// The learner's routes; `app` puts them behind `guards::learners_only`.
pub fn router() -> Router<AppState> {
    Router::new().route("/account", get(account))
}

#[derive(Template, WebTemplate)]
#[template(path = "account/account.html")]
struct AccountPage {
    layout: Layout,
    user: User,
    current_sid: String,
    sign_ins: Vec<SignIn>,
    events: Vec<audit::Entry>,
}

async fn account(State(state): State<AppState>, current: CurrentUser) -> Result<AccountPage> {
    let sign_ins = state.sign_ins.live_for_user(&current.user.id).await?;
    let events = audit::recent_for_user(&state.db, &current.user.id, 20).await?;
    Ok(AccountPage {
        layout: current.layout(),
        current_sid: current.sid.clone(),
        user: current.user,
        sign_ins,
        events,
    })
}
