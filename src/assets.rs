//! The style sheet, scripts and icon, embedded in the binary at build time, so it serves them from
//! any working directory. Pages link each by a versioned address (`/static/app.css?v=<hash>`)
//! that may be cached for a year; the plain address also works and is revalidated by its ETag.

use std::{borrow::Cow, collections::HashMap, sync::LazyLock};

use axum::body::Bytes;

/// Everything under `static/`, compiled in (in debug builds too).
#[derive(rust_embed::RustEmbed)]
#[folder = "static/"]
pub struct Assets;

/// One embedded file, with what its responses say of it worked out once.
pub struct Asset {
    /// The content, served without a copy.
    pub data: Bytes,
    pub content_type: String,
    /// Hex SHA-256 of the content: its ETag and, shortened, its version.
    pub hash: String,
    /// `"<hash>"`, as the `ETag` header and `If-None-Match` carry it.
    pub etag: String,
}

/// How many hex digits of the hash version an address.
const VERSION_LEN: usize = 12;

/// Every asset by name, read from the binary once.
static ALL: LazyLock<HashMap<String, Asset>> = LazyLock::new(|| {
    Assets::iter()
        .filter_map(|name| {
            let file = Assets::get(&name)?;
            let hash = hex::encode(file.metadata.sha256_hash());
            let asset = Asset {
                data: match file.data {
                    Cow::Borrowed(bytes) => Bytes::from_static(bytes),
                    Cow::Owned(bytes) => Bytes::from(bytes),
                },
                content_type: file.metadata.mimetype().to_owned(),
                etag: format!("\"{hash}\""),
                hash,
            };
            Some((name.into_owned(), asset))
        })
        .collect()
});

impl Asset {
    pub fn get(name: &str) -> Option<&'static Self> {
        ALL.get(name)
    }

    /// The version an address carries (`?v=`).
    pub fn version(&self) -> &str {
        &self.hash[..VERSION_LEN]
    }
}

/// The address pages link: versioned by content, so a new build is fetched at once.
pub fn url(name: &str) -> String {
    match Asset::get(name) {
        Some(asset) => format!("/static/{name}?v={}", asset.version()),
        None => format!("/static/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_linked_asset_is_embedded_with_its_type() {
        for (name, kind) in [
            ("app.css", "text/css"),
            ("app.js", "javascript"),
            ("htmx-2.0.11.min.js", "javascript"),
            ("favicon.svg", "image/svg+xml"),
        ] {
            let asset = Asset::get(name).unwrap_or_else(|| panic!("{name} is embedded"));
            assert!(
                asset.content_type.contains(kind),
                "{name}: {}",
                asset.content_type
            );
            assert!(!asset.data.is_empty());
            assert!(url(name).ends_with(asset.version()));
        }
        assert!(Asset::get("../Cargo.toml").is_none());
    }
}
