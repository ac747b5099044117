//! End to end in a real browser: headless Chromium over WebDriver (chromedriver), against the
//! built binary started from an empty directory (in the production shape when `TEST_REDIS_URL`
//! and `TEST_DATABASE_URL` are set).
//!
//! Skipped, saying why, when no chromedriver is found; `LECTERN_E2E_REQUIRED=1` (set by `.ci/run`)
//! turns the skip into a failure. Screenshots of each step go to `target/e2e/`.

use std::os::unix::process::CommandExt;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use fantoccini::{Client, ClientBuilder, Locator, wd::Capabilities};
use serde_json::json;

use crate::helpers::{
    PASSWORD, RunningBinary, TEST_SECRET, find_on_path, free_port, fresh_database, http_get,
    skipped, unique_email,
};

/// Kills chromedriver and every Chromium it started when the test ends, however it ends (a
/// session a failed test never closed included): they share a process group of their own.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver(path: &PathBuf) -> (Driver, String) {
    start_driver_in(path, None).await
}

/// [`start_driver`], with the `HOME` its browsers see (where their certificate store is).
async fn start_driver_in(path: &PathBuf, home: Option<&std::path::Path>) -> (Driver, String) {
    let port = free_port();
    let mut command = Command::new(path);
    if let Some(home) = home {
        command.env("HOME", home);
    }
    let child = command
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (driver, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {url}");
}

async fn browser(webdriver: &str, profile: &std::path::Path) -> Client {
    browser_with(webdriver, profile, &[]).await
}

/// [`browser`], with more command-line switches for Chromium.
async fn browser_with(webdriver: &str, profile: &std::path::Path, extra: &[&str]) -> Client {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut caps = Capabilities::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": args }),
    );
    // Several browser tests start at once on two cores: a driver that is slow to take its first
    // session gets a few more tries before the test fails.
    let mut tries = 0;
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(webdriver)
            .await
        {
            Ok(client) => return client,
            Err(err) if tries < 5 => {
                eprintln!("opening a Chromium session failed, trying again: {err}");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("open a Chromium session: {err}"),
        }
    }
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    fn new() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    async fn take(&self, client: &Client, name: &str) {
        let png = client.screenshot().await.unwrap();
        std::fs::write(self.dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// Polls until the current URL satisfies `pred`, for up to `secs`.
/// Whether `url` is the page at `path`, whatever its query says (a login page's `next` names the
/// page it leads to, which is not being there).
fn at(url: &str, path: &str) -> bool {
    url.split(['?', '#'])
        .next()
        .is_some_and(|u| u.ends_with(path))
}

async fn wait_for_url(client: &Client, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let url = client.current_url().await.unwrap().to_string();
        if pred(&url) || Instant::now() > deadline {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn our_storage_keys(client: &Client) -> Vec<String> {
    let keys = client
        .execute(
            "return Object.keys(localStorage).concat(Object.keys(sessionStorage))
               .filter(k => k.startsWith('lectern.') || k === 'htmx-history-cache');",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(keys).unwrap()
}

/// Everything a browser test runs against: the binary, chromedriver and a Chromium session.
struct Stack {
    client: Client,
    base: String,
    /// The chromedriver address, for a second browser.
    webdriver: String,
    _server: RunningBinary,
    _driver: Driver,
    _dirs: Vec<tempfile::TempDir>,
}

/// `None` (the test says it skipped) where no chromedriver exists, which CI does not allow.
async fn stack() -> Option<Stack> {
    stack_with(&[]).await
}

/// [`stack`], with settings of its own for the binary (short real timeouts, say).
async fn stack_with(settings: &[(&'static str, &str)]) -> Option<Stack> {
    let driver_path = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| find_on_path("chromedriver"));
    let Some(driver_path) = driver_path else {
        assert!(
            std::env::var("LECTERN_E2E_REQUIRED").is_err(),
            "LECTERN_E2E_REQUIRED is set but no chromedriver was found (apt-get install chromium chromium-driver)"
        );
        skipped(
            "browser suite needs chromedriver on PATH (apt-get install chromium chromium-driver)",
        );
        return None;
    };
    // The binary, from an empty directory, on a database of its own.
    let workdir = tempfile::tempdir().unwrap();
    let (database_url, db_dir) = fresh_database().await;
    let mut env = vec![
        ("DATABASE_URL", database_url),
        ("LECTERN_SECRET", TEST_SECRET.to_owned()),
        ("LECTERN_SECURE_COOKIES", "false".to_owned()),
    ];
    if let Ok(redis) = std::env::var("TEST_REDIS_URL") {
        env.extend(own_redis(redis));
    }
    env.extend(settings.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let server = RunningBinary::start(workdir.path(), &env).await;
    let (driver, webdriver) = start_driver(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&webdriver, profile.path()).await;
    let mut dirs = vec![workdir, profile];
    dirs.extend(db_dir);
    Some(Stack {
        client,
        base: server.base.clone(),
        webdriver,
        _server: server,
        _driver: driver,
        _dirs: dirs,
    })
}

/// The settings that put a binary on the tests' Redis under keys of its own. Binaries that
/// shared one prefix would share its global keys (the shared computers' closing list, the
/// endings mark) while each has its own database: one binary's sweep would end another's
/// sign-ins in Redis without the rows that say why.
fn own_redis(url: String) -> [(&'static str, String); 2] {
    [
        ("REDIS_URL", url),
        (
            "LECTERN_REDIS_KEY_PREFIX",
            format!("lectern:test:{}:", uuid::Uuid::new_v4().simple()),
        ),
    ]
}

/// Types each value into the field with that id, then submits the page's main form.
async fn fill_and_submit(client: &Client, fields: &[(&str, &str)], shot: Option<(&Shots, &str)>) {
    for (id, value) in fields {
        client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    if let Some((shots, name)) = shot {
        shots.take(client, name).await;
    }
    client
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Signs up through the form and lands on the dashboard; returns the email.
async fn sign_up(client: &Client, base: &str, shots: Option<&Shots>) -> String {
    let email = unique_email();
    client.goto(&format!("{base}/register")).await.unwrap();
    let fields = [
        ("email", email.as_str()),
        ("display_name", "Ada"),
        ("password", PASSWORD),
    ];
    fill_and_submit(client, &fields, shots.map(|s| (s, "01-register"))).await;
    let url = wait_for_url(client, 10, |u| at(u, "/dashboard")).await;
    assert!(at(&url, "/dashboard"), "after sign-up: {url}");
    email
}

/// Runs `body` as an async script; it calls `done(value)` with its answer.
async fn run_async(client: &Client, body: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
    let script = format!("const done = arguments[arguments.length - 1]; {body}");
    client.execute_async(&script, args).await.unwrap()
}

async fn api_me_status(base: &str, token: &str) -> StatusCode {
    let bearer = format!("Bearer {token}");
    http_get(&format!("{base}/api/v1/me"), &[("authorization", &bearer)])
        .await
        .0
}

#[tokio::test]
async fn signing_out_in_the_browser_leaves_nothing_behind() {
    let Some(stack) = stack().await else {
        return;
    };
    let (client, base) = (&stack.client, stack.base.as_str());
    let shots = Shots::new();

    // Sign up and land on the dashboard.
    let email = sign_up(client, base, Some(&shots)).await;

    // A script on the page also signs in through the API: a second sign-in in this browser,
    // whose refresh cookie replaces the form's.
    let api_token = run_async(
        client,
        "fetch('/api/v1/auth/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
           body: JSON.stringify({email: arguments[0], password: arguments[1]})})
         .then(r => r.json()).then(j => done(j.access_token || ''), e => done(''));",
        vec![json!(email), json!(PASSWORD)],
    )
    .await;
    let api_token = api_token.as_str().unwrap_or_default().to_owned();
    assert!(!api_token.is_empty(), "the page's API sign-in");
    assert_eq!(api_me_status(base, &api_token).await, StatusCode::OK);

    // Enrol with htmx (CSRF header from our script), then see it.
    client
        .find(Locator::Css("#more-courses form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css("#my-courses .badge"))
        .await
        .unwrap();
    shots.take(client, "02-dashboard-enrolled").await;

    // Something of ours in storage, as a page might leave it.
    client
        .execute(
            "localStorage.setItem('lectern.draft', 'notes'); sessionStorage.setItem('lectern.tab', '1');
             localStorage.setItem('htmx-history-cache', '[]');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(our_storage_keys(client).await.len(), 3);

    // A second tab on the dashboard.
    let first_tab = client.window().await.unwrap();
    let second_tab = client.new_window(true).await.unwrap().handle;
    client.switch_to_window(second_tab.clone()).await.unwrap();
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    assert!(client.source().await.unwrap().contains("My courses"));
    client.switch_to_window(first_tab.clone()).await.unwrap();

    // Visit the account page too, so history holds two authenticated pages before the homepage.
    client.goto(&format!("{base}/account")).await.unwrap();
    assert!(
        client
            .source()
            .await
            .unwrap()
            .contains("Where you are signed in")
    );

    // Sign out, and time it.
    let clicked = Instant::now();
    client
        .find(Locator::Css(".signout-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = wait_for_url(client, 10, |u| u.contains("signed_out=1")).await;
    let elapsed = clicked.elapsed();
    println!(
        "e2e: click on \"Sign out\" to the homepage took {} ms",
        elapsed.as_millis()
    );
    assert!(url.ends_with("/?signed_out=1"), "after sign-out: {url}");
    client
        .wait()
        .for_element(Locator::Css(".notice-success"))
        .await
        .unwrap();
    assert!(
        client
            .source()
            .await
            .unwrap()
            .contains("You are signed out.")
    );
    shots.take(client, "03-signed-out-home").await;

    // No lectern_ cookie, nothing of ours in storage.
    let cookies = client.get_all_cookies().await.unwrap();
    let ours: Vec<_> = cookies
        .iter()
        .filter(|c| c.name().starts_with("lectern_"))
        .map(|c| c.name().to_owned())
        .collect();
    assert!(ours.is_empty(), "cookies left: {ours:?}");
    assert!(
        our_storage_keys(client).await.is_empty(),
        "storage left: {:?}",
        our_storage_keys(client).await
    );
    // The sign-out ended the page's API sign-in too, whose refresh cookie it never saw.
    assert_eq!(
        api_me_status(base, &api_token).await,
        StatusCode::UNAUTHORIZED
    );

    // Back does not show authenticated content: the entries before the homepage are the dashboard
    // and the account page; going back asks the server again (no-store; a bfcache restore reloads),
    // which sends the browser to the login page. (Chromium may skip the entry that navigated away
    // by script, so either page may be the one Back reaches.)
    client.back().await.unwrap();
    let url = wait_for_url(client, 10, |u| u.contains("/login?next=")).await;
    let page = client.source().await.unwrap();
    shots.take(client, "04-after-back").await;
    println!("e2e: Back after sign-out landed on {url}");
    assert!(url.contains("/login?next=%2F"), "Back went to {url}");
    for content in [
        "More courses",
        r#"id="my-courses""#,
        "Where you are signed in",
    ] {
        assert!(!page.contains(content), "Back showed {content:?} at {url}");
    }

    // The other tab left for the homepage by itself.
    client.switch_to_window(second_tab).await.unwrap();
    let url = wait_for_url(client, 10, |u| u.contains("signed_out=1")).await;
    shots.take(client, "05-second-tab").await;
    assert!(url.contains("signed_out=1"), "second tab is still on {url}");
    assert!(!client.source().await.unwrap().contains("More courses"));

    // Reloading the dashboard goes to the login page.
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    let url = wait_for_url(client, 10, |u| u.contains("/login")).await;
    shots.take(client, "06-dashboard-reload").await;
    assert!(
        url.contains("/login?next=%2Fdashboard"),
        "dashboard after sign-out: {url}"
    );

    client.clone().close().await.unwrap();
}

/// Fires what a browser fires when it shows a page from its back/forward cache.
async fn restore_from_bfcache(client: &Client) {
    client
        .execute(
            "window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}));",
            vec![],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_page_restored_from_the_back_forward_cache_leaves_when_the_session_is_gone() {
    let Some(stack) = stack().await else {
        return;
    };
    let (client, base) = (&stack.client, stack.base.as_str());
    sign_up(client, base, None).await;
    client.goto(&format!("{base}/account")).await.unwrap();

    // While the session stands, a restored page stays.
    restore_from_bfcache(client).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.current_url().await.unwrap().path(), "/account");

    // Signed out behind the page's back (no message reaches it, as Safari drops them for
    // cached pages), then restored: it asks the server and leaves for the login page.
    let status = run_async(
        client,
        "fetch('/logout', {method: 'POST', headers: {'HX-Request': 'true',
           'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}})
         .then(r => done(r.status), e => done(0));",
        vec![],
    )
    .await;
    assert_eq!(status, json!(200));
    assert_eq!(client.current_url().await.unwrap().path(), "/account");
    restore_from_bfcache(client).await;
    let url = wait_for_url(client, 10, |u| u.contains("/login")).await;
    assert!(
        url.contains("/login?next=%2Faccount"),
        "restored page went to {url}"
    );
    assert!(
        !client
            .source()
            .await
            .unwrap()
            .contains("Where you are signed in")
    );
    client.clone().close().await.unwrap();
}

/// The number of rows in the account page's sign-in table.
async fn sign_in_rows(client: &Client) -> usize {
    client
        .find_all(Locator::Css("#sign-ins tbody tr"))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_sign_in_ended_from_another_browsers_account_page_lands_on_the_login_page_with_the_reason()
 {
    let Some(stack) = stack().await else {
        return;
    };
    let (laptop, base) = (&stack.client, stack.base.as_str());
    let shots = Shots::new();
    let email = sign_up(laptop, base, None).await;

    // A second browser (its own profile, so its own cookies) signs in to the same account.
    let profile = tempfile::tempdir().unwrap();
    let phone = browser(&stack.webdriver, profile.path()).await;
    phone.goto(&format!("{base}/login")).await.unwrap();
    let fields = [("email", email.as_str()), ("password", PASSWORD)];
    fill_and_submit(&phone, &fields, None).await;
    let url = wait_for_url(&phone, 10, |u| at(u, "/dashboard")).await;
    assert!(at(&url, "/dashboard"), "{url}");

    // The laptop sees both sign-ins and ends the phone's with its row's button (htmx).
    laptop.goto(&format!("{base}/account")).await.unwrap();
    assert_eq!(sign_in_rows(laptop).await, 2);
    shots.take(laptop, "20-account-two-sign-ins").await;
    laptop
        .find(Locator::Css("#sign-ins tbody tr:not(:has(.badge)) button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sign_in_rows(laptop).await != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sign_in_rows(laptop).await, 1, "the row goes");
    assert!(laptop.source().await.unwrap().contains("This browser"));
    shots.take(laptop, "21-account-one-ended").await;

    // The phone's next step lands on the login page, which says why, and still does on reload.
    phone
        .find(Locator::LinkText("My courses"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = wait_for_url(&phone, 10, |u| u.contains("/login")).await;
    assert!(url.contains("reason=revoked"), "{url}");
    let says = "signed out from another device";
    assert!(phone.source().await.unwrap().contains(says));
    phone.refresh().await.unwrap();
    assert!(
        phone.source().await.unwrap().contains(says),
        "after a reload"
    );
    shots.take(&phone, "22-phone-told-why").await;
    phone.close().await.unwrap();

    // The laptop is still signed in.
    laptop.goto(&format!("{base}/dashboard")).await.unwrap();
    let url = laptop.current_url().await.unwrap().to_string();
    assert!(at(&url, "/dashboard"), "{url}");
    // Closed, as the other tests close theirs: killing chromedriver alone leaves Chromium running.
    laptop.clone().close().await.unwrap();
}

/// The login page a timed-out browser lands on: the page leaves by itself when its time is up
/// (it asks the server again, which sends it there), or the next visit does. Its URL and notice.
async fn back_after(client: &Client, base: &str, wait: Duration) -> (String, String) {
    tokio::time::sleep(wait).await;
    let url = wait_for_url(client, 2, |u| u.contains("/login")).await;
    if !url.contains("/login") {
        client.goto(&format!("{base}/dashboard")).await.unwrap();
    }
    let url = wait_for_url(client, 10, |u| u.contains("/login")).await;
    let notice = client
        .find(Locator::Css("#notices"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (url, notice)
}

/// Real time and a real cookie jar: the browser keeps the session cookie past the idle timeout
/// (it is a browser-session cookie; the server enforces the deadline), so it comes back with it
/// and the login page says why.
#[tokio::test]
async fn after_an_idle_timeout_a_real_browser_is_told_why_it_was_signed_out() {
    let Some(stack) = stack_with(&[("LECTERN_SESSION_IDLE", "3s")]).await else {
        return;
    };
    let (client, base) = (&stack.client, stack.base.as_str());
    sign_up(client, base, None).await;
    let (url, notice) = back_after(client, base, Duration::from_millis(4500)).await;
    Shots::new().take(client, "timeout-idle").await;
    assert!(url.contains("reason=idle"), "{url}");
    assert!(notice.contains("no activity"), "{notice}");
}

/// The same for the absolute lifetime: kept busy, the sign-in never idles, and still ends when
/// its lifetime runs out.
#[tokio::test]
async fn after_the_absolute_lifetime_a_real_browser_is_told_why_it_was_signed_out() {
    let settings = [
        ("LECTERN_SESSION_IDLE", "4s"),
        ("LECTERN_SESSION_ABSOLUTE", "5s"),
    ];
    let Some(stack) = stack_with(&settings).await else {
        return;
    };
    let (client, base) = (&stack.client, stack.base.as_str());
    sign_up(client, base, None).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    let busy = wait_for_url(client, 5, |u| at(u, "/dashboard")).await;
    assert!(at(&busy, "/dashboard"), "still signed in: {busy}");
    let (url, notice) = back_after(client, base, Duration::from_millis(3000)).await;
    Shots::new().take(client, "timeout-absolute").await;
    assert!(url.contains("reason=expired"), "{url}");
    assert!(notice.contains("time limit"), "{notice}");
}

/// axe-core's script, as `.ci/run` installs it (`AXE_CORE` names another copy). `None`, saying
/// why, where it is missing, which CI does not allow.
fn axe_core() -> Option<String> {
    let path = std::env::var_os("AXE_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/axe/node_modules/axe-core/axe.min.js")
        });
    match std::fs::read_to_string(&path) {
        Ok(script) => Some(script),
        Err(_) => {
            assert!(
                std::env::var("LECTERN_E2E_REQUIRED").is_err(),
                "LECTERN_E2E_REQUIRED is set but axe-core is missing at {} (npm install --prefix target/axe axe-core)",
                path.display()
            );
            skipped(
                "the accessibility run needs axe-core (npm install --prefix target/axe axe-core)",
            );
            None
        }
    }
}

/// axe-core's WCAG 2.1 A and AA rules on the page shown: each violation, with where it is.
async fn accessibility_violations(client: &Client, axe: &str) -> Vec<String> {
    client.execute(axe, vec![]).await.unwrap();
    let found = run_async(
        client,
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
           .then(r => done({passes: r.passes.length,
                            violations: r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))}),
                 e => done({passes: 0, violations: ['axe failed: ' + e]}));",
        vec![],
    )
    .await;
    assert!(
        found["passes"].as_u64().unwrap_or(0) > 0,
        "axe checked nothing: {found}"
    );
    serde_json::from_value(found["violations"].clone()).unwrap()
}

/// How wide the page is laid out, against the window.
async fn widths(client: &Client) -> (u64, u64) {
    let found = client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

/// Every page a learner sees, on a phone (375 px) and a desktop (1280 px): nothing scrolls
/// sideways, every sign-in's Sign out button on the account page is inside the window when
/// scrolled to, and axe-core finds no WCAG 2.1 AA violation. A screenshot of each page at each
/// width lands in `target/e2e/`.
#[tokio::test]
async fn every_page_fits_a_phone_and_a_desktop_and_passes_an_accessibility_run() {
    let Some(stack) = stack().await else {
        return;
    };
    let axe = axe_core();
    let (client, base) = (&stack.client, stack.base.as_str());
    let shots = Shots::new();
    let visitor = [
        ("home", "/"),
        ("signed-out", "/?signed_out=1"),
        ("login", "/login"),
        ("login-idle", "/login?reason=idle"),
        ("register", "/register"),
        ("not-found", "/no-such-page"),
        ("unconfirmed", "/logout/unconfirmed"),
    ];
    let learner = [
        ("dashboard", "/dashboard"),
        ("account", "/account"),
        ("home-signed-in", "/"),
    ];
    let mut problems = Vec::new();
    let look = async |name: &str, width: u64, problems: &mut Vec<String>| {
        let (scroll, inner) = widths(client).await;
        if scroll > inner {
            problems.push(format!(
                "{name} at {width} px scrolls sideways ({scroll} > {inner})"
            ));
        }
        shots.take(client, &format!("page-{name}-{width}")).await;
        if let Some(axe) = &axe {
            for violation in accessibility_violations(client, axe).await {
                problems.push(format!("{name} at {width} px: {violation}"));
            }
        }
    };
    for width in [375u64, 1280] {
        client.set_window_size(width as u32, 900).await.unwrap();
        for (name, path) in visitor {
            client.goto(&format!("{base}{path}")).await.unwrap();
            look(name, width, &mut problems).await;
        }
    }
    // A learner with several sign-ins, so the account page lists them all.
    let email = sign_up(client, base, None).await;
    for _ in 0..3 {
        let body = json!({"email": email, "password": PASSWORD}).to_string();
        let (status, _, _) = crate::helpers::http_request(
            "POST",
            &format!("{base}/api/v1/auth/login"),
            &[("content-type", "application/json")],
            body.into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    for width in [375u64, 1280] {
        client.set_window_size(width as u32, 900).await.unwrap();
        for (name, path) in learner {
            client.goto(&format!("{base}{path}")).await.unwrap();
            look(name, width, &mut problems).await;
        }
        // The account page: each sign-in's Sign out button, scrolled to, is inside the window.
        client.goto(&format!("{base}/account")).await.unwrap();
        let outside = client
            .execute(
                "const inner = window.innerWidth;
                 return Array.from(document.querySelectorAll('#sign-ins tbody tr button')).filter(b => {
                   b.scrollIntoView({block: 'center'});
                   const r = b.getBoundingClientRect();
                   return r.width === 0 || r.left < 0 || r.right > inner || r.top < 0 || r.bottom > window.innerHeight;
                 }).length;",
                vec![],
            )
            .await
            .unwrap();
        let rows = sign_in_rows(client).await;
        assert_eq!(rows, 4, "the account page lists every sign-in");
        if outside != json!(0) {
            problems.push(format!(
                "{outside} Sign out buttons outside the window at {width} px"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    client.clone().close().await.unwrap();
}

/// Fills the sign-in form and submits it (`shared`: with the shared-computer box ticked).
async fn sign_in_form(client: &Client, email: &str, shared: bool) {
    if shared {
        client
            .find(Locator::Id("shared"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    fill_and_submit(client, &[("email", email), ("password", PASSWORD)], None).await;
}

/// What a browser that restores its last session brings back: the session cookie, in a browser
/// of its own.
async fn restored(stack: &Stack, cookie: fantoccini::cookies::Cookie<'static>) -> Client {
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&stack.webdriver, profile.path()).await;
    client.goto(&stack.base).await.unwrap();
    client.add_cookie(cookie).await.unwrap();
    client
        .goto(&format!("{}/dashboard", stack.base))
        .await
        .unwrap();
    client
}

/// A shared computer: every tab closed, the close window passes, the browser restores its last
/// session (its session cookie) and is signed out, saying why. The same without the box ticked
/// stays signed in.
#[tokio::test]
async fn a_shared_computers_browser_closed_and_restored_is_signed_out() {
    // Its audit lines say which ending each sign-in met, and where, should this fail.
    let settings = [
        ("LECTERN_SHARED_CLOSE", "5s"),
        ("RUST_LOG", "warn,lectern::app=info,lectern::audit=info"),
    ];
    let Some(stack) = stack_with(&settings).await else {
        return;
    };
    let (client, base) = (&stack.client, stack.base.as_str());
    let email = sign_up(client, base, None).await;
    for shared in [true, false] {
        let profile = tempfile::tempdir().unwrap();
        let fresh = browser(&stack.webdriver, profile.path()).await;
        fresh.goto(&format!("{base}/login")).await.unwrap();
        sign_in_form(&fresh, &email, shared).await;
        let url = wait_for_url(&fresh, 10, |u| at(u, "/dashboard")).await;
        assert!(at(&url, "/dashboard"), "{url}");
        // The page keeps it open while it is open.
        tokio::time::sleep(Duration::from_secs(6)).await;
        fresh.refresh().await.unwrap();
        assert_eq!(fresh.current_url().await.unwrap().path(), "/dashboard");
        let cookie = fresh.get_named_cookie("lectern_session").await.unwrap();
        fresh.close().await.unwrap();
        tokio::time::sleep(Duration::from_millis(6500)).await;
        let back = restored(&stack, cookie).await;
        let url = wait_for_url(&back, 10, |u| u.contains("/login") || at(u, "/dashboard")).await;
        if shared {
            Shots::new().take(&back, "shared-closed").await;
            assert!(url.contains("reason=closed"), "shared: {url}");
        } else {
            assert!(at(&url, "/dashboard"), "not shared: {url}");
        }
        back.close().await.unwrap();
    }
}

/// Whether the idle warning is open in the current tab.
async fn warning_open(client: &Client) -> bool {
    client
        .execute(
            "const d = document.getElementById('idle-warning'); return !!(d && d.open);",
            vec![],
        )
        .await
        .unwrap()
        == json!(true)
}

/// Waits (up to `secs`) until the warning is open, or closed, in the current tab.
async fn wait_for_warning(client: &Client, open: bool, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if warning_open(client).await == open {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The warning before the idle timeout shows in two tabs; "Stay signed in" in one dismisses it
/// in both and extends the sign-in past its old deadline. The dialog passes the accessibility
/// run.
#[tokio::test]
async fn the_idle_warning_shows_in_every_tab_and_staying_in_one_dismisses_it_in_all() {
    let settings = [
        ("LECTERN_SESSION_IDLE", "12s"),
        ("LECTERN_IDLE_WARNING", "8s"),
    ];
    let Some(stack) = stack_with(&settings).await else {
        return;
    };
    let axe = axe_core();
    let (client, base) = (&stack.client, stack.base.as_str());
    sign_up(client, base, None).await;
    let first = client.window().await.unwrap();
    let second = client.new_window(true).await.unwrap().handle;
    client.switch_to_window(second.clone()).await.unwrap();
    client.goto(&format!("{base}/account")).await.unwrap();
    // The last request before "Stay signed in": the deadline it set, and a second for rounding.
    let old_deadline = Instant::now() + Duration::from_secs(13);
    assert!(
        wait_for_warning(client, true, 10).await,
        "the warning in the second tab"
    );
    let focused = client
        .execute(
            "return document.activeElement && document.activeElement.id;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        focused,
        json!("idle-warning-stay"),
        "focus is in the dialog"
    );
    Shots::new().take(client, "idle-warning").await;
    if let Some(axe) = &axe {
        assert_eq!(
            accessibility_violations(client, axe).await,
            Vec::<String>::new()
        );
    }
    client.switch_to_window(first.clone()).await.unwrap();
    assert!(
        wait_for_warning(client, true, 5).await,
        "the warning in the first tab"
    );
    client.switch_to_window(second).await.unwrap();
    client
        .find(Locator::Id("idle-warning-stay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        wait_for_warning(client, false, 5).await,
        "dismissed where chosen"
    );
    client.switch_to_window(first).await.unwrap();
    assert!(
        wait_for_warning(client, false, 5).await,
        "dismissed in the other tab"
    );
    // Past the old deadline, still signed in.
    tokio::time::sleep(old_deadline.saturating_duration_since(Instant::now())).await;
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    let url = wait_for_url(client, 5, |u| at(u, "/dashboard") || u.contains("/login")).await;
    assert!(at(&url, "/dashboard"), "{url}");
}

/// Text typed into a form survives the idle timeout (the page keeps it for the same learner) and
/// is gone after a sign-out.
#[tokio::test]
async fn typed_work_survives_an_idle_timeout_and_not_a_sign_out() {
    let settings = [
        ("LECTERN_SESSION_IDLE", "6s"),
        ("LECTERN_IDLE_WARNING", "3s"),
    ];
    let Some(stack) = stack_with(&settings).await else {
        return;
    };
    let (client, base) = (&stack.client, stack.base.as_str());
    let email = sign_up(client, base, None).await;
    client.goto(&format!("{base}/account")).await.unwrap();
    client
        .find(Locator::Id("display_name"))
        .await
        .unwrap()
        .send_keys("Grace Hopper")
        .await
        .unwrap();
    // Time runs out: the page leaves for the login page by itself, saying why.
    let url = wait_for_url(client, 15, |u| u.contains("/login")).await;
    assert!(url.contains("reason=idle"), "{url}");
    sign_in_form(client, &email, false).await;
    let url = wait_for_url(client, 10, |u| at(u, "/account")).await;
    assert!(at(&url, "/account"), "back where it was: {url}");
    let typed = client
        .find(Locator::Id("display_name"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(typed.as_deref(), Some("Grace Hopper"));
    // A sign-out clears it.
    client
        .find(Locator::Css(".site-header .signout-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_url(client, 10, |u| u.contains("signed_out=1")).await;
    client
        .goto(&format!("{base}/login?next=/account"))
        .await
        .unwrap();
    sign_in_form(client, &email, false).await;
    wait_for_url(client, 10, |u| at(u, "/account")).await;
    let typed = client
        .find(Locator::Id("display_name"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(typed.as_deref(), Some(""));
}

/// After the recent-authentication window, "Sign out everywhere" asks for the password first,
/// in place of the page, and then signs out everywhere.
#[tokio::test]
async fn signing_out_everywhere_after_a_while_asks_for_the_password_first() {
    let Some(stack) = stack_with(&[("LECTERN_REAUTH_WINDOW", "1s")]).await else {
        return;
    };
    let axe = axe_core();
    let (client, base) = (&stack.client, stack.base.as_str());
    sign_up(client, base, None).await;
    client.goto(&format!("{base}/account")).await.unwrap();
    // Times are whole seconds: a full second past the window is past it however they round.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client
        .find(Locator::Css(
            "form.signout-form input[value=global] ~ button",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let password = client
        .wait()
        .for_element(Locator::Id("confirm_password"))
        .await
        .unwrap();
    Shots::new().take(client, "reauth-prompt").await;
    if let Some(axe) = &axe {
        assert_eq!(
            accessibility_violations(client, axe).await,
            Vec::<String>::new()
        );
    }
    password.send_keys(PASSWORD).await.unwrap();
    client
        .find(Locator::Css("#confirm button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = wait_for_url(client, 10, |u| u.contains("signed_out=1")).await;
    assert!(url.ends_with("/?signed_out=1"), "{url}");
}

/// Chromium's switches for device-bound sessions with software keys, as on Linux.
const DBSC_SWITCHES: &str = "--enable-features=DeviceBoundSessions:RequireOriginTrialTokens/false/RefreshQuota/false,EnableBoundSessionCredentialsSoftwareKeysForManualTesting";

/// A test certificate authority and a certificate for `localhost` it signed, made with
/// `openssl`, and a `HOME` whose NSS store (`certutil`) trusts the authority, as Chromium reads
/// it. `Err` says which tool is missing.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn home(&self) -> PathBuf {
        self.path("home")
    }

    fn make() -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let run = |program: &str, args: &[&str]| -> Result<(), String> {
            let out = Command::new(program)
                .args(args)
                .current_dir(dir.path())
                .output()
                .map_err(|e| {
                    format!("{program} is needed ({e}); apt-get install openssl libnss3-tools")
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Lectern test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run("openssl", &ca)?;
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run("openssl", &csr)?;
        std::fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        )?;
        let nssdb = dir.path().join("home/.pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        run("certutil", &["-d", &db, "-N", "--empty-password"])?;
        run(
            "certutil",
            &[
                "-d",
                &db,
                "-A",
                "-t",
                "C,,",
                "-n",
                "lectern-test-ca",
                "-i",
                "ca.pem",
            ],
        )?;
        Ok(Self { dir })
    }
}

/// Polls the account page until it says this sign-in is bound, for up to `secs`.
async fn wait_until_bound(client: &Client, base: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        client.goto(&format!("{base}/account")).await.unwrap();
        let page = client.source().await.unwrap();
        if page.contains("Bound to this device") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Chromium over HTTPS with device-bound sessions: the sign-in is bound at registration; with
/// its bound cookie deleted the browser refreshes it by itself and the page still loads; the
/// session cookie copied into a second profile (no key) is refused; after the sign-out no
/// refresh succeeds and both profiles are signed out.
#[tokio::test]
async fn a_device_bound_sign_in_refreshes_itself_and_a_copied_cookie_is_refused() {
    let required = std::env::var("LECTERN_E2E_REQUIRED").is_ok();
    let driver_path = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| find_on_path("chromedriver"));
    let Some(driver_path) = driver_path else {
        assert!(
            !required,
            "LECTERN_E2E_REQUIRED is set but no chromedriver was found"
        );
        skipped("needs chromedriver (apt-get install chromium chromium-driver)");
        return;
    };
    let pki = match TestPki::make() {
        Ok(pki) => pki,
        Err(why) => {
            assert!(!required, "LECTERN_E2E_REQUIRED is set: {why}");
            skipped(&why);
            return;
        }
    };
    let workdir = tempfile::tempdir().unwrap();
    let (database_url, _db_dir) = fresh_database().await;
    let mut env = vec![
        ("DATABASE_URL", database_url.clone()),
        ("LECTERN_SECRET", TEST_SECRET.to_owned()),
        (
            "LECTERN_TLS_CERT",
            pki.path("cert.pem").display().to_string(),
        ),
        ("LECTERN_TLS_KEY", pki.path("key.pem").display().to_string()),
    ];
    if let Ok(redis) = std::env::var("TEST_REDIS_URL") {
        env.extend(own_redis(redis));
    }
    let server = RunningBinary::start(workdir.path(), &env).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let base = server.base.replace("127.0.0.1", "localhost");
    let (_driver, webdriver) = start_driver_in(&driver_path, Some(&pki.home())).await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser_with(&webdriver, profile.path(), &[DBSC_SWITCHES]).await;
    sign_up(&client, &base, None).await;
    if !wait_until_bound(&client, &base, 20).await {
        let why = "this Chromium did not register a device-bound session (no DBSC support?)";
        assert!(!required, "LECTERN_E2E_REQUIRED is set: {why}");
        skipped(why);
        return;
    }
    Shots::new().take(&client, "bound-account").await;
    let session = client.get_named_cookie("lectern_session").await.unwrap();
    assert!(client.get_named_cookie("lectern_bound").await.is_ok());
    // The bound cookie deleted: the browser proves its key again before the page loads.
    client.delete_cookie("lectern_bound").await.unwrap();
    assert!(
        client.get_named_cookie("lectern_bound").await.is_err(),
        "deleted"
    );
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    let url = wait_for_url(&client, 10, |u| at(u, "/dashboard") || u.contains("/login")).await;
    assert!(at(&url, "/dashboard"), "refreshed by itself: {url}");
    assert!(
        client.get_named_cookie("lectern_bound").await.is_ok(),
        "a fresh bound cookie"
    );
    // The session cookie copied into another profile, which has no key: signed out.
    let thief_profile = tempfile::tempdir().unwrap();
    let thief = browser_with(&webdriver, thief_profile.path(), &[DBSC_SWITCHES]).await;
    thief.goto(&base).await.unwrap();
    // Set by the page's script (WebDriver refuses `localhost` as a cookie's domain); the server
    // sees the same cookie either way.
    let copy = format!(
        "document.cookie = 'lectern_session={}; path=/; secure; samesite=lax';",
        session.value()
    );
    thief.execute(&copy, vec![]).await.unwrap();
    thief.goto(&format!("{base}/dashboard")).await.unwrap();
    let url = wait_for_url(&thief, 10, |u| u.contains("/login") || at(u, "/dashboard")).await;
    assert!(
        url.contains("/login"),
        "a copied session cookie is refused: {url}"
    );
    let sid = lectern::auth::sign_ins::browser_sign_in_id(session.value());
    let db = lectern::db::connect(&database_url).await.unwrap();
    let (refused,): (i64,) = sqlx::query_as(
        "select count(*) from audit_events where event = 'bound_refused' and sign_in_id = $1",
    )
    .bind(&sid)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(refused >= 1, "the copy was refused for want of its device");
    // The owner signs out: no refresh succeeds after, and both profiles are signed out.
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    client
        .find(Locator::Css(".site-header .signout-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = wait_for_url(&client, 10, |u| u.contains("signed_out=1")).await;
    assert!(url.contains("signed_out=1"), "{url}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let ended = https
        .post(format!("{base}/dbsc/refresh"))
        .header("sec-secure-session-id", &sid)
        .header("cookie", format!("lectern_session={}", session.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = ended.json().await.unwrap();
    assert_eq!(body["continue"], false, "{body}");
    for browser in [&client, &thief] {
        browser.goto(&format!("{base}/dashboard")).await.unwrap();
        let url = wait_for_url(browser, 10, |u| u.contains("/login")).await;
        assert!(url.contains("/login"), "{url}");
    }
    thief.close().await.unwrap();
    client.close().await.unwrap();
}
