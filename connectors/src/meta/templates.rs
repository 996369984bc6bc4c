//! Message templates of a WhatsApp Business Account, from the Graph API:
//! `GET {base}/{waba_id}/message_templates?fields=name,language,status,category,components`
//! with `Authorization: Bearer <token>`, paged by `paging.cursors.after` (the page size
//! is ours; `paging.next` is present while more pages follow). Each template is one
//! (name, language); its components are kept whole, and what a send must supply is
//! counted from them: `{{1}}` (positional) or `{{name}}` (named) placeholders in the
//! header and body texts, a media parameter for an image, video or document header, and
//! one per URL button whose URL has a placeholder.

use serde_json::Value;

/// Pages followed at most (100 templates each; a WABA holds up to 6,000 in 2026).
const MAX_PAGES: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub language: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`, ...
    pub status: String,
    /// `MARKETING`, `UTILITY`, `AUTHENTICATION`.
    pub category: String,
    pub components: Value,
    /// What a send of it must carry.
    pub needs: Needs,
}

/// The parameters a send of a template must carry, per component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Text parameters of the header (0 or 1 under Meta's rules).
    pub header_text: usize,
    /// A media header (`IMAGE`, `VIDEO`, `DOCUMENT`) takes one parameter of that type.
    pub header_media: bool,
    pub body: usize,
    /// URL buttons with a placeholder, by index.
    pub url_buttons: usize,
}

/// Distinct `{{...}}` placeholders in a template text.
pub fn placeholders(text: &str) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        let name = after[..j].trim();
        if !name.is_empty() && !seen.contains(&name) {
            seen.push(name);
        }
        rest = &after[j + 2..];
    }
    seen.len()
}

fn needs(components: &Value) -> Needs {
    let mut n = Needs::default();
    for c in components.as_array().into_iter().flatten() {
        let text = c.get("text").and_then(Value::as_str).unwrap_or_default();
        match c.get("type").and_then(Value::as_str).unwrap_or_default() {
            "HEADER" => match c.get("format").and_then(Value::as_str).unwrap_or("TEXT") {
                "TEXT" => n.header_text = placeholders(text),
                "IMAGE" | "VIDEO" | "DOCUMENT" => n.header_media = true,
                _ => {}
            },
            "BODY" => n.body = placeholders(text),
            "BUTTONS" => {
                n.url_buttons = c
                    .get("buttons")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|b| {
                        b.get("type").and_then(Value::as_str) == Some("URL")
                            && b.get("url")
                                .and_then(Value::as_str)
                                .is_some_and(|u| placeholders(u) > 0)
                    })
                    .count()
            }
            _ => {}
        }
    }
    n
}

/// One page of the answer: its templates (entries without a name or language are
/// skipped) and the cursor of the next page, if there is one.
pub fn parse_page(body: &[u8]) -> Result<(Vec<Template>, Option<String>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no `data` array")?;
    let s = |t: &Value, k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
    let templates = data
        .iter()
        .filter_map(|t| {
            let components = t.get("components").cloned().unwrap_or(Value::Null);
            Some(Template {
                name: s(t, "name")?,
                language: s(t, "language")?,
                status: s(t, "status").unwrap_or_default(),
                category: s(t, "category").unwrap_or_default(),
                needs: needs(&components),
                components,
            })
        })
        .collect();
    let next = v
        .pointer("/paging/next")
        .and(v.pointer("/paging/cursors/after"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((templates, next))
}

/// Every template of the WABA, page by page.
pub async fn fetch(
    http: &reqwest::Client,
    base_url: &str,
    waba_id: &str,
    access_token: &str,
) -> Result<Vec<Template>, String> {
    let url = format!(
        "{}/{waba_id}/message_templates",
        base_url.trim_end_matches('/')
    );
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut page_url = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
        page_url
            .query_pairs_mut()
            .append_pair("fields", "name,language,status,category,components")
            .append_pair("limit", "100");
        if let Some(a) = &after {
            page_url.query_pairs_mut().append_pair("after", a);
        }
        let resp = http
            .get(page_url)
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "GET {url}: HTTP {status}: {}",
                crate::send::snippet(&body)
            ));
        }
        let (page, next) = parse_page(&body)?;
        all.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return Ok(all),
        }
    }
    Err(format!("more than {MAX_PAGES} pages of templates"))
}

/// Whether the parameters of a send (the Cloud API's `template.components`) are what the
/// template takes; the first mismatch otherwise.
pub fn check_parameters(needs: &Needs, send: &Value) -> Result<(), String> {
    let mut body = 0;
    let mut header_text = 0;
    let mut header_media = 0;
    let mut url_buttons = 0;
    for c in send.as_array().into_iter().flatten() {
        let params: &[Value] = c
            .get("parameters")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match c.get("type").and_then(Value::as_str).unwrap_or_default() {
            "body" => body += params.len(),
            "header" => {
                for p in params {
                    match p.get("type").and_then(Value::as_str) {
                        Some("image" | "video" | "document") => header_media += 1,
                        _ => header_text += 1,
                    }
                }
            }
            "button" if c.get("sub_type").and_then(Value::as_str) == Some("url") => {
                url_buttons += 1
            }
            _ => {}
        }
    }
    let want = |what: &str, got: usize, want: usize| {
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "the template's {what} takes {want} parameter(s), {got} given"
            ))
        }
    };
    want("body", body, needs.body)?;
    want("header", header_text, needs.header_text)?;
    want(
        "media header",
        header_media,
        usize::from(needs.header_media),
    )?;
    want("URL buttons", url_buttons, needs.url_buttons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_what_a_send_must_carry() {
        assert_eq!(placeholders("Hi {{1}}, order {{2}} ships {{1}}"), 2);
        assert_eq!(placeholders("Hi {{first_name}}, {{ order }}"), 2);
        assert_eq!(placeholders("no params {{}} {{ unclosed"), 0);
        let page = json!({"data": [{
            "name": "order_update", "language": "en_US", "status": "APPROVED", "category": "UTILITY", "id": "1",
            "components": [
                {"type": "HEADER", "format": "IMAGE"},
                {"type": "BODY", "text": "Hi {{1}}, your order {{2}} is on its way."},
                {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Track", "url": "https://x.example/t/{{1}}"},
                    {"type": "QUICK_REPLY", "text": "Stop"}]}
            ]}, {"language": "en"}],
            "paging": {"cursors": {"before": "b", "after": "NEXT"}, "next": "https://graph.facebook.com/..."}});
        let (t, next) = parse_page(page.to_string().as_bytes()).unwrap();
        assert_eq!(next.as_deref(), Some("NEXT"));
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].needs,
            Needs {
                header_text: 0,
                header_media: true,
                body: 2,
                url_buttons: 1
            }
        );
        let last = json!({"data": [], "paging": {"cursors": {"before": "b", "after": "z"}}});
        assert_eq!(parse_page(last.to_string().as_bytes()).unwrap().1, None);
        assert!(parse_page(b"{}").is_err());
    }

    #[test]
    fn parameters_must_match_the_template() {
        let n = Needs {
            header_text: 0,
            header_media: true,
            body: 2,
            url_buttons: 1,
        };
        let good = json!([
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.example/a.jpg"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "42"}]},
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "42"}]}
        ]);
        assert_eq!(check_parameters(&n, &good), Ok(()));
        let short = json!([{"type": "body", "parameters": [{"type": "text", "text": "Ann"}]}]);
        let e = check_parameters(&n, &short).unwrap_err();
        assert!(e.contains("body takes 2 parameter(s), 1 given"), "{e}");
        assert!(check_parameters(&Needs::default(), &Value::Null).is_ok());
    }
}
