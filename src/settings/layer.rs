//! Every setting in one table (`settings!` below): its name (the flag is `--name` with dashes,
//! the environment variable `WANBATCH_NAME`, the config key `name`), its type, whether a
//! campaign remembers it, and what a valid value is. A `Layer` holds the values one source gave;
//! layers are merged in precedence order, remembering where each value came from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value as Json;

use super::kinds::{toml_type, Kind, Span};
use crate::engine::{PollMode, UnknownPolicy};

/// Where a value came from, for messages and for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File(PathBuf),
    /// The campaign's settings stored in its database.
    Stored,
}

impl Origin {
    /// How a user would point at the value: `--max-cost`, `WANBATCH_MAX_COST`, …
    pub fn name(&self, key: &str) -> String {
        match self {
            Origin::Flag => format!("--{}", key.replace('_', "-")),
            Origin::Env => env_name(key),
            Origin::File(p) => format!("{}: {key}", p.display()),
            Origin::Stored => format!("the campaign's stored {key}"),
        }
    }

    /// One word for `status`.
    pub fn label(&self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::Env => "environment",
            Origin::File(_) => "wanbatch.toml",
            Origin::Stored => "stored",
        }
    }
}

/// The environment variable of a setting.
pub fn env_name(key: &str) -> String {
    format!("WANBATCH_{}", key.to_ascii_uppercase())
}

/// Where each value of a merged layer came from.
pub type Origins = BTreeMap<&'static str, Origin>;

/// A value that cannot be used, with the words to say why.
fn reject(origin: &Origin, key: &str, got: &str, what: &str) -> String {
    match origin {
        Origin::File(_) => format!("{}: expected {what}, got {got}", origin.name(key)),
        _ => format!("{} {got}: expected {what}", origin.name(key)),
    }
}

fn positive<T: PartialOrd + Default>(v: &T) -> bool {
    *v > T::default()
}

fn not_negative(v: &f64) -> bool {
    *v >= 0.0
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty, stored: $stored:literal, what: $what:literal, ok: $ok:expr; )*) => {
        /// Values for any of the settings; `None` where this source says nothing.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Layer {
            $( $(#[doc = $doc])* pub $name: Option<$ty>, )*
        }

        impl Layer {
            /// Every setting's name.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Sets `key` from the text of a flag or an environment variable. `None`: no such key.
            pub fn set_text(&mut self, key: &str, text: &str, origin: &Origin) -> Option<Result<(), String>> {
                match key {
                    $(stringify!($name) => Some(
                        <$ty as Kind>::from_text(text)
                            .filter($ok)
                            .map(|v| self.$name = Some(v))
                            .ok_or_else(|| reject(origin, key, text, $what)),
                    ),)*
                    _ => None,
                }
            }

            /// Sets `key` from a TOML value of the config file. `None`: no such key.
            pub fn set_toml(&mut self, key: &str, v: &toml::Value, origin: &Origin) -> Option<Result<(), String>> {
                match key {
                    $(stringify!($name) => Some(
                        <$ty as Kind>::from_toml(v)
                            .filter($ok)
                            .map(|x| self.$name = Some(x))
                            .ok_or_else(|| reject(origin, key, &toml_type(v), $what)),
                    ),)*
                    _ => None,
                }
            }

            /// Sets `key` from its stored JSON; a value that no longer reads (an older version's)
            /// is left out.
            pub fn set_json(&mut self, key: &str, v: &Json) {
                match key {
                    $(stringify!($name) => self.$name = <$ty as Kind>::from_json(v).filter($ok),)*
                    _ => {}
                }
            }

            /// The settings present, as (key, JSON), those a campaign remembers only if `stored`.
            pub fn to_json(&self, stored_only: bool) -> Vec<(&'static str, Json)> {
                let mut v = Vec::new();
                $(if let Some(x) = &self.$name {
                    if !stored_only || $stored {
                        v.push((stringify!($name), x.to_json()));
                    }
                })*
                v
            }

            /// A present value as a user would write it.
            pub fn show(&self, key: &str) -> Option<String> {
                match key {
                    $(stringify!($name) => self.$name.as_ref().map(Kind::show),)*
                    _ => None,
                }
            }

            /// Fills what this layer lacks from `lower`, noting `origin` for each value taken.
            pub fn fill(&mut self, lower: &Layer, origin: &Origin, origins: &mut Origins) {
                $(if self.$name.is_none() && lower.$name.is_some() {
                    self.$name = lower.$name.clone();
                    origins.insert(stringify!($name), origin.clone());
                })*
            }

            /// Whether a campaign remembers `key`.
            pub fn is_stored(key: &str) -> bool {
                match key {
                    $(stringify!($name) => $stored,)*
                    _ => false,
                }
            }
        }
    };
}

settings! {
    /// The database file (not remembered: it is where the campaign is).
    db: PathBuf, stored: false, what: "a path", ok: |_| true;
    /// Folder for the videos.
    out: PathBuf, stored: true, what: "a folder", ok: |_| true;
    /// API requests per minute, all calls together.
    rpm: u32, stored: true,
        what: "a whole number of API requests per minute from 1 to 1000000 (Segmind's Free plan allows 5, Pro 50)",
        ok: |v| (1..=1_000_000).contains(v);
    /// Jobs at Segmind at once (default: automatic).
    concurrency: u32, stored: true, what: "a whole number of jobs ≥ 1", ok: positive;
    /// Dollars per video where the API reports no cost.
    price: f64, stored: true, what: "a number of dollars per video ≥ 0", ok: not_negative;
    /// Stop submitting before the spend would pass this.
    max_cost: f64, stored: true, what: "a number of dollars ≥ 0", ok: not_negative;
    /// Stop submitting when the remaining credits fall below this.
    min_credits: f64, stored: true, what: "a number of credits ≥ 0", ok: not_negative;
    /// What to do with a submit whose answer was lost.
    on_unknown: UnknownPolicy, stored: true, what: "resubmit or hold", ok: |_| true;
    /// Parallel video downloads.
    download_concurrency: u32, stored: true, what: "a whole number from 1 to 256", ok: |v| (1..=256).contains(v);
    /// Largest video accepted, in bytes.
    max_video_bytes: u64, stored: true, what: "a whole number of bytes ≥ 1", ok: positive;
    /// How long the API host may give no answer at all before the run stops.
    unreachable_after: Span, stored: true, what: "a duration such as 90s, 2m or 1h (more than 0)",
        ok: |s: &Span| !s.0.is_zero();
    /// Which endpoint polls ask.
    poll: PollMode, stored: true, what: "auto, status or result", ok: |_| true;
    /// Paid resubmits of one job before it ends failed.
    max_resubmits: u32, stored: true, what: "a whole number of resubmits ≥ 0", ok: |_| true;
    /// How long Segmind keeps a request's record (an hour; less in a rehearsal).
    result_lifetime: Span, stored: true, what: "a duration such as 1h or 90s (more than 0)",
        ok: |s: &Span| !s.0.is_zero();
    /// Largest local image accepted, in bytes.
    max_image_bytes: u64, stored: true, what: "a whole number of bytes ≥ 1", ok: positive;
    /// How long a new request may take to appear in the request history's list.
    history_lag: Span, stored: true, what: "a duration such as 2m or 30s", ok: |_| true;
    /// The expected duration of a video before any is observed.
    expected_duration: Span, stored: true, what: "a duration such as 54s or 2m (more than 0)",
        ok: |s: &Span| !s.0.is_zero();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_words_a_bad_value_its_own_way() {
        let mut l = Layer::default();
        let e = l.set_text("rpm", "0", &Origin::Flag).unwrap().unwrap_err();
        assert!(
            e.starts_with("--rpm 0: expected a whole number of API requests per minute"),
            "{e}"
        );
        let e = l.set_text("price", "-1", &Origin::Env).unwrap().unwrap_err();
        assert_eq!(e, "WANBATCH_PRICE -1: expected a number of dollars per video ≥ 0");
        let file = Origin::File("w.toml".into());
        let e = l
            .set_toml("rpm", &toml::Value::String("fast".into()), &file)
            .unwrap()
            .unwrap_err();
        assert!(e.starts_with("w.toml: rpm: expected a whole number"), "{e}");
        assert!(e.ends_with("got \"fast\""), "{e}");
        assert!(l.set_text("nope", "1", &Origin::Flag).is_none());
        assert!(l.set_text("max_cost", "20", &Origin::Flag).unwrap().is_ok());
        assert_eq!(l.max_cost, Some(20.0));
    }

    #[test]
    fn layers_fill_from_lower_ones_and_remember_where_from() {
        let mut top = Layer {
            rpm: Some(9),
            ..Layer::default()
        };
        let lower = Layer {
            rpm: Some(5),
            price: Some(0.1),
            db: Some("x.db".into()),
            ..Layer::default()
        };
        let mut origins = Origins::new();
        origins.insert("rpm", Origin::Flag);
        top.fill(&lower, &Origin::Stored, &mut origins);
        assert_eq!((top.rpm, top.price), (Some(9), Some(0.1)));
        assert_eq!(origins["rpm"], Origin::Flag);
        assert_eq!(origins["price"], Origin::Stored);
        // The database's path is not remembered by the campaign.
        let stored: Vec<&str> = top.to_json(true).into_iter().map(|(k, _)| k).collect();
        assert_eq!(stored, ["rpm", "price"]);
        let mut back = Layer::default();
        for (k, v) in top.to_json(true) {
            back.set_json(k, &v);
        }
        assert_eq!((back.rpm, back.price, back.db), (Some(9), Some(0.1), None));
    }
}
