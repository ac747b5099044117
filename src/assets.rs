//! The style sheet, scripts and icon, embedded in the binary at build time, so it serves them from
//! any working directory. Pages link each by a versioned address (`/static/app.css?v=<hash>`)
//! that may be cached for a year; the plain address also works and is revalidated by its ETag.
//! Text assets are also kept gzipped, compressed once, for the browsers that accept it (all do).

use std::{borrow::Cow, collections::HashMap, sync::LazyLock};

use axum::{body::Bytes, http::HeaderValue};

/// Everything under `static/`, compiled in (in debug builds too).
#[derive(rust_embed::RustEmbed)]
#[folder = "static/"]
pub struct Assets;

/// One embedded file, with what its responses say of it worked out once (header values
/// included, so a response copies nothing).
pub struct Asset {
    /// The content, served without a copy.
    pub data: Bytes,
    pub content_type: HeaderValue,
    /// Hex SHA-256 of the content: its ETag and, shortened, its version.
    pub hash: String,
    /// `"<hash>"`, as the `ETag` header and `If-None-Match` carry it.
    pub etag: HeaderValue,
    /// The content gzipped, when that is worth it.
    pub gzip: Option<Gzipped>,
}

/// An asset's gzip representation.
pub struct Gzipped {
    pub data: Bytes,
    /// `"<hash>-gzip"`: each representation has its own (strong) ETag.
    pub etag: HeaderValue,
}

/// A header value made of what this module wrote itself (a MIME type, a quoted hex hash).
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Gzips `data` if it is text that shrinks by at least a tenth.
fn gzipped(data: &[u8], content_type: &str, hash: &str) -> Option<Gzipped> {
    use std::io::Write;
    let text = content_type.starts_with("text/")
        || content_type.contains("javascript")
        || content_type.contains("json")
        || content_type.contains("svg");
    if !text || data.len() < 512 {
        return None;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).ok()?;
    let compressed = encoder.finish().ok()?;
    (compressed.len() * 10 <= data.len() * 9).then(|| Gzipped {
        data: Bytes::from(compressed),
        etag: header_value(format!("\"{hash}-gzip\"")),
    })
}

/// How many hex digits of the hash version an address.
const VERSION_LEN: usize = 12;

/// Every asset by name, read from the binary once.
static ALL: LazyLock<HashMap<String, Asset>> = LazyLock::new(|| {
    Assets::iter()
        .filter_map(|name| {
            let file = Assets::get(&name)?;
            let hash = hex::encode(file.metadata.sha256_hash());
            let content_type = file.metadata.mimetype().to_owned();
            let data = match file.data {
                Cow::Borrowed(bytes) => Bytes::from_static(bytes),
                Cow::Owned(bytes) => Bytes::from(bytes),
            };
            let asset = Asset {
                gzip: gzipped(&data, &content_type, &hash),
                data,
                content_type: header_value(content_type),
                etag: header_value(format!("\"{hash}\"")),
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
                asset.content_type.to_str().unwrap().contains(kind),
                "{name}: {:?}",
                asset.content_type
            );
            assert!(!asset.data.is_empty());
            assert!(url(name).ends_with(asset.version()));
        }
        assert!(Asset::get("../Cargo.toml").is_none());
    }

    #[test]
    fn text_assets_are_kept_gzipped_and_unzip_to_themselves() {
        use std::io::Read;
        for name in ["app.css", "app.js", "htmx-2.0.11.min.js"] {
            let asset = Asset::get(name).unwrap();
            let gzip = asset.gzip.as_ref().unwrap_or_else(|| panic!("{name}"));
            assert!(gzip.data.len() < asset.data.len() / 2, "{name}");
            assert_ne!(gzip.etag, asset.etag);
            let mut unzipped = Vec::new();
            flate2::read::GzDecoder::new(&gzip.data[..])
                .read_to_end(&mut unzipped)
                .unwrap();
            assert_eq!(unzipped, asset.data, "{name}");
        }
        assert!(
            Asset::get("favicon.svg").unwrap().gzip.is_none(),
            "too small to gain"
        );
    }
}
