//! The binary as users run it: started from an empty directory (a service manager, a container,
//! a copied binary), it serves every page with its style sheet, scripts and icon, all embedded.

use axum::http::StatusCode;

use crate::helpers::*;

/// Every `/static/...` address a page links with `href` or `src`.
fn linked_assets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["href=\"/static/", "src=\"/static/"] {
        for (i, _) in html.match_indices(marker) {
            let start = i + marker.len() - "/static/".len();
            let end = start + html[start..].find('"').unwrap();
            out.push(html[start..end].to_owned());
        }
    }
    out
}

#[tokio::test]
async fn started_from_an_empty_directory_the_binary_serves_pages_styles_scripts_and_icon() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(dir.path(), &[]).await;
    for page in ["/", "/login", "/register"] {
        let (status, headers, body) = http_get(&format!("{}{page}", server.base), &[]).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = String::from_utf8(body).unwrap();
        let assets = linked_assets(&html);
        assert_eq!(assets.len(), 4, "{page} links {assets:?}");
        for asset in assets {
            let (status, headers, body) = http_get(&format!("{}{asset}", server.base), &[]).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(!body.is_empty(), "{asset}");
            let kind = headers["content-type"].to_str().unwrap().to_owned();
            let expected = match asset.split('?').next().unwrap().rsplit('.').next() {
                Some("css") => "text/css",
                Some("js") => "javascript",
                Some("svg") => "image/svg+xml",
                other => panic!("unexpected asset {other:?}"),
            };
            assert!(kind.contains(expected), "{asset}: {kind}");
            assert!(headers.contains_key("etag"), "{asset}");
            assert_eq!(
                headers["cache-control"], "public, max-age=31536000, immutable",
                "{asset}: a versioned address may be kept for a year"
            );
        }
    }
    // The embedded shape's database is made where the binary was started.
    assert!(dir.path().join("lectern.db").exists());
}

#[tokio::test]
async fn an_unversioned_asset_is_revalidated_by_its_etag() {
    let dir = tempfile::tempdir().unwrap();
    let server = RunningBinary::start(dir.path(), &[]).await;
    let url = format!("{}/static/app.js", server.base);
    let (status, headers, _) = http_get(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "public, no-cache");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, headers, body) = http_get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers["etag"], etag.as_str());
    let (status, _, _) = http_get(&format!("{}/static/nope.js", server.base), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, _) = http_get(&format!("{}/favicon.ico", server.base), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/svg+xml");
    let (status, _, _) = http_get(&format!("{}/static/../Cargo.toml", server.base), &[]).await;
    assert_ne!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_binary_serves_metrics_on_their_own_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let server = RunningBinary::start(
        dir.path(),
        &[("LECTERN_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))],
    )
    .await;
    wait_for_port(metrics_port).await;
    let (status, headers, body) =
        http_get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("lectern_live_sign_ins 0"), "{text}");
    let (status, _, _) = http_get(&format!("{}/metrics", server.base), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not on the site's address");
}
