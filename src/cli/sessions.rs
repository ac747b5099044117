//! `lectern sessions`: the operators' view of sign-ins, through the same services the
//! servers use, so a revoke here is the same ending as a learner's sign-out.

use std::collections::HashMap;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::{
    accounts,
    auth::{
        records::{EndReason, SignIn},
        sign_ins::{Liveness, is_sign_in_id},
    },
    clock,
    config::ServeArgs,
    state::AppState,
    web::ClientInfo,
};

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sign-ins, newest first.
    List {
        /// Only this learner's.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Show one sign-in, live or ended.
    Show {
        /// A sign-in id is URL-safe base64, so it may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// End one sign-in (ID) or every sign-in of a learner (--user EMAIL), on every instance.
    Revoke {
        #[arg(
            required_unless_present = "user",
            conflicts_with = "user",
            allow_hyphen_values = true
        )]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
}

async fn emails(state: &AppState) -> anyhow::Result<HashMap<String, String>> {
    Ok(accounts::list(&state.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect())
}

fn as_json(s: &SignIn, email: &str, status: &str) -> Value {
    let described = s.described();
    json!({
        "id": s.id,
        "user_id": s.user_id,
        "email": email,
        "created_at": clock::rfc3339(s.created_at),
        "last_seen_at": clock::rfc3339(s.last_active_at()),
        "expires_at": clock::rfc3339(s.expires_at),
        "ip": s.ip,
        "device": described.device,
        "browser": described.browser,
        "status": status,
    })
}

/// An id as typed. A sign-in id may begin with `-` (see `allow_hyphen_values` above); anything
/// else that does is a mistyped option, refused without repeating it (it may carry a value such
/// as a URL with a password).
pub(super) fn typed_id(id: &str) -> anyhow::Result<()> {
    if id.starts_with('-') && !is_sign_in_id(id) {
        bail!(
            "an argument that begins with '-' is neither an option of this command nor a sign-in id (see --help)"
        );
    }
    Ok(())
}

pub async fn run(cmd: SessionsCommand) -> anyhow::Result<()> {
    match cmd {
        SessionsCommand::List {
            user,
            json,
            settings,
        } => {
            let state = super::connect(&settings).await?;
            let only = match &user {
                Some(email) => Some(super::learner(&state, email, "--user").await?),
                None => None,
            };
            let live = state
                .sign_ins
                .live(only.as_ref().map(|u| u.id.as_str()))
                .await?;
            let emails = emails(&state).await?;
            let email_of = |s: &SignIn| emails.get(&s.user_id).cloned().unwrap_or_default();
            if json {
                let rows: Vec<Value> = live
                    .iter()
                    .map(|s| as_json(s, &email_of(s), "live"))
                    .collect();
                println!("{}", Value::Array(rows));
            } else if live.is_empty() {
                println!("no live sign-ins");
            } else {
                println!(
                    "{:<22}  {:<32}  {:<20}  {:<20}  {:<15}  device, browser",
                    "id", "email", "signed in", "last active", "ip"
                );
                for s in &live {
                    let described = s.described();
                    println!(
                        "{:<22}  {:<32}  {:<20}  {:<20}  {:<15}  {}, {}",
                        s.id,
                        email_of(s),
                        clock::format_time(s.created_at),
                        s.last_active(),
                        s.ip,
                        described.device,
                        described.browser
                    );
                }
            }
            Ok(())
        }
        SessionsCommand::Show { id, json, settings } => {
            typed_id(&id)?;
            let state = super::connect(&settings).await?;
            let s = state
                .sign_ins
                .find(&id)
                .await?
                .with_context(|| format!("no sign-in with id {id}"))?;
            let status = match state.sign_ins.liveness(&id).await? {
                Liveness::Live(_) => "live".to_owned(),
                Liveness::Ended(reason) => format!("ended ({})", reason.as_str()),
            };
            let email = emails(&state).await?.remove(&s.user_id).unwrap_or_default();
            if json {
                println!("{}", as_json(&s, &email, &status));
            } else {
                let described = s.described();
                println!("id           {}", s.id);
                println!("learner      {email} ({})", s.user_id);
                println!("status       {status}");
                println!("signed in    {}", s.started());
                println!("last active  {}", s.last_active());
                println!("expires      {}", clock::format_time(s.expires_at));
                println!("ip           {}", s.ip);
                println!("device       {}", described.device);
                println!("browser      {}", described.browser);
            }
            Ok(())
        }
        SessionsCommand::Revoke {
            id,
            user,
            json,
            settings,
        } => {
            if let Some(id) = &id {
                typed_id(id)?;
            }
            let state = super::connect(&settings).await?;
            let operator = ClientInfo::operator();
            // Everything it reached: the sign-ins named, and every other sign-in held by a
            // browser session one of them held.
            let (whom, reached) = match (&id, &user) {
                (Some(id), _) => {
                    state
                        .sign_ins
                        .find(id)
                        .await?
                        .with_context(|| format!("no sign-in with id {id}"))?;
                    let whom = match state.sign_ins.liveness(id).await? {
                        Liveness::Live(_) => format!("sign-in {id}"),
                        // Ending again is harmless and settles anything left behind.
                        Liveness::Ended(reason) => format!(
                            "sign-in {id}, which had already ended ({})",
                            reason.as_str()
                        ),
                    };
                    (whom, state.sign_out.operator(id, &operator).await?)
                }
                (None, Some(email)) => {
                    let learner = super::learner(&state, email, "--user").await?;
                    let reached = state
                        .sign_out
                        .everywhere(
                            &learner.id,
                            EndReason::Revoked,
                            &operator,
                            &crate::audit::Txn::new(),
                        )
                        .await?;
                    (format!("the sign-ins of {}", learner.email), reached)
                }
                (None, None) => bail!("name a sign-in id or --user EMAIL"),
            };
            let ended = reached.sids().len();
            if json {
                println!("{}", json!({"ended": ended, "ids": reached.sids()}));
            } else {
                println!("ended {whom} ({ended} in all)");
            }
            Ok(())
        }
    }
}
