//! Validation of a canonical message object against WhatsApp's documented limits, with a
//! precise field path for every rejection. The gateway runs it before accepting a send,
//! so nothing the BSP would refuse for its shape ever reaches the router.
//! Limits: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages

use serde_json::{Map, Value};

/// A rejected field: `code` is stable, `field` is a dotted path (`template.components[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

fn err(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        code,
        field: field.into(),
        message: message.into(),
    }
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A phone number libphonenumber knows as valid, in E.164.
    Phone(String),
    /// A business-scoped user id: `CC.` (the ISO country) and 1 to 128 letters and digits.
    /// Meta's webhooks carry them as `user_id`; a send must name one in `recipient`.
    Bsuid(String),
}

impl Recipient {
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Phone(s) | Recipient::Bsuid(s) => s,
        }
    }
}

/// Whether `s` has the shape of a business-scoped user id.
pub fn is_bsuid(s: &str) -> bool {
    let Some((cc, id)) = s.split_once('.') else {
        return false;
    };
    cc.len() == 2
        && cc.bytes().all(|b| b.is_ascii_uppercase())
        && (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The customer of a send: a valid phone number (`+`, digits, spaces and dashes allowed)
/// or a business-scoped user id; anything else is refused with the reason.
pub fn recipient(raw: &str) -> Result<Recipient, FieldError> {
    let s = raw.trim();
    if is_bsuid(s) {
        return Ok(Recipient::Bsuid(s.to_string()));
    }
    let phone_like = s.starts_with('+')
        || s.bytes().next().is_some_and(|b| b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-');
    if !phone_like {
        return Err(err(
            "invalid_recipient",
            "to",
            format!("{s:?} is neither a phone number (E.164, e.g. +14155552671) nor a business-scoped user id (CC. and 1 to 128 letters and digits, e.g. US.13491208655302741918)"),
        ));
    }
    let digits: String = s.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let e164 = format!("+{}", digits.strip_prefix('+').unwrap_or(&digits));
    let shape_ok = e164.len() > 1 && e164[1..].bytes().all(|b| b.is_ascii_digit());
    let valid = shape_ok
        && phonenumber::parse(None, &e164)
            .map(|n| phonenumber::is_valid(&n))
            .unwrap_or(false);
    if valid {
        Ok(Recipient::Phone(e164))
    } else {
        Err(err(
            "invalid_phone_number",
            "to",
            format!("{s:?} is not a valid phone number: E.164 with its country code, e.g. +14155552671 (checked against libphonenumber's numbering plans)"),
        ))
    }
}

pub const MESSAGE_TYPES: [&str; 11] = [
    "text",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
];

/// Check `type`, the object it names, and `context`; return the canonical message (only
/// those keys) and its type. Other keys of `body` are the caller's business.
pub fn message(body: &Map<String, Value>) -> Result<(String, Value), FieldError> {
    let t = match body.get("type") {
        None => return Err(err("missing_field", "type", "a message type is required")),
        Some(Value::String(t)) if MESSAGE_TYPES.contains(&t.as_str()) => t.clone(),
        Some(other) => {
            return Err(err(
                "unsupported_type",
                "type",
                format!("{other} is not one of {}", MESSAGE_TYPES.join(", ")),
            ))
        }
    };
    let obj = match body.get(&t) {
        Some(Value::Object(o)) => o,
        Some(_) => return Err(err("invalid_field", &t, "must be an object")),
        None => {
            return Err(err(
                "missing_field",
                &t,
                format!("type {t:?} needs a {t:?} object"),
            ))
        }
    };
    match t.as_str() {
        "text" => text(obj)?,
        "template" => template(obj)?,
        "image" | "audio" | "video" | "document" | "sticker" => media(&t, obj)?,
        "location" => location(obj)?,
        "contacts" => contacts(obj)?,
        "interactive" => interactive(obj)?,
        "reaction" => reaction(obj)?,
        _ => unreachable!("checked against MESSAGE_TYPES"),
    }
    let mut canonical = Map::new();
    canonical.insert("type".into(), Value::String(t.clone()));
    canonical.insert(t.clone(), Value::Object(obj.clone()));
    if let Some(ctx) = body.get("context") {
        let id = ctx
            .get("message_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256);
        match (ctx.as_object(), id) {
            (Some(o), Some(_)) if o.len() == 1 => {
                canonical.insert("context".into(), ctx.clone());
            }
            _ => {
                return Err(err(
                    "invalid_field",
                    "context",
                    "context must be {\"message_id\": \"<wamid>\"}",
                ))
            }
        }
    }
    Ok((t, Value::Object(canonical)))
}

fn only(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), FieldError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(err(
            "unknown_field",
            format!("{path}.{k}"),
            format!("unknown field; allowed: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
    key: &str,
    required: bool,
    max_chars: usize,
) -> Result<Option<&'a str>, FieldError> {
    let field = format!("{path}.{key}");
    match obj.get(key) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(err("missing_field", field, "required")),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if required && s.trim().is_empty() {
                Err(err("invalid_field", field, "must not be empty"))
            } else if n > max_chars {
                Err(err(
                    "too_long",
                    field,
                    format!("{n} characters; WhatsApp allows at most {max_chars}"),
                ))
            } else {
                Ok(Some(s))
            }
        }
        Some(_) => Err(err("invalid_field", field, "must be a string")),
    }
}

fn boolean(obj: &Map<String, Value>, path: &str, key: &str) -> Result<(), FieldError> {
    match obj.get(key) {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(err(
            "invalid_field",
            format!("{path}.{key}"),
            "must be a boolean",
        )),
    }
}

fn array<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
    key: &str,
    min: usize,
    max: usize,
) -> Result<&'a [Value], FieldError> {
    let field = format!("{path}.{key}");
    match obj.get(key) {
        Some(Value::Array(a)) if a.len() < min || a.len() > max => Err(err(
            "invalid_field",
            field,
            format!("{} items; allowed {min} to {max}", a.len()),
        )),
        Some(Value::Array(a)) => Ok(a),
        None if min == 0 => Ok(&[]),
        None => Err(err("missing_field", field, "required")),
        Some(_) => Err(err("invalid_field", field, "must be an array")),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object()
        .ok_or_else(|| err("invalid_field", field, "must be an object"))
}

fn text(o: &Map<String, Value>) -> Result<(), FieldError> {
    only(o, "text", &["body", "preview_url"])?;
    string(o, "text", "body", true, 4096)?;
    boolean(o, "text", "preview_url")
}

fn media(t: &str, o: &Map<String, Value>) -> Result<(), FieldError> {
    let allowed: &[&str] = match t {
        "document" => &["id", "link", "caption", "filename"],
        "image" | "video" => &["id", "link", "caption"],
        _ => &["id", "link"],
    };
    only(o, t, allowed)?;
    let id = string(o, t, "id", false, 256)?;
    let link = string(o, t, "link", false, 2048)?;
    match (id, link) {
        (Some(_), Some(_)) => {
            return Err(err("invalid_field", t, "give either id or link, not both"))
        }
        (None, None) => {
            return Err(err(
                "missing_field",
                format!("{t}.link"),
                "a media id or link is required",
            ))
        }
        (None, Some(l)) if !(l.starts_with("https://") || l.starts_with("http://")) => {
            return Err(err(
                "invalid_field",
                format!("{t}.link"),
                "must be an http(s) URL",
            ))
        }
        _ => {}
    }
    string(o, t, "caption", false, 1024)?;
    string(o, t, "filename", false, 240)?;
    Ok(())
}

fn number_in(o: &Map<String, Value>, path: &str, key: &str, lim: f64) -> Result<(), FieldError> {
    let field = format!("{path}.{key}");
    match o.get(key).and_then(Value::as_f64) {
        Some(x) if x.abs() <= lim => Ok(()),
        Some(_) => Err(err(
            "invalid_field",
            field,
            format!("must be within ±{lim}"),
        )),
        None => Err(err("missing_field", field, "a number is required")),
    }
}

fn location(o: &Map<String, Value>) -> Result<(), FieldError> {
    only(o, "location", &["latitude", "longitude", "name", "address"])?;
    number_in(o, "location", "latitude", 90.0)?;
    number_in(o, "location", "longitude", 180.0)?;
    string(o, "location", "name", false, 1000)?;
    string(o, "location", "address", false, 1000)?;
    Ok(())
}

fn contacts(o: &Map<String, Value>) -> Result<(), FieldError> {
    only(o, "contacts", &["contacts"])?;
    for (i, c) in array(o, "contacts", "contacts", 1, 257)?.iter().enumerate() {
        let path = format!("contacts.contacts[{i}]");
        let c = object(c, &path)?;
        let name = c
            .get("name")
            .ok_or_else(|| err("missing_field", format!("{path}.name"), "required"))?;
        string(
            object(name, &format!("{path}.name"))?,
            &format!("{path}.name"),
            "formatted_name",
            true,
            1000,
        )?;
    }
    Ok(())
}

fn reaction(o: &Map<String, Value>) -> Result<(), FieldError> {
    only(o, "reaction", &["message_id", "emoji"])?;
    string(o, "reaction", "message_id", true, 256)?;
    // An empty emoji removes a reaction.
    match o.get("emoji") {
        Some(Value::String(e)) if e.chars().count() <= 8 => Ok(()),
        Some(_) => Err(err(
            "invalid_field",
            "reaction.emoji",
            "must be one emoji, or empty to remove",
        )),
        None => Err(err("missing_field", "reaction.emoji", "required")),
    }
}

fn interactive(o: &Map<String, Value>) -> Result<(), FieldError> {
    only(
        o,
        "interactive",
        &["type", "header", "body", "footer", "action"],
    )?;
    let kind = string(o, "interactive", "type", true, 32)?.unwrap_or_default();
    let body = o
        .get("body")
        .ok_or_else(|| err("missing_field", "interactive.body", "required"))?;
    string(
        object(body, "interactive.body")?,
        "interactive.body",
        "text",
        true,
        1024,
    )?;
    if let Some(f) = o.get("footer") {
        string(
            object(f, "interactive.footer")?,
            "interactive.footer",
            "text",
            true,
            60,
        )?;
    }
    if let Some(h) = o.get("header") {
        let h = object(h, "interactive.header")?;
        if h.get("type").and_then(Value::as_str) == Some("text") {
            string(h, "interactive.header", "text", true, 60)?;
        }
    }
    let action = o
        .get("action")
        .ok_or_else(|| err("missing_field", "interactive.action", "required"))?;
    let action = object(action, "interactive.action")?;
    match kind {
        "button" => {
            let buttons = array(action, "interactive.action", "buttons", 1, 3)?;
            let mut ids = std::collections::HashSet::new();
            for (i, b) in buttons.iter().enumerate() {
                let path = format!("interactive.action.buttons[{i}]");
                let b = object(b, &path)?;
                if b.get("type").and_then(Value::as_str) != Some("reply") {
                    return Err(err(
                        "invalid_field",
                        format!("{path}.type"),
                        "must be \"reply\"",
                    ));
                }
                let reply = b
                    .get("reply")
                    .ok_or_else(|| err("missing_field", format!("{path}.reply"), "required"))?;
                let rp = format!("{path}.reply");
                let reply = object(reply, &rp)?;
                let id = string(reply, &rp, "id", true, 256)?.unwrap_or_default();
                string(reply, &rp, "title", true, 20)?;
                if !ids.insert(id.to_string()) {
                    return Err(err(
                        "invalid_field",
                        format!("{rp}.id"),
                        "button ids must be unique",
                    ));
                }
            }
        }
        "list" => {
            string(action, "interactive.action", "button", true, 20)?;
            let sections = array(action, "interactive.action", "sections", 1, 10)?;
            let mut rows_total = 0;
            for (i, s) in sections.iter().enumerate() {
                let path = format!("interactive.action.sections[{i}]");
                let s = object(s, &path)?;
                string(s, &path, "title", sections.len() > 1, 24)?;
                let rows = array(s, &path, "rows", 1, 10)?;
                rows_total += rows.len();
                for (j, r) in rows.iter().enumerate() {
                    let rp = format!("{path}.rows[{j}]");
                    let r = object(r, &rp)?;
                    string(r, &rp, "id", true, 200)?;
                    string(r, &rp, "title", true, 24)?;
                    string(r, &rp, "description", false, 72)?;
                }
            }
            if rows_total > 10 {
                return Err(err(
                    "invalid_field",
                    "interactive.action.sections",
                    format!("{rows_total} rows in all; WhatsApp allows at most 10"),
                ));
            }
        }
        "cta_url" => {
            let p = action
                .get("parameters")
                .ok_or_else(|| err("missing_field", "interactive.action.parameters", "required"))?;
            let pp = "interactive.action.parameters";
            let p = object(p, pp)?;
            string(p, pp, "display_text", true, 20)?;
            let url = string(p, pp, "url", true, 2048)?.unwrap_or_default();
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(err(
                    "invalid_field",
                    format!("{pp}.url"),
                    "must be an http(s) URL",
                ));
            }
        }
        other => {
            return Err(err(
                "unsupported_type",
                "interactive.type",
                format!("{other:?} is not one of button, list, cta_url"),
            ))
        }
    }
    Ok(())
}

const PARAM_TYPES: [&str; 9] = [
    "text",
    "currency",
    "date_time",
    "image",
    "document",
    "video",
    "location",
    "payload",
    "coupon_code",
];

fn template(o: &Map<String, Value>) -> Result<(), FieldError> {
    only(o, "template", &["name", "language", "components"])?;
    let name = string(o, "template", "name", true, 512)?.unwrap_or_default();
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(err(
            "invalid_field",
            "template.name",
            "template names are lower-case letters, digits and underscores",
        ));
    }
    let lang = o
        .get("language")
        .ok_or_else(|| err("missing_field", "template.language", "required"))?;
    let lang = object(lang, "template.language")?;
    only(lang, "template.language", &["code", "policy"])?;
    string(lang, "template.language", "code", true, 16)?;
    for (i, c) in array(o, "template", "components", 0, 20)?
        .iter()
        .enumerate()
    {
        let path = format!("template.components[{i}]");
        let c = object(c, &path)?;
        only(c, &path, &["type", "sub_type", "index", "parameters"])?;
        let ctype = string(c, &path, "type", true, 16)?.unwrap_or_default();
        match ctype {
            "header" | "body" => {}
            "button" => {
                let sub = string(c, &path, "sub_type", true, 32)?.unwrap_or_default();
                if !["quick_reply", "url", "copy_code", "flow", "catalog"].contains(&sub) {
                    return Err(err(
                        "invalid_field",
                        format!("{path}.sub_type"),
                        format!("unknown button sub_type {sub:?}"),
                    ));
                }
                let index_ok = match c.get("index") {
                    Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n < 10),
                    Some(Value::String(s)) => s.parse::<u8>().is_ok_and(|n| n < 10),
                    _ => false,
                };
                if !index_ok {
                    return Err(err(
                        "invalid_field",
                        format!("{path}.index"),
                        "a button index 0 to 9 is required",
                    ));
                }
            }
            other => {
                return Err(err(
                    "invalid_field",
                    format!("{path}.type"),
                    format!("{other:?} is not one of header, body, button"),
                ))
            }
        }
        for (j, p) in array(c, &path, "parameters", 0, 100)?.iter().enumerate() {
            parameter(p, &format!("{path}.parameters[{j}]"))?;
        }
    }
    Ok(())
}

fn parameter(p: &Value, path: &str) -> Result<(), FieldError> {
    let p = object(p, path)?;
    let t = string(p, path, "type", true, 16)?.unwrap_or_default();
    if !PARAM_TYPES.contains(&t) {
        return Err(err(
            "template_parameter_invalid",
            format!("{path}.type"),
            format!("{t:?} is not one of {}", PARAM_TYPES.join(", ")),
        ));
    }
    // Each parameter carries exactly the object its type names (text and payload are
    // strings); an optional `parameter_name` names it in named-parameter templates.
    let allowed = ["type", t, "parameter_name"];
    only(p, path, &allowed)?;
    match t {
        "text" => {
            string(p, path, "text", true, 32768)?;
        }
        "payload" => {
            string(p, path, "payload", true, 1000)?;
        }
        "coupon_code" => {
            string(p, path, "coupon_code", true, 15)?;
        }
        "currency" => {
            let c = p
                .get("currency")
                .ok_or_else(|| err("missing_field", format!("{path}.currency"), "required"))?;
            let cp = format!("{path}.currency");
            let c = object(c, &cp)?;
            string(c, &cp, "fallback_value", true, 100)?;
            string(c, &cp, "code", true, 3)?;
            if !c.get("amount_1000").is_some_and(Value::is_i64) {
                return Err(err(
                    "template_parameter_invalid",
                    format!("{cp}.amount_1000"),
                    "an integer amount × 1000 is required",
                ));
            }
        }
        "date_time" => {
            let d = p
                .get("date_time")
                .ok_or_else(|| err("missing_field", format!("{path}.date_time"), "required"))?;
            let dp = format!("{path}.date_time");
            string(object(d, &dp)?, &dp, "fallback_value", true, 100)?;
        }
        "image" | "document" | "video" => {
            let m = p
                .get(t)
                .ok_or_else(|| err("missing_field", format!("{path}.{t}"), "required"))?;
            media(t, object(m, &format!("{path}.{t}"))?).map_err(|mut e| {
                e.field = format!("{path}.{}", e.field);
                e
            })?;
        }
        "location" => {
            let l = p
                .get("location")
                .ok_or_else(|| err("missing_field", format!("{path}.location"), "required"))?;
            location(object(l, &format!("{path}.location"))?)?;
        }
        _ => unreachable!("checked against PARAM_TYPES"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(v: Value) -> Result<(String, Value), FieldError> {
        message(v.as_object().unwrap())
    }

    #[test]
    fn recipients_are_real_numbers_or_business_scoped_ids() {
        for (raw, want) in [
            ("+14155552671", "+14155552671"),
            ("+91 98765-43210", "+919876543210"),
            ("5511987654321", "+5511987654321"),
            ("+447400123456", "+447400123456"),
        ] {
            assert_eq!(recipient(raw), Ok(Recipient::Phone(want.into())), "{raw}");
        }
        let long = format!("US.{}", "a".repeat(128));
        for raw in ["US.13491208655302741918", "BR.x", long.as_str()] {
            assert_eq!(recipient(raw), Ok(Recipient::Bsuid(raw.into())), "{raw}");
        }
        for (raw, code) in [
            ("not-a-number", "invalid_recipient"),
            ("us.123", "invalid_recipient"),
            ("USA.123", "invalid_recipient"),
            ("US.", "invalid_recipient"),
            ("US.abc-def", "invalid_recipient"),
            (&*format!("US.{}", "a".repeat(129)), "invalid_recipient"),
            ("", "invalid_recipient"),
            ("+1", "invalid_phone_number"),
            ("+1415555", "invalid_phone_number"),
            ("+999123456789", "invalid_phone_number"),
            ("+4915x", "invalid_phone_number"),
            ("+14155552671234567", "invalid_phone_number"),
        ] {
            let e = recipient(raw).expect_err(raw);
            assert_eq!((e.code, e.field.as_str()), (code, "to"), "{raw}: {e}");
        }
    }

    #[test]
    fn accepts_every_documented_type() {
        let ok = [
            json!({"type":"text","text":{"body":"hello","preview_url":true}}),
            json!({"type":"image","image":{"link":"https://x.test/a.jpg","caption":"c"}}),
            json!({"type":"document","document":{"id":"123","filename":"a.pdf"}}),
            json!({"type":"audio","audio":{"id":"1"}}),
            json!({"type":"sticker","sticker":{"link":"https://x.test/s.webp"}}),
            json!({"type":"video","video":{"link":"https://x.test/v.mp4"}}),
            json!({"type":"location","location":{"latitude":52.5,"longitude":13.4,"name":"Berlin"}}),
            json!({"type":"contacts","contacts":{"contacts":[{"name":{"formatted_name":"Ann"}}]}}),
            json!({"type":"reaction","reaction":{"message_id":"wamid.1","emoji":"👍"}}),
            json!({"type":"interactive","interactive":{"type":"button","body":{"text":"Pick"},
                "action":{"buttons":[{"type":"reply","reply":{"id":"a","title":"A"}},{"type":"reply","reply":{"id":"b","title":"B"}}]}}}),
            json!({"type":"interactive","interactive":{"type":"list","body":{"text":"Pick"},
                "action":{"button":"Menu","sections":[{"title":"S","rows":[{"id":"r1","title":"Row"}]}]}}}),
            json!({"type":"template","template":{"name":"order_update","language":{"code":"en_US"},
                "components":[{"type":"body","parameters":[{"type":"text","text":"Ann"},
                  {"type":"currency","currency":{"fallback_value":"$1","code":"USD","amount_1000":1000}}]},
                  {"type":"button","sub_type":"quick_reply","index":"0","parameters":[{"type":"payload","payload":"p"}]}]}}),
            json!({"type":"text","text":{"body":"re"},"context":{"message_id":"wamid.2"}}),
        ];
        for v in ok {
            let (t, canonical) = check(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(canonical["type"], t.as_str());
            assert_eq!(canonical[&t], v[&t]);
        }
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (json!({"text":{"body":"x"}}), "missing_field", "type"),
            (json!({"type":"fax","fax":{}}), "unsupported_type", "type"),
            (json!({"type":"text"}), "missing_field", "text"),
            (
                json!({"type":"text","text":{"body":"x".repeat(4097)}}),
                "too_long",
                "text.body",
            ),
            (
                json!({"type":"text","text":{"body":"x","colour":"red"}}),
                "unknown_field",
                "text.colour",
            ),
            (
                json!({"type":"image","image":{"link":"ftp://a"}}),
                "invalid_field",
                "image.link",
            ),
            (
                json!({"type":"image","image":{"caption":"c"}}),
                "missing_field",
                "image.link",
            ),
            (
                json!({"type":"location","location":{"latitude":91,"longitude":0}}),
                "invalid_field",
                "location.latitude",
            ),
            (
                json!({"type":"interactive","interactive":{"type":"button","body":{"text":"b"},"action":{"buttons":[
                {"type":"reply","reply":{"id":"a","title":"this title is far too long"}}]}}}),
                "too_long",
                "interactive.action.buttons[0].reply.title",
            ),
            (
                json!({"type":"template","template":{"name":"t","language":{"code":"en"},
                "components":[{"type":"body","parameters":[{"type":"emoji","emoji":"x"}]}]}}),
                "template_parameter_invalid",
                "template.components[0].parameters[0].type",
            ),
            (
                json!({"type":"template","template":{"name":"t","language":{"code":"en"},
                "components":[{"type":"body","parameters":[{"type":"text"}]}]}}),
                "missing_field",
                "template.components[0].parameters[0].text",
            ),
            (
                json!({"type":"text","text":{"body":"x"},"context":{"id":"w"}}),
                "invalid_field",
                "context",
            ),
        ];
        for (v, code, field) in cases {
            let e = check(v.clone()).expect_err(&v.to_string());
            assert_eq!((e.code, e.field.as_str()), (code, field), "{v}: {e}");
        }
    }
}
