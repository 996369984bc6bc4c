//! The blob store of inbound media, through the `object_store` crate: a local directory
//! (`file:///var/lib/switchboard/media`) by default, any S3-compatible bucket
//! (`s3://bucket/prefix`, configured by the usual `AWS_*` variables) otherwise. Blobs are
//! content-addressed: `<prefix>/<sha256>`, so the same bytes are kept once.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl BlobStore {
    /// The store at `url`; a local directory is created if missing.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let parsed =
            url::Url::parse(url).map_err(|e| anyhow::anyhow!("media store {url:?}: {e}"))?;
        if parsed.scheme() == "file" {
            std::fs::create_dir_all(parsed.path())
                .map_err(|e| anyhow::anyhow!("media store {}: {e}", parsed.path()))?;
        }
        let aws: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let (store, prefix) = object_store::parse_url_opts(&parsed, aws)
            .map_err(|e| anyhow::anyhow!("media store {url:?}: {e}"))?;
        Ok(Self {
            store: Arc::from(store),
            prefix,
        })
    }

    fn path(&self, sha256: &str) -> Path {
        self.prefix.child(sha256)
    }

    /// Keep `bytes` under their hash, unless they are there already.
    pub async fn put(&self, sha256: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let path = self.path(sha256);
        match self.store.head(&path).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.put(&path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, sha256: &str) -> anyhow::Result<Option<Bytes>> {
        match self.store.get(&self.path(sha256)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `s` is a hex SHA-256 (what a blob is named by).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
