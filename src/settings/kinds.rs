//! The types a setting's value can have, and how each is read from text (a flag, an environment
//! variable), from TOML (the config file) and from JSON (the campaign's stored settings), and
//! how it is shown back.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use crate::engine::{PollMode, UnknownPolicy};

/// A setting's value type.
pub trait Kind: Clone + std::fmt::Debug + PartialEq {
    fn from_text(s: &str) -> Option<Self>;
    fn from_toml(v: &toml::Value) -> Option<Self>;
    fn to_json(&self) -> Json;
    fn from_json(v: &Json) -> Option<Self>;
    /// As a user would write it again.
    fn show(&self) -> String;
}

impl Kind for u32 {
    fn from_text(s: &str) -> Option<u32> {
        whole(s).and_then(|n| u32::try_from(n).ok())
    }
    fn from_toml(v: &toml::Value) -> Option<u32> {
        toml_whole(v).and_then(|n| u32::try_from(n).ok())
    }
    fn to_json(&self) -> Json {
        Json::from(*self)
    }
    fn from_json(v: &Json) -> Option<u32> {
        v.as_u64().and_then(|n| u32::try_from(n).ok())
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Kind for u64 {
    fn from_text(s: &str) -> Option<u64> {
        whole(s).and_then(|n| u64::try_from(n).ok())
    }
    fn from_toml(v: &toml::Value) -> Option<u64> {
        toml_whole(v).and_then(|n| u64::try_from(n).ok())
    }
    fn to_json(&self) -> Json {
        Json::from(*self)
    }
    fn from_json(v: &Json) -> Option<u64> {
        v.as_u64()
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Kind for f64 {
    fn from_text(s: &str) -> Option<f64> {
        s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
    }
    fn from_toml(v: &toml::Value) -> Option<f64> {
        match v {
            toml::Value::Float(f) => Some(*f).filter(|v| v.is_finite()),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }
    fn to_json(&self) -> Json {
        Json::from(*self)
    }
    fn from_json(v: &Json) -> Option<f64> {
        v.as_f64()
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Kind for PathBuf {
    fn from_text(s: &str) -> Option<PathBuf> {
        (!s.trim().is_empty()).then(|| PathBuf::from(s))
    }
    fn from_toml(v: &toml::Value) -> Option<PathBuf> {
        v.as_str().and_then(Self::from_text)
    }
    fn to_json(&self) -> Json {
        Json::from(self.to_string_lossy().into_owned())
    }
    fn from_json(v: &Json) -> Option<PathBuf> {
        v.as_str().map(PathBuf::from)
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

/// A span of time: `90` (seconds), `90s`, `1.5s`, `2m`, `1h`, `250ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span(pub Duration);

impl Kind for Span {
    fn from_text(s: &str) -> Option<Span> {
        let s = s.trim();
        let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: f64 = number
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
        let secs = match unit.trim() {
            "" | "s" | "sec" | "secs" => n,
            "ms" => n / 1000.0,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(secs).ok().map(Span)
    }
    fn from_toml(v: &toml::Value) -> Option<Span> {
        match v {
            toml::Value::String(s) => Self::from_text(s),
            other => f64::from_toml(other).and_then(|n| Self::from_text(&n.to_string())),
        }
    }
    fn to_json(&self) -> Json {
        Json::from(self.0.as_secs_f64())
    }
    fn from_json(v: &Json) -> Option<Span> {
        v.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok()).map(Span)
    }
    fn show(&self) -> String {
        let s = self.0.as_secs_f64();
        if s >= 3600.0 && s % 3600.0 == 0.0 {
            format!("{}h", s / 3600.0)
        } else if s >= 60.0 && s % 60.0 == 0.0 {
            format!("{}m", s / 60.0)
        } else {
            format!("{s}s")
        }
    }
}

impl Kind for UnknownPolicy {
    fn from_text(s: &str) -> Option<UnknownPolicy> {
        <UnknownPolicy as clap::ValueEnum>::from_str(s.trim(), true).ok()
    }
    fn from_toml(v: &toml::Value) -> Option<UnknownPolicy> {
        v.as_str().and_then(Self::from_text)
    }
    fn to_json(&self) -> Json {
        Json::from(self.show())
    }
    fn from_json(v: &Json) -> Option<UnknownPolicy> {
        v.as_str().and_then(Self::from_text)
    }
    fn show(&self) -> String {
        clap::ValueEnum::to_possible_value(self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

impl Kind for PollMode {
    fn from_text(s: &str) -> Option<PollMode> {
        <PollMode as clap::ValueEnum>::from_str(s.trim(), true).ok()
    }
    fn from_toml(v: &toml::Value) -> Option<PollMode> {
        v.as_str().and_then(Self::from_text)
    }
    fn to_json(&self) -> Json {
        Json::from(self.show())
    }
    fn from_json(v: &Json) -> Option<PollMode> {
        v.as_str().and_then(Self::from_text)
    }
    fn show(&self) -> String {
        clap::ValueEnum::to_possible_value(self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// A whole number written as people write them: `50`, `+50`, `50.0` (pandas), `1_000`.
fn whole(s: &str) -> Option<i128> {
    let t = s.trim().trim_start_matches('+').replace('_', "");
    if let Ok(n) = t.parse::<i128>() {
        return Some(n);
    }
    let f: f64 = t.parse().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18).then_some(f as i128)
}

fn toml_whole(v: &toml::Value) -> Option<i128> {
    match v {
        toml::Value::Integer(i) => Some(i128::from(*i)),
        toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e18 => Some(*f as i128),
        _ => None,
    }
}

/// The TOML type of a value, for messages.
pub fn toml_type(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => format!("a TOML {}", other.type_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_people_write_them() {
        assert_eq!(u32::from_text("50"), Some(50));
        assert_eq!(u32::from_text(" 50.0 "), Some(50));
        assert_eq!(u32::from_text("1_000"), Some(1000));
        assert_eq!(u32::from_text("-1"), None);
        assert_eq!(u32::from_text("2.5"), None);
        assert_eq!(u32::from_text("fast"), None);
        assert_eq!(f64::from_text("0.05"), Some(0.05));
        assert_eq!(f64::from_text("NaN"), None);
    }

    #[test]
    fn spans() {
        let s = |t: &str| Span::from_text(t).map(|s| s.0);
        assert_eq!(s("90"), Some(Duration::from_secs(90)));
        assert_eq!(s("2m"), Some(Duration::from_secs(120)));
        assert_eq!(s("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(s("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(s("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(s("-3"), None);
        assert_eq!(s("3 fortnights"), None);
        assert_eq!(Span(Duration::from_secs(120)).show(), "2m");
        assert_eq!(Span(Duration::from_millis(1500)).show(), "1.5s");
    }
}
