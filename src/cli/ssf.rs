//! `lectern ssf`: Shared Signals receivers (`clients`), their `streams`, and learners linked to a
//! trusted identity provider's subjects (`link`, `unlink`). Each works on the database alone.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;

use super::{DbArgs, open};
use crate::{
    accounts::{self, Email},
    clock::Clock,
    db,
    ssf::{clients, streams},
};

#[derive(Debug, Subcommand)]
pub enum SsfCommand {
    /// Receivers: the applications told when a sign-in ends.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Receivers' streams.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Link a learner to a trusted issuer's subject (`iss_sub`), so that its events reach them.
    Link {
        email: String,
        /// The issuer, as in LECTERN_SSF_TRUST.
        #[arg(long)]
        issuer: String,
        /// The learner's subject at that issuer.
        #[arg(long)]
        sub: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Remove a link made with `link`.
    Unlink {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        sub: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a receiver: prints its client id and secret (the secret only this once).
    Create {
        name: String,
        /// The `aud` of its events, e.g. the receiver's URL (default: its client id).
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List receivers.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Remove a receiver, its streams and their pending events.
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// List every receiver's streams.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Enable, pause or disable a stream; its receiver is told (`stream-updated`).
    Status {
        id: String,
        #[arg(value_parser = ["enabled", "paused", "disabled"])]
        status: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

async fn pool(db: &DbArgs) -> anyhow::Result<db::Pool> {
    let pool = open(db).await?;
    db::migrate(&pool).await?;
    Ok(pool)
}

pub async fn run(cmd: SsfCommand) -> anyhow::Result<()> {
    match cmd {
        SsfCommand::Clients(cmd) => run_clients(cmd).await,
        SsfCommand::Streams(cmd) => run_streams(cmd).await,
        SsfCommand::Link {
            email,
            issuer,
            sub,
            json,
            db,
        } => {
            let pool = pool(&db).await?;
            let parsed = Email::parse(&email).map_err(|m| anyhow::anyhow!("EMAIL: {m}"))?;
            let user = accounts::find_by_email(&pool, &parsed)
                .await?
                .with_context(|| format!("no account with email {}", parsed.as_str()))?;
            let issuer = issuer.trim_end_matches('/');
            sqlx::query(
                "insert into ssf_links (iss, sub, user_id) values ($1, $2, $3)
                 on conflict (iss, sub) do update set user_id = excluded.user_id",
            )
            .bind(issuer)
            .bind(&sub)
            .bind(&user.id)
            .execute(&pool)
            .await?;
            if json {
                println!(
                    "{}",
                    json!({"linked": user.email, "iss": issuer, "sub": sub})
                );
            } else {
                println!("linked {} to {sub} at {issuer}", user.email);
            }
            Ok(())
        }
        SsfCommand::Unlink {
            issuer,
            sub,
            json,
            db,
        } => {
            let pool = pool(&db).await?;
            let issuer = issuer.trim_end_matches('/');
            let gone = sqlx::query("delete from ssf_links where iss = $1 and sub = $2")
                .bind(issuer)
                .bind(&sub)
                .execute(&pool)
                .await?
                .rows_affected();
            if gone == 0 {
                bail!("no link for {sub} at {issuer}");
            }
            if json {
                println!("{}", json!({"unlinked": sub, "iss": issuer}));
            } else {
                println!("unlinked {sub} at {issuer}");
            }
            Ok(())
        }
    }
}

async fn run_clients(cmd: ClientsCommand) -> anyhow::Result<()> {
    match cmd {
        ClientsCommand::Create {
            name,
            audience,
            json,
            db,
        } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                bail!("NAME: give the receiver a name of 1 to 100 characters");
            }
            let pool = pool(&db).await?;
            let now = Clock::system().now();
            let (client, secret) = clients::create(&pool, name, audience.as_deref(), now).await?;
            if json {
                println!(
                    "{}",
                    json!({
                        "client_id": client.id,
                        "client_secret": secret,
                        "name": client.name,
                        "audience": client.audience,
                    })
                );
            } else {
                println!("registered {} ({})", client.name, client.audience);
                println!("client_id:     {}", client.id);
                println!("client_secret: {secret}");
                println!("(the secret is shown only now)");
            }
            Ok(())
        }
        ClientsCommand::List { json, db } => {
            let pool = pool(&db).await?;
            let all = clients::list(&pool).await?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|c| json!({"client_id": c.id, "name": c.name, "audience": c.audience, "created_at": c.created_at}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if all.is_empty() {
                println!("no receivers");
            } else {
                println!(
                    "{:<22}  {:<24}  {:<32}  registered",
                    "client_id", "name", "audience"
                );
                for c in &all {
                    println!(
                        "{:<22}  {:<24}  {:<32}  {}",
                        c.id,
                        c.name,
                        c.audience,
                        crate::clock::format_time(c.created_at)
                    );
                }
            }
            Ok(())
        }
        ClientsCommand::Delete { id, json, db } => {
            let pool = pool(&db).await?;
            if !clients::delete(&pool, &id).await? {
                bail!("no receiver with client id {id}");
            }
            if json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted receiver {id}, its streams and their pending events");
            }
            Ok(())
        }
    }
}

async fn run_streams(cmd: StreamsCommand) -> anyhow::Result<()> {
    match cmd {
        StreamsCommand::List { json, db } => {
            let pool = pool(&db).await?;
            let all = streams::all(&pool).await?;
            let rows: Vec<_> = all
                .iter()
                .map(|s| {
                    json!({
                        "stream_id": s.id,
                        "client_id": s.client_id,
                        "method": match s.method { streams::Method::Push => "push", streams::Method::Poll => "poll" },
                        "endpoint_url": s.endpoint_url,
                        "status": s.status.as_str(),
                        "failures": s.failures,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else if rows.is_empty() {
                println!("no streams");
            } else {
                println!(
                    "{:<22}  {:<22}  {:<5}  {:<9}  endpoint",
                    "stream_id", "client_id", "via", "status"
                );
                for r in &rows {
                    println!(
                        "{:<22}  {:<22}  {:<5}  {:<9}  {}",
                        r["stream_id"].as_str().unwrap_or_default(),
                        r["client_id"].as_str().unwrap_or_default(),
                        r["method"].as_str().unwrap_or_default(),
                        r["status"].as_str().unwrap_or_default(),
                        r["endpoint_url"].as_str().unwrap_or("-"),
                    );
                }
            }
            Ok(())
        }
        StreamsCommand::Status {
            id,
            status,
            reason,
            json,
            db,
        } => {
            let pool = pool(&db).await?;
            let status =
                streams::Status::parse(&status).context("STATUS: enabled, paused or disabled")?;
            let now = Clock::system().now();
            if !streams::change_status(&pool, &id, status, reason.as_deref(), Some(now)).await? {
                bail!("no stream with id {id}");
            }
            if json {
                println!("{}", json!({"stream_id": id, "status": status.as_str()}));
            } else {
                println!("stream {id} is {}; its receiver is told", status.as_str());
            }
            Ok(())
        }
    }
}
