//! The BSPs Switchboard speaks to, by the slug used in URLs, topics and rows.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bsp {
    Meta,
    Dialog360,
    Gupshup,
    Twilio,
    Waha,
    Aisensy,
    Karix,
}

impl Bsp {
    pub const ALL: [Bsp; 7] = [
        Bsp::Meta,
        Bsp::Dialog360,
        Bsp::Gupshup,
        Bsp::Twilio,
        Bsp::Waha,
        Bsp::Aisensy,
        Bsp::Karix,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            Bsp::Meta => "meta",
            Bsp::Dialog360 => "360dialog",
            Bsp::Gupshup => "gupshup",
            Bsp::Twilio => "twilio",
            Bsp::Waha => "waha",
            Bsp::Aisensy => "aisensy",
            Bsp::Karix => "karix",
        }
    }

    /// The request content type this BSP sends its webhooks with.
    pub fn content_type(self) -> &'static str {
        match self {
            Bsp::Twilio => "application/x-www-form-urlencoded",
            _ => "application/json",
        }
    }
}

impl fmt::Display for Bsp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

impl FromStr for Bsp {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Bsp::ALL.into_iter().find(|b| b.slug() == s).ok_or(())
    }
}
