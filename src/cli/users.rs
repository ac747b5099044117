//! `lectern users`: learners' accounts.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;

use super::{DbArgs, connect, learner, open};
use crate::{
    accounts::{self, CreateError, DisplayName, Email, Password},
    auth::passwords::Passwords,
    clock::Clock,
    config::ServeArgs,
    db,
    web::ClientInfo,
};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account; the password is read from the first line of standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Disable an account: every sign-in of it ends at once, on every instance, and it cannot
    /// sign in until enabled again.
    Disable {
        email: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Enable a disabled account again.
    Enable {
        email: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Delete an account: every sign-in of it ends, and its data goes (its audit rows stay,
    /// without anything that names the learner).
    Delete {
        email: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
}

pub async fn run(cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create {
            email,
            display_name,
            json,
            db,
        } => {
            let email = Email::parse(&email).map_err(|m| anyhow::anyhow!("--email: {m}"))?;
            let name = DisplayName::parse(&display_name)
                .map_err(|m| anyhow::anyhow!("--display-name: {m}"))?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = Password::parse(line.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|m| anyhow::anyhow!("password: {m}"))?;
            let pool = open(&db).await?;
            db::migrate(&pool).await?;
            let hash = Passwords::new(1)?.hash(password.secret()).await?;
            let now = Clock::system().now();
            let user = match accounts::create(&pool, &email, &name, hash, now).await {
                Ok(user) => user,
                Err(CreateError::EmailTaken) => {
                    bail!("an account with email {} already exists", email.as_str())
                }
                Err(CreateError::Other(err)) => return Err(anyhow::Error::new(err)),
            };
            if json {
                println!(
                    "{}",
                    json!({"id": user.id, "email": user.email, "display_name": user.display_name})
                );
            } else {
                println!(
                    "created {} <{}> ({})",
                    user.display_name, user.email, user.id
                );
            }
            Ok(())
        }
        UsersCommand::List { json, db } => {
            let pool = open(&db).await?;
            db::migrate(&pool).await?;
            let all = accounts::list(&pool).await?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|u| json!({"id": u.id, "email": u.email, "display_name": u.display_name, "created_at": u.created_at}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if all.is_empty() {
                println!("no users");
            } else {
                println!(
                    "{:<36}  {:<32}  {:<24}  created",
                    "id", "email", "display name"
                );
                for u in &all {
                    println!(
                        "{:<36}  {:<32}  {:<24}  {}",
                        u.id,
                        u.email,
                        u.display_name,
                        crate::clock::format_time(u.created_at)
                    );
                }
            }
            Ok(())
        }
        UsersCommand::Disable {
            email,
            json,
            settings,
        } => {
            let state = connect(&settings).await?;
            let user = learner(&state, &email, "EMAIL").await?;
            let ended = state
                .leaving
                .disable(&user.id, &ClientInfo::operator())
                .await?;
            let count = ended.sids().len();
            if json {
                println!("{}", json!({"disabled": user.email, "ended": count}));
            } else {
                println!("disabled {} ({count} sign-ins ended)", user.email);
            }
            Ok(())
        }
        UsersCommand::Enable {
            email,
            json,
            settings,
        } => {
            let state = connect(&settings).await?;
            let user = learner(&state, &email, "EMAIL").await?;
            state
                .leaving
                .enable(&user.id, &ClientInfo::operator())
                .await?;
            if json {
                println!("{}", json!({"enabled": user.email}));
            } else {
                println!("enabled {}", user.email);
            }
            Ok(())
        }
        UsersCommand::Delete {
            email,
            json,
            settings,
        } => {
            let state = connect(&settings).await?;
            let user = learner(&state, &email, "EMAIL").await?;
            state
                .leaving
                .delete(&user.id, &ClientInfo::operator())
                .await?;
            if json {
                println!("{}", json!({"deleted": user.email}));
            } else {
                println!("deleted {} and everything that named them", user.email);
            }
            Ok(())
        }
    }
}
