//! A Redis Cluster of the test's own (three masters, each with a replica) that the test breaks: a
//! master is killed right after a sign-out, and a slot moves between masters in the middle of one.
//! Revoked credentials stay refused throughout, and the app recovers by itself.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use axum::http::StatusCode;

use crate::{
    helpers::*,
    logout::{SignedIn, assert_everything_refused, signed_in},
};

/// Six `redis-server` processes on loopback (killed when dropped), made into a cluster.
struct PrivateCluster {
    nodes: Vec<PrivateRedis>,
    _dir: tempfile::TempDir,
}

/// A master: its node id, port and slot ranges.
type Master = (String, u16, Vec<(u16, u16)>);

/// A port whose cluster bus port (+10000) is free as well.
fn cluster_port() -> u16 {
    loop {
        let port = 20_000 + (rand_u16() % 10_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn rand_u16() -> u16 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u16::from_le_bytes([bytes[0], bytes[1]])
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl PrivateCluster {
    /// `None` (the test says it skipped) where no redis-server exists, which CI does not allow;
    /// also `None` on the run whose own Redis is a cluster (this test ran in the run before).
    async fn start() -> Option<Self> {
        if std::env::var("TEST_REDIS_URL").is_ok_and(|url| url.contains("cluster")) {
            skipped("ran on the single-Redis pass");
            return None;
        }
        let (Some(server), Some(_)) = (find_on_path("redis-server"), find_on_path("redis-cli"))
        else {
            assert!(
                !real_services(),
                "CI must run this test: redis-server is missing"
            );
            skipped("needs redis-server and redis-cli");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<PrivateRedis> = Vec::new();
        for _ in 0..6 {
            let port = loop {
                let port = cluster_port();
                if nodes
                    .iter()
                    .all(|n| n.port != port && n.port + 10_000 != port && port + 10_000 != n.port)
                {
                    break port;
                }
            };
            let child = Command::new(&server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            nodes.push(PrivateRedis { child, port });
        }
        for node in &nodes {
            wait_for_port(node.port).await;
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create");
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_until_whole().await;
        Some(cluster)
    }

    /// Until every node says `cluster_state:ok` and every replica is in sync.
    async fn wait_until_whole(&self) {
        for _ in 0..200 {
            let whole = self.nodes.iter().all(|n| {
                redis_cli(n.port, &["cluster", "info"]).contains("cluster_state:ok")
                    && !redis_cli(n.port, &["info", "replication"])
                        .contains("master_link_status:down")
            }) && self.masters().len() == 3
                // Every node lists every replica in CLUSTER SLOTS (Redis leaves out a replica
                // until the cluster has heard it replicates), as clients learn them from there.
                && self.nodes.iter().all(|n| {
                    let slots = redis_cli(n.port, &["cluster", "slots"]);
                    self.nodes
                        .iter()
                        .all(|m| slots.lines().any(|l| l.trim() == m.port.to_string()))
                });
            if whole {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster did not form");
    }

    fn url(&self) -> String {
        let first = self.nodes[0].port;
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", others.join("&"))
    }

    fn any_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| redis_cli(n.port, &["ping"]).contains("PONG"))
            .unwrap()
            .port
    }

    /// The masters `CLUSTER NODES` names and does not mark failed.
    fn masters(&self) -> Vec<Master> {
        redis_cli(self.any_port(), &["cluster", "nodes"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let port = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                let ranges = fields[8..]
                    .iter()
                    .filter(|r| !r.starts_with('['))
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((fields[0].to_owned(), port, ranges))
            })
            .collect()
    }

    fn slot_of(&self, sid: &str) -> u16 {
        redis_cli(
            self.any_port(),
            &["cluster", "keyslot", &format!("{{{sid}}}")],
        )
        .trim()
        .parse()
        .unwrap()
    }

    /// The master serving a sign-in's keys: (id, port).
    fn master_of(&self, sid: &str) -> (String, u16) {
        let slot = self.slot_of(sid);
        self.masters()
            .into_iter()
            .find(|(_, _, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(id, port, _)| (id, port))
            .expect("a master serves the slot")
    }

    /// The port of a replica of the master with node id `master`.
    fn replica_of(&self, master: &str) -> u16 {
        redis_cli(self.any_port(), &["cluster", "nodes"])
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let replica = fields.get(2)?.contains("slave") && fields.get(3) == Some(&master);
                replica.then(|| fields[1].split(['@', ':']).nth(1)?.parse().ok())?
            })
            .expect("the master has a replica")
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) a node's process, as a stalled host does.
    fn signal(&self, port: u16, signal: &str) {
        let node = self.nodes.iter().find(|n| n.port == port).unwrap();
        let sent = Command::new("kill")
            .args([signal, &node.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal}");
    }

    fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
}

/// An API sign-in whose keys live on `master`, made by signing in until one lands there.
async fn api_sign_in_on(
    app: &TestApp,
    cluster: &PrivateCluster,
    master: u16,
) -> (String, cookie::Cookie<'static>) {
    let email = app.signed_up().await;
    for _ in 0..60 {
        let (token, refresh) = app.api_login(&email).await;
        if cluster.master_of(&app.sid_of(&token)).1 == master {
            return (token, refresh);
        }
    }
    panic!("no sign-in landed on the master at {master}");
}

async fn ready(app: &TestApp) -> Option<serde_json::Value> {
    let r = app.server.get("/readyz").await;
    if r.status_code() == StatusCode::OK {
        Some(r.json())
    } else {
        None
    }
}

/// None of the signed-out learner's credentials is accepted (refused, or unavailable).
async fn assert_not_accepted(app: &TestApp, old: &SignedIn) {
    let page = app.get_with_session("/dashboard", &old.session).await;
    assert_ne!(page.status_code(), StatusCode::OK, "old session cookie");
    for token in &old.access {
        assert_ne!(
            app.me(token).await.status_code(),
            StatusCode::OK,
            "old access token"
        );
    }
    assert_ne!(
        app.refresh_with(&old.refresh).await.status_code(),
        StatusCode::OK,
        "old refresh cookie"
    );
}

#[tokio::test]
async fn a_master_killed_right_after_a_sign_out_loses_no_revocation_and_the_app_recovers() {
    let Some(mut cluster) = PrivateCluster::start().await else {
        return;
    };
    let app = spawn_app_with(|s| s.redis_url = Some(cluster.url())).await;
    let health = ready(&app).await.expect("ready on a whole cluster");
    assert_eq!(health["cluster"]["state"], "ok");
    assert_eq!(health["cluster"]["size"], 3);
    assert_eq!(health["cluster"]["known_nodes"], 6);

    // A browser sign-in, and another learner's API sign-in on the same master.
    let old = signed_in(&app).await;
    let (_, master) = cluster.master_of(&app.sid_of(&old.access[0]));
    let (token, refresh) = api_sign_in_on(&app, &cluster, master).await;

    // Sign out, and kill that master at once: the revocation must already be on its replica.
    assert_eq!(app.sign_out_htmx().await.status_code(), StatusCode::OK);
    let stats = redis_cli(master, &["info", "commandstats"]);
    assert!(
        stats.contains("cmdstat_wait:calls="),
        "the sign-out waited for the replica: {stats}"
    );
    cluster.kill(master);

    // Throughout the failover, the old credentials are never accepted; the other learner's come
    // back by themselves once the replica has taken over.
    let mut recovered = false;
    for _ in 0..300 {
        assert_not_accepted(&app, &old).await;
        if app.me(&token).await.status_code() == StatusCode::OK && ready(&app).await.is_some() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the app did not recover after the failover");
    let (_, promoted) = cluster.master_of(&app.sid_of(&token));
    assert_ne!(promoted, master, "a replica serves the slot now");
    assert_everything_refused(&app, &old).await;
    assert_eq!(
        app.refresh_with(&refresh).await.status_code(),
        StatusCode::OK
    );
    let health = ready(&app).await.unwrap();
    assert_eq!(health["cluster"]["state"], "ok");
    // A new sign-in works as before.
    let fresh = signed_in(&app).await;
    assert_eq!(app.me(&fresh.access[0]).await.status_code(), StatusCode::OK);
}

#[tokio::test]
async fn a_sign_out_while_its_slot_moves_between_masters_is_kept_by_the_new_one() {
    let Some(cluster) = PrivateCluster::start().await else {
        return;
    };
    let app = spawn_app_with(|s| s.redis_url = Some(cluster.url())).await;
    let old = signed_in(&app).await;
    let sid = app.sid_of(&old.access[0]);
    let slot = cluster.slot_of(&sid).to_string();
    let (from_id, from) = cluster.master_of(&sid);
    let (to_id, to, _) = cluster
        .masters()
        .into_iter()
        .find(|(_, port, _)| *port != from)
        .unwrap();

    // Start moving the slot, and move only the sign-in's liveness key so far: the sign-out meets
    // keys on both masters, with ASK redirections between them.
    redis_cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
    redis_cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
    let keys = redis_cli(from, &["cluster", "getkeysinslot", &slot, "100"]);
    let live = keys
        .lines()
        .find(|k| k.ends_with(":live"))
        .expect("the liveness key")
        .to_owned();
    let to_port = to.to_string();
    let moved = redis_cli(
        from,
        &[
            "migrate",
            "127.0.0.1",
            &to_port,
            "",
            "0",
            "5000",
            "keys",
            &live,
        ],
    );
    assert!(moved.contains("OK"), "{moved}");

    // Sign out while the move is under way; the move finishes a moment later (the rest of the
    // keys, then the slot belongs to the new master).
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let finish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (slot, to_id) = (slot.clone(), to_id.clone());
        tokio::task::spawn_blocking(move || {
            let rest = redis_cli(from, &["cluster", "getkeysinslot", &slot, "100"]);
            let rest: Vec<&str> = rest.lines().filter(|k| !k.is_empty()).collect();
            if !rest.is_empty() {
                let to_port = to.to_string();
                let mut args = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "keys"];
                args.extend(rest);
                let moved = redis_cli(from, &args);
                assert!(moved.contains("OK"), "{moved}");
            }
            for port in ports {
                redis_cli(port, &["cluster", "setslot", &slot, "node", &to_id]);
            }
        })
        .await
        .unwrap();
    };
    let (signed_out, ()) = tokio::join!(app.sign_out_htmx(), finish);
    assert_eq!(signed_out.status_code(), StatusCode::OK);
    assert_eq!(cluster.master_of(&sid).1, to);
    assert_everything_refused(&app, &old).await;
    // Refused because the sign-in is over, and each token also on the revocation list, which the
    // move did not lose.
    for token in &old.access {
        let jti = app.state.tokens.verify_ignoring_expiry(token).unwrap().jti;
        let ttl = app.state.stores.sign_ins.revocation_ttl(&sid, &jti).await;
        assert!(matches!(ttl, Ok(Some(t)) if t > 0), "{jti}: {ttl:?}");
    }
    // The app still serves that slot, now from the new master.
    let fresh = signed_in(&app).await;
    assert_eq!(app.me(&fresh.access[0]).await.status_code(), StatusCode::OK);
}

/// The replica a failover promotes missed the sign-out (its link to the master was down while the
/// sign-out ran, so the revocation stood on the master alone, which then died): the promoted node holds the
/// sign-in live again. Neither instance accepts any old credential, at any moment.
#[tokio::test]
async fn a_replica_promoted_after_missing_a_sign_out_brings_nothing_back() {
    let Some(mut cluster) = PrivateCluster::start().await else {
        return;
    };
    let first = spawn_app_with(|s| s.redis_url = Some(cluster.url())).await;
    let second = spawn_peer_with(&first, |s| s.redis_url = Some(cluster.url())).await;
    for app in [&first, &second] {
        app.state.ledger.spawn();
    }
    let old = signed_in(&first).await;
    let sid = first.sid_of(&old.access[0]);
    let (master_id, master) = cluster.master_of(&sid);
    let replica = cluster.replica_of(&master_id);
    // The replica stalls, and its master drops the link to it, so the sign-out reaches the
    // master alone; the master dies, and the stalled replica takes over with what it had.
    cluster.signal(replica, "-STOP");
    redis_cli(master, &["client", "kill", "type", "replica"]);
    assert_eq!(first.sign_out_htmx().await.status_code(), StatusCode::OK);
    // Every instance has read the ending within a second of it.
    tokio::time::sleep(lectern::auth::ledger::POLL * 3 / 2).await;
    cluster.kill(master);
    cluster.signal(replica, "-CONT");
    redis_cli(replica, &["cluster", "failover", "takeover"]);
    let live = format!("{}{{{sid}}}:live", first.key_prefix);
    assert_eq!(
        redis_cli(replica, &["exists", &live]).trim(),
        "1",
        "the promoted replica holds the sign-in live"
    );
    let mut recovered = false;
    for _ in 0..300 {
        for app in [&first, &second] {
            assert_not_accepted(app, &old).await;
        }
        if ready(&first).await.is_some() && ready(&second).await.is_some() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the instances did not recover after the failover"
    );
    for app in [&first, &second] {
        assert_everything_refused(app, &old).await;
    }
}
