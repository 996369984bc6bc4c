//! Confluent wire-format codec: magic byte 0, 4-byte schema id, Avro binary body.
//!
//! Encoding registers the writer schema under the topic's value subject
//! (`<topic>-value`, TopicNameStrategy) on first use and caches the id for the life of the
//! process; decoding looks the writer schema up by the id in the record, so records written
//! with older schema versions keep decoding.

use std::sync::Arc;

use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("schema registry or Avro encoding failed for subject {subject}: {source}")]
    Encode {
        subject: String,
        #[source]
        source: SRCError,
    },
    #[error("could not decode a Confluent-framed Avro record: {0}")]
    Decode(#[source] SRCError),
    #[error("decoded Avro value does not match {type_name}: {detail}")]
    Shape {
        type_name: &'static str,
        detail: String,
    },
}

impl CodecError {
    /// True when retrying later can succeed (registry unreachable), false when the input
    /// itself is bad (wrong framing, unknown schema, wrong shape).
    pub fn is_retryable(&self) -> bool {
        match self {
            CodecError::Encode { source, .. } | CodecError::Decode(source) => source.retriable,
            CodecError::Shape { .. } => false,
        }
    }
}

/// Encoder and decoder sharing one registry connection. Cheap to clone.
#[derive(Clone)]
pub struct Codec {
    encoder: Arc<AvroEncoder>,
    decoder: Arc<AvroDecoder>,
}

impl Codec {
    /// A codec for the registry at `registry_url`. Credentials in the URL
    /// (`https://user:password@host`, percent-encoded) become HTTP basic auth, as
    /// Confluent Cloud and Karapace behind auth expect; HTTPS trusts the system's CAs (or
    /// `SSL_CERT_FILE`).
    pub fn new(registry_url: &str) -> Self {
        let (url, auth) = split_credentials(registry_url);
        let mut b = SrSettings::new_builder(url.trim_end_matches('/').to_string());
        if let Some((user, password)) = &auth {
            b.set_basic_authorization(user, Some(password));
        }
        let settings = b
            .build()
            .unwrap_or_else(|_| SrSettings::new(url.trim_end_matches('/').to_string()));
        Self {
            encoder: Arc::new(AvroEncoder::new(settings.clone())),
            decoder: Arc::new(AvroDecoder::new(settings)),
        }
    }

    /// Encode `item` for `topic` with the writer schema `schema` (one of the `*_SCHEMA`
    /// constants).
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        schema: &str,
        item: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
            topic.to_string(),
            false,
            SuppliedSchema::new(None, SchemaType::Avro, schema.to_string()),
        );
        let out = self.encoder.encode_struct(item, &strategy).await;
        if out.is_err() {
            // The converter caches non-retryable failures forever; a registry that was
            // briefly misconfigured must not poison this process.
            self.encoder.remove_errors_from_cache();
        }
        out.map_err(|source| CodecError::Encode {
            subject: format!("{topic}-value"),
            source,
        })
    }

    pub async fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let decoded = match self.decoder.decode(Some(bytes)).await {
            Ok(d) => d,
            Err(e) => {
                self.decoder.remove_errors_from_cache();
                return Err(CodecError::Decode(e));
            }
        };
        apache_avro::from_value::<T>(&decoded.value).map_err(|e| CodecError::Shape {
            type_name: std::any::type_name::<T>(),
            detail: e.to_string(),
        })
    }
}

/// `scheme://user:password@host/...` → (`scheme://host/...`, (user, password)), decoded.
/// Other URLs are returned as they are.
pub fn split_credentials(raw: &str) -> (String, Option<(String, String)>) {
    let Ok(mut u) = url::Url::parse(raw) else {
        return (raw.to_string(), None);
    };
    if u.username().is_empty() {
        return (raw.to_string(), None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let creds = (
        decode(u.username()),
        decode(u.password().unwrap_or_default()),
    );
    let _ = u.set_username("");
    let _ = u.set_password(None);
    (u.to_string(), Some(creds))
}

#[cfg(test)]
mod credential_tests {
    #[test]
    fn credentials_leave_the_url() {
        let (url, auth) = super::split_credentials("https://key:p%40s+s@sr.example.com:8081/");
        assert_eq!(url, "https://sr.example.com:8081/");
        assert_eq!(auth, Some(("key".into(), "p@s+s".into())));
        let (url, auth) = super::split_credentials("http://127.0.0.1:8081");
        assert_eq!((url.as_str(), auth), ("http://127.0.0.1:8081", None));
    }
}
