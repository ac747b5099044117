//! What needs the password entered recently asks for it first, without losing what was asked:
//! a form that sends the same request again with the password (see [`crate::auth::recent`]). An
//! htmx request gets the form in place of the page's content.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use axum_htmx::{HxReswap, HxRetarget, SwapOption};

use crate::layout::Layout;

/// What to ask for, and what to send again once the password is given.
pub struct Ask<'a> {
    /// Where the form is sent: the address of the request that needs the password.
    pub action: &'a str,
    /// Its fields, besides the CSRF token and the password.
    pub fields: Vec<(&'a str, String)>,
    /// What the learner was doing, in words: "sign out that device".
    pub what: &'a str,
    /// Why the password given was refused, if it was.
    pub error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/confirm.html")]
struct ConfirmPage<'a> {
    layout: Layout,
    action: &'a str,
    fields: Vec<(&'a str, String)>,
    what: &'a str,
    error: Option<String>,
    csrf_token: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "partials/confirm_form.html")]
struct ConfirmForm<'a> {
    action: &'a str,
    fields: Vec<(&'a str, String)>,
    what: &'a str,
    error: Option<String>,
    csrf_token: String,
}

/// The password prompt: the whole page, or for htmx the form in place of the page's content.
pub fn ask(ask: Ask<'_>, layout: Layout, htmx: bool) -> Response {
    let csrf_token = layout.csrf_token.clone();
    if htmx {
        let form = ConfirmForm {
            action: ask.action,
            fields: ask.fields,
            what: ask.what,
            error: ask.error,
            csrf_token,
        };
        let target = HxRetarget("#main".to_owned());
        return (target, HxReswap(SwapOption::InnerHtml), form).into_response();
    }
    let status = if ask.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = ConfirmPage {
        layout,
        action: ask.action,
        fields: ask.fields,
        what: ask.what,
        error: ask.error,
        csrf_token,
    };
    (status, page).into_response()
}
