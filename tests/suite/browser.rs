//! End to end in a real browser: headless Chromium over WebDriver (chromedriver).
//!
//! Skipped, saying why, when no chromedriver is found; `LECTERN_E2E_REQUIRED=1` (set by `.ci/run`)
//! turns the skip into a failure. Screenshots of each step go to `target/e2e/`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, wd::Capabilities};
use lectern::Application;
use serde_json::json;

use crate::helpers::{
    PASSWORD, find_on_path, free_port, fresh_database, test_settings, unique_email,
};

/// Kills chromedriver when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver(path: &PathBuf) -> (Driver, String) {
    let port = free_port();
    let child = Command::new(path)
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
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = Capabilities::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("open a Chromium session")
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

#[tokio::test]
async fn signing_out_in_the_browser_leaves_nothing_behind() {
    let driver_path = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| find_on_path("chromedriver"));
    let Some(driver_path) = driver_path else {
        assert!(
            std::env::var("LECTERN_E2E_REQUIRED").is_err(),
            "LECTERN_E2E_REQUIRED is set but no chromedriver was found (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: browser suite needs chromedriver on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };

    // The app on a real port.
    crate::helpers::quiet_logs();
    let (database_url, _db_dir) = fresh_database().await;
    let prefix = format!("lectern:test:{}:", uuid::Uuid::new_v4().simple());
    let app = Application::build(test_settings(&database_url, &prefix))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let (_driver, webdriver) = start_driver(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&webdriver, profile.path()).await;
    let shots = Shots::new();

    // Sign up and land on the dashboard.
    client.goto(&format!("{base}/register")).await.unwrap();
    client
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(&unique_email())
        .await
        .unwrap();
    client
        .find(Locator::Id("display_name"))
        .await
        .unwrap()
        .send_keys("Ada")
        .await
        .unwrap();
    client
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    shots.take(&client, "01-register").await;
    client
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let url = wait_for_url(&client, 10, |u| u.ends_with("/dashboard")).await;
    assert!(url.ends_with("/dashboard"), "after sign-up: {url}");

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
        .for_element(Locator::Css("#more-courses .badge"))
        .await
        .unwrap();
    shots.take(&client, "02-dashboard-enrolled").await;

    // Something of ours in storage, as a page might leave it.
    client
        .execute(
            "localStorage.setItem('lectern.draft', 'notes'); sessionStorage.setItem('lectern.tab', '1');
             localStorage.setItem('htmx-history-cache', '[]');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(our_storage_keys(&client).await.len(), 3);

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
    let url = wait_for_url(&client, 10, |u| u.contains("signed_out=1")).await;
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
    shots.take(&client, "03-signed-out-home").await;

    // No lectern_ cookie, nothing of ours in storage.
    let cookies = client.get_all_cookies().await.unwrap();
    let ours: Vec<_> = cookies
        .iter()
        .filter(|c| c.name().starts_with("lectern_"))
        .map(|c| c.name().to_owned())
        .collect();
    assert!(ours.is_empty(), "cookies left: {ours:?}");
    assert!(
        our_storage_keys(&client).await.is_empty(),
        "storage left: {:?}",
        our_storage_keys(&client).await
    );

    // Back does not show authenticated content: the entries before the homepage are the dashboard
    // and the account page; going back asks the server again (no-store; a bfcache restore reloads),
    // which sends the browser to the login page. (Chromium may skip the entry that navigated away
    // by script, so either page may be the one Back reaches.)
    client.back().await.unwrap();
    let url = wait_for_url(&client, 10, |u| u.contains("/login?next=")).await;
    let page = client.source().await.unwrap();
    shots.take(&client, "04-after-back").await;
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
    let url = wait_for_url(&client, 10, |u| u.contains("signed_out=1")).await;
    shots.take(&client, "05-second-tab").await;
    assert!(url.contains("signed_out=1"), "second tab is still on {url}");
    assert!(!client.source().await.unwrap().contains("More courses"));

    // Reloading the dashboard goes to the login page.
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    let url = wait_for_url(&client, 10, |u| u.contains("/login")).await;
    shots.take(&client, "06-dashboard-reload").await;
    assert!(
        url.contains("/login?next=%2Fdashboard"),
        "dashboard after sign-out: {url}"
    );

    client.close().await.unwrap();
}
