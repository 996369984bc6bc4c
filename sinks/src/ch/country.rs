//! The customer's country (ISO 3166-1 alpha-2) from the E.164 prefix, by libphonenumber's
//! metadata: `+1` numbers are told apart by area code (US, CA, the Caribbean), `+7` into
//! RU and KZ, and so on. Business-scoped user ids and numbers no region claims are
//! unknown (empty), never guessed.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// A parse costs about 15 µs; a message's statuses name the same customer several
/// times, so recent answers are kept (and forgotten wholesale past this many).
const REMEMBERED: usize = 100_000;

static RECENT: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);

/// `""` when unknown.
pub fn of(customer_id: &str) -> String {
    if !customer_id.starts_with('+') {
        return String::new();
    }
    if let Some(c) = RECENT.lock().expect("not poisoned").get(customer_id) {
        return c.clone();
    }
    let country = phonenumber::parse(None, customer_id)
        .ok()
        .and_then(|n| n.country().id())
        .map(|id| id.as_ref().to_string())
        .unwrap_or_default();
    let mut recent = RECENT.lock().expect("not poisoned");
    if recent.len() >= REMEMBERED {
        recent.clear();
    }
    recent.insert(customer_id.to_string(), country.clone());
    country
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn countries_come_from_the_prefix() {
        assert_eq!(of("+919876543210"), "IN");
        assert_eq!(of("+5511987654321"), "BR");
        assert_eq!(of("+14155550123"), "US");
        assert_eq!(of("+14165550123"), "CA");
        assert_eq!(of("+77012345678"), "KZ");
        assert_eq!(of("+74951234567"), "RU");
        assert_eq!(of("+447400123456"), "GB");
        assert_eq!(of("US.13491208655302741918"), "");
        assert_eq!(of("+999123"), "");
    }
}
