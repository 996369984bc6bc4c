//! What PostgreSQL cannot hold, made storable for PostgreSQL only.
//!
//! PostgreSQL's `text` refuses the NUL character (`invalid byte sequence for encoding
//! "UTF8": 0x00`) and `jsonb` refuses its escape (`\u0000`: "unsupported Unicode escape
//! sequence"). A customer can type one, a BSP passes it on, and one such message used to
//! hold every PostgreSQL write. Here each NUL becomes U+FFFD (the replacement character,
//! so the text shows that something was there) in this store only: `wa.webhooks.raw`,
//! `wa.events` and ClickHouse keep the original.

use std::borrow::Cow;

use serde_json::Value;
use switchboard_schemas::Event;

const REPLACEMENT: &str = "\u{FFFD}";

/// `e` as PostgreSQL can store it: borrowed when nothing needed changing.
pub fn storable(e: &Event) -> Cow<'_, Event> {
    let json_needs = |s: &Option<String>| s.as_deref().is_some_and(json_has_nul);
    let text_needs = texts(e).any(|s| s.contains('\0'));
    if !text_needs && !json_needs(&e.content) && !json_needs(&e.metadata) {
        return Cow::Borrowed(e);
    }
    let mut out = e.clone();
    out.content = out.content.as_deref().map(clean_json);
    out.metadata = out.metadata.as_deref().map(clean_json);
    for s in texts_mut(&mut out) {
        if s.contains('\0') {
            *s = s.replace('\0', REPLACEMENT);
        }
    }
    Cow::Owned(out)
}

/// The plain-text fields (JSON ones are handled by [`clean_json`]).
fn texts(e: &Event) -> impl Iterator<Item = &String> {
    [
        &e.event_id,
        &e.event_type,
        &e.bsp,
        &e.business_number,
        &e.customer_id,
        &e.wamid,
        &e.request_id,
    ]
    .into_iter()
    .chain(
        [
            &e.tenant_id,
            &e.business_account_id,
            &e.status,
            &e.message_type,
            &e.context_wamid,
            &e.error_code,
            &e.error_title,
            &e.error_detail,
            &e.conversation_id,
            &e.conversation_category,
            &e.pricing_category,
            &e.message_id,
        ]
        .into_iter()
        .flatten(),
    )
}

fn texts_mut(e: &mut Event) -> impl Iterator<Item = &mut String> {
    [
        &mut e.event_id,
        &mut e.event_type,
        &mut e.bsp,
        &mut e.business_number,
        &mut e.customer_id,
        &mut e.wamid,
        &mut e.request_id,
    ]
    .into_iter()
    .chain(
        [
            &mut e.tenant_id,
            &mut e.business_account_id,
            &mut e.status,
            &mut e.message_type,
            &mut e.context_wamid,
            &mut e.error_code,
            &mut e.error_title,
            &mut e.error_detail,
            &mut e.conversation_id,
            &mut e.conversation_category,
            &mut e.pricing_category,
            &mut e.message_id,
        ]
        .into_iter()
        .flatten(),
    )
}

/// A NUL in JSON text is either the escape `\u0000` (case-insensitive hex) or, in
/// hand-made JSON, a raw NUL; the check may over-match (`\\u0000` is a backslash and
/// text), which only costs a parse.
fn json_has_nul(s: &str) -> bool {
    s.contains('\0') || s.to_ascii_lowercase().contains("\\u0000")
}

/// JSON with every NUL in its strings and keys replaced. Text that does not parse keeps
/// its shape with raw NULs replaced (PostgreSQL then refuses it as JSON, and the record
/// is dead-lettered with that reason).
fn clean_json(s: &str) -> String {
    if !json_has_nul(s) {
        return s.to_string();
    }
    match serde_json::from_str::<Value>(s) {
        Ok(mut v) => {
            clean_value(&mut v);
            v.to_string()
        }
        Err(_) => s.replace('\0', REPLACEMENT),
    }
}

fn clean_value(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', REPLACEMENT),
        Value::Array(a) => a.iter_mut().for_each(clean_value),
        Value::Object(o) => {
            let dirty: Vec<String> = o.keys().filter(|k| k.contains('\0')).cloned().collect();
            for k in dirty {
                if let Some(val) = o.remove(&k) {
                    o.insert(k.replace('\0', REPLACEMENT), val);
                }
            }
            o.values_mut().for_each(clean_value);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_events_are_borrowed() {
        let e = Event {
            content: Some(r#"{"text":{"body":"hello"}}"#.into()),
            ..Event::default()
        };
        assert!(matches!(storable(&e), Cow::Borrowed(_)));
    }

    #[test]
    fn nul_escapes_in_json_and_raw_nuls_in_text_are_replaced() {
        let e = Event {
            content: Some(r#"{"text":{"body":"hello\u0000world"},"k\u0000":1}"#.into()),
            error_title: Some("bad\0title".into()),
            ..Event::default()
        };
        let s = storable(&e);
        let content: Value = serde_json::from_str(s.content.as_deref().unwrap()).unwrap();
        assert_eq!(content["text"]["body"], "hello\u{FFFD}world");
        assert_eq!(content["k\u{FFFD}"], 1);
        assert!(!s.content.as_deref().unwrap().contains("\\u0000"));
        assert_eq!(s.error_title.as_deref(), Some("bad\u{FFFD}title"));
        // The original is untouched.
        assert!(e.content.as_deref().unwrap().contains("\\u0000"));
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_text_and_survives() {
        let e = Event {
            content: Some(r#"{"a":"\\u0000"}"#.into()),
            ..Event::default()
        };
        let s = storable(&e);
        let v: Value = serde_json::from_str(s.content.as_deref().unwrap()).unwrap();
        assert_eq!(v["a"], "\\u0000");
    }
}
