//! Validation of a submitted body against the `wan-2.2-i2v-fast` parameter table
//! (seed page), plus the prompt triggers `[fail]` and `[blocked]`. Like the real
//! API, the fake accepts any JSON object at submit; the outcome computed here
//! decides whether the job later ends FAILED and with which error.

use serde_json::{Map, Value};

/// Kinds of parameter of the model.
enum Kind {
    /// A string that must be an http(s) URL.
    Url,
    Str,
    /// A string, or null (parameters whose default is null).
    OptStr,
    Int(i64, i64),
    /// Any integer, or null.
    OptInt,
    Num(f64, f64),
    Bool,
    OneOf(&'static [&'static str]),
}

const LORA_SCALE: Kind = Kind::Num(0.0, 2.0);

/// Every parameter the model knows, in the order errors are looked for.
const PARAMS: &[(&str, Kind)] = &[
    ("image", Kind::Url),
    ("prompt", Kind::Str),
    ("negative_prompt", Kind::Str),
    ("last_image", Kind::OptStr),
    ("num_frames", Kind::Int(81, 100)),
    ("frames_per_second", Kind::Int(5, 24)),
    ("sample_shift", Kind::Num(1.0, 20.0)),
    ("resolution", Kind::OneOf(&["480p", "720p"])),
    ("aspect_ratio", Kind::OneOf(&["16:9", "9:16"])),
    ("go_fast", Kind::Bool),
    ("seed", Kind::OptInt),
    ("high_noise_lora", Kind::OptStr),
    ("high_noise_lora_2", Kind::OptStr),
    ("high_noise_lora_3", Kind::OptStr),
    ("low_noise_lora", Kind::OptStr),
    ("low_noise_lora_2", Kind::OptStr),
    ("low_noise_lora_3", Kind::OptStr),
    ("high_noise_lora_scale", LORA_SCALE),
    ("high_noise_lora_scale_2", LORA_SCALE),
    ("high_noise_lora_scale_3", LORA_SCALE),
    ("low_noise_lora_scale", LORA_SCALE),
    ("low_noise_lora_scale_2", LORA_SCALE),
    ("low_noise_lora_scale_3", LORA_SCALE),
];

const REQUIRED: &[&str] = &["image", "prompt"];

pub(super) const FAIL_TRIGGER: &str = "[fail]";
pub(super) const BLOCK_TRIGGER: &str = "[blocked]";
pub(super) const FAIL_ERROR: &str = "Inference failed: simulated model error";
pub(super) const BLOCK_ERROR: &str = "Content blocked by safety filter (RAI)";

/// The error a job with this body ends with, or None if it completes: the parameter table
/// (when `check_params`: the fake's own model), then `fetch` (fetching its input images),
/// then the prompt triggers.
pub(super) fn job_error(
    body: &Map<String, Value>,
    check_params: bool,
    fetch: impl FnOnce(&Map<String, Value>) -> Option<String>,
) -> Option<String> {
    if check_params {
        if let Err(e) = validate(body) {
            return Some(format!("Validation error: {e}"));
        }
    }
    if let Some(e) = fetch(body) {
        return Some(e);
    }
    let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
    if prompt.contains(FAIL_TRIGGER) {
        Some(FAIL_ERROR.to_string())
    } else if prompt.contains(BLOCK_TRIGGER) {
        Some(BLOCK_ERROR.to_string())
    } else {
        None
    }
}

/// Checks the body; the error starts with the offending field's name.
pub(super) fn validate(body: &Map<String, Value>) -> Result<(), String> {
    for key in REQUIRED {
        if !body.contains_key(*key) {
            return Err(format!("{key} is required"));
        }
    }
    for key in body.keys() {
        if !PARAMS.iter().any(|(name, _)| name == key) {
            return Err(format!("{key} is not a parameter of this model"));
        }
    }
    for (name, kind) in PARAMS {
        if let Some(v) = body.get(*name) {
            check(name, kind, v)?;
        }
    }
    Ok(())
}

fn check(name: &str, kind: &Kind, v: &Value) -> Result<(), String> {
    let int_of = |v: &Value| v.as_i64().or_else(|| v.as_u64().map(|_| i64::MAX));
    match kind {
        Kind::Url => match v.as_str() {
            Some(s) if s.starts_with("http://") || s.starts_with("https://") => Ok(()),
            Some("") => Err(format!("{name} is required")),
            Some(_) => Err(format!("{name} must be an http(s) URL (got {v})")),
            None => Err(format!("{name} must be a string (got {v})")),
        },
        Kind::Str => match v.as_str() {
            Some(s) if s.trim().is_empty() && REQUIRED.contains(&name) => Err(format!("{name} is required")),
            Some(_) => Ok(()),
            None => Err(format!("{name} must be a string (got {v})")),
        },
        Kind::OptStr => match v {
            Value::String(_) | Value::Null => Ok(()),
            _ => Err(format!("{name} must be a string (got {v})")),
        },
        Kind::Int(lo, hi) => match int_of(v) {
            Some(i) if (*lo..=*hi).contains(&i) => Ok(()),
            _ if v.is_i64() || v.is_u64() => Err(format!("{name} must be between {lo} and {hi} (got {v})")),
            _ => Err(format!("{name} must be an integer (got {v})")),
        },
        Kind::OptInt => match v {
            Value::Null => Ok(()),
            _ if v.is_i64() || v.is_u64() => Ok(()),
            _ => Err(format!("{name} must be an integer (got {v})")),
        },
        Kind::Num(lo, hi) => match v.as_f64() {
            Some(x) if x >= *lo && x <= *hi => Ok(()),
            Some(_) => Err(format!("{name} must be between {lo} and {hi} (got {v})")),
            None => Err(format!("{name} must be a number (got {v})")),
        },
        Kind::Bool => match v {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{name} must be a boolean (got {v})")),
        },
        Kind::OneOf(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => Ok(()),
            _ => Err(format!("{name} must be one of {} (got {v})", allowed.join(", "))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job_error(body: &Map<String, Value>) -> Option<String> {
        super::job_error(body, true, |_| None)
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn base() -> Value {
        json!({"image": "https://example.com/a.jpg", "prompt": "a cat"})
    }

    fn with(key: &str, v: Value) -> Map<String, Value> {
        let mut m = obj(base());
        m.insert(key.to_string(), v);
        m
    }

    #[test]
    fn seed_page_example_is_valid() {
        let body = json!({
            "image": "https://segmind-resources.s3.amazonaws.com/output/x.jpeg",
            "prompt": "viking", "go_fast": true, "num_frames": 81, "resolution": "480p",
            "aspect_ratio": "16:9", "sample_shift": 12, "frames_per_second": 16,
            "high_noise_lora_scale": 1, "low_noise_lora_scale": 1,
            "high_noise_lora_scale_2": 1, "low_noise_lora_scale_2": 1,
            "high_noise_lora_scale_3": 1.5, "low_noise_lora_scale_3": 0,
            "seed": 42, "negative_prompt": "", "last_image": "https://example.com/b.png",
            "high_noise_lora": "https://example.com/l.safetensors"
        });
        assert_eq!(job_error(&obj(body)), None);
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            ("num_frames", json!(80)),
            ("num_frames", json!("81")),
            ("num_frames", json!(81.5)),
            ("frames_per_second", json!(25)),
            ("sample_shift", json!(0.5)),
            ("sample_shift", json!("12")),
            ("low_noise_lora_scale_2", json!(2.1)),
            ("resolution", json!("1080p")),
            ("aspect_ratio", json!("1:1")),
            ("go_fast", json!("true")),
            ("seed", json!(1.5)),
            ("high_noise_lora", json!(3)),
            ("negative_prompt", json!(null)),
            ("image", json!("file:///tmp/a.jpg")),
            ("prompt", json!(5)),
            ("bogus", json!(1)),
        ];
        for (key, v) in cases {
            let err = job_error(&with(key, v.clone())).expect("should fail");
            assert!(
                err.starts_with(&format!("Validation error: {key} ")),
                "{key}={v}: {err}"
            );
        }
        let err = job_error(&obj(json!({"prompt": "x"}))).unwrap();
        assert_eq!(err, "Validation error: image is required");
    }

    #[test]
    fn prompt_triggers() {
        let mut m = obj(base());
        m.insert("prompt".into(), json!("a [fail] cat"));
        assert_eq!(job_error(&m).as_deref(), Some(FAIL_ERROR));
        m.insert("prompt".into(), json!("a [blocked] cat"));
        assert_eq!(job_error(&m).as_deref(), Some(BLOCK_ERROR));
    }

    #[test]
    fn params_then_fetch_then_triggers() {
        let fetch = |_: &Map<String, Value>| Some("Failed to fetch image".to_string());
        let mut m = obj(json!({"image": "https://x/a.png", "prompt": "[fail]"}));
        assert_eq!(
            super::job_error(&m, true, fetch).as_deref(),
            Some("Failed to fetch image")
        );
        m.insert("num_frames".into(), json!(1));
        let err = super::job_error(&m, true, fetch).unwrap();
        assert!(err.starts_with("Validation error: num_frames"), "{err}");
        // Another model's body is not checked against this model's table.
        assert_eq!(super::job_error(&m, false, |_| None).as_deref(), Some(FAIL_ERROR));
    }
}
