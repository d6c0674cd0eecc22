//! The model's parameters: one table of every field with its JSON type, range and allowed
//! values (from the seed page), and the parser that turns a manifest cell into a typed value.
//!
//! "Parse, don't validate": a `Params` can only be built from cells that passed these checks,
//! and it serialises to the exact JSON body the API gets — integers as integers, numbers as
//! numbers, booleans as booleans, absent fields left out so the API's defaults apply. An
//! integer written as a spreadsheet writes it (`81.0`) is the integer, so it is the same row,
//! with the same id, as `81`. URL cells are checked in `urls`.

use serde_json::{Map, Number, Value};

/// What kind of value a field takes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Free text. `required` fields must not be empty.
    Text,
    /// An http(s) URL.
    Url,
    /// An integer in `[min, max]`.
    Int { min: i64, max: i64 },
    /// A number in `[min, max]`.
    Number { min: f64, max: f64 },
    /// `true`/`false`.
    Bool,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
}

/// One API parameter.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// The API's default, for documentation (`--help`, README).
    pub default: &'static str,
}

const fn f(name: &'static str, kind: Kind, required: bool, default: &'static str) -> Field {
    Field {
        name,
        kind,
        required,
        default,
    }
}

const SCALE: Kind = Kind::Number { min: 0.0, max: 2.0 };

/// Every parameter of `wan-2.2-i2v-fast`, in the order they are sent and exported.
pub static FIELDS: &[Field] = &[
    f("image", Kind::Url, true, "—"),
    f("prompt", Kind::Text, true, "—"),
    f("last_image", Kind::Url, false, "none"),
    f("negative_prompt", Kind::Text, false, "\"\""),
    f("num_frames", Kind::Int { min: 81, max: 100 }, false, "81"),
    f("resolution", Kind::OneOf(&["480p", "720p"]), false, "480p"),
    f("aspect_ratio", Kind::OneOf(&["16:9", "9:16"]), false, "16:9"),
    f("sample_shift", Kind::Number { min: 1.0, max: 20.0 }, false, "12"),
    f("frames_per_second", Kind::Int { min: 5, max: 24 }, false, "16"),
    f("go_fast", Kind::Bool, false, "true"),
    f("seed", Kind::Int { min: 0, max: i64::MAX }, false, "random"),
    f("high_noise_lora", Kind::Url, false, "none"),
    f("high_noise_lora_2", Kind::Url, false, "none"),
    f("high_noise_lora_3", Kind::Url, false, "none"),
    f("low_noise_lora", Kind::Url, false, "none"),
    f("low_noise_lora_2", Kind::Url, false, "none"),
    f("low_noise_lora_3", Kind::Url, false, "none"),
    f("high_noise_lora_scale", SCALE, false, "1"),
    f("high_noise_lora_scale_2", SCALE, false, "1"),
    f("high_noise_lora_scale_3", SCALE, false, "1"),
    f("low_noise_lora_scale", SCALE, false, "1"),
    f("low_noise_lora_scale_2", SCALE, false, "1"),
    f("low_noise_lora_scale_3", SCALE, false, "1"),
];

/// The manifest column that names a job; not sent to the API.
pub const ID_COLUMN: &str = "id";

pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Longest text we accept in one cell; Segmind prompts are far shorter, and a bound keeps a
/// hostile manifest from filling memory.
pub const MAX_CELL: usize = 64 * 1024;

impl Kind {
    /// What a user should have written, for error messages.
    pub fn expected(&self) -> String {
        match self {
            Kind::Text => "text".into(),
            Kind::Url => "an http(s) URL".into(),
            Kind::Int { min, max } if *max == i64::MAX => format!("a whole number ≥ {min}"),
            Kind::Int { min, max } => format!("a whole number from {min} to {max}"),
            Kind::Number { min, max } => format!("a number from {min} to {max}"),
            Kind::Bool => "true or false".into(),
            Kind::OneOf(vals) => format!("one of {}", vals.join(", ")),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Kind::Text => "string".into(),
            Kind::Url => "http(s) URL".into(),
            Kind::Int { min, max } if *max == i64::MAX => format!("integer ≥ {min}"),
            Kind::Int { min, max } => format!("integer {min}–{max}"),
            Kind::Number { min, max } => format!("number {min}–{max}"),
            Kind::Bool => "true / false".into(),
            Kind::OneOf(vals) => vals.join(" or "),
        }
    }
}

/// Turns one cell (already trimmed of nothing: we trim here) into the JSON value to send.
/// `Ok(None)` means "not given". The error text says what was expected.
pub fn parse_cell(field: &Field, raw: &str) -> Result<Option<Value>, String> {
    let cell = raw.trim();
    if cell.is_empty() {
        return if field.required {
            Err(format!("is required; expected {}", field.kind.expected()))
        } else {
            Ok(None)
        };
    }
    if cell.len() > MAX_CELL {
        return Err(format!("is {} bytes long; at most {MAX_CELL} are accepted", cell.len()));
    }
    let got = || format!("expected {}, got {:?}", field.kind.expected(), shorten(cell));
    let value = match field.kind {
        Kind::Text => Value::String(raw.to_string()),
        Kind::Url => {
            super::urls::check(field, cell)?;
            Value::String(cell.to_string())
        }
        Kind::Int { .. } => Value::Number(int_cell(field, cell)?.into()),
        Kind::Number { min, max } => {
            let x: f64 = cell.parse().map_err(|_| got())?;
            if !x.is_finite() || x < min || x > max {
                return Err(got());
            }
            // Whole numbers go out as integers-valued JSON numbers (12, not 12.0): same value.
            let num = if x.fract() == 0.0 && x.abs() < 1e15 {
                Number::from(x as i64)
            } else {
                Number::from_f64(x).ok_or_else(got)?
            };
            Value::Number(num)
        }
        Kind::Bool => match cell.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => return Err(got()),
        },
        Kind::OneOf(vals) => {
            if !vals.contains(&cell) {
                return Err(got());
            }
            Value::String(cell.to_string())
        }
    };
    Ok(Some(value))
}

/// Appends the JSON text of one cell's value to `out`, exactly as `serde_json` writes the value
/// [`parse_cell`] gives (the import's hot path: no `Value`, no allocation for the usual kinds).
/// `Ok(false)` means "not given" and writes nothing.
pub fn write_cell(field: &Field, raw: &str, out: &mut Vec<u8>) -> Result<bool, String> {
    let cell = raw.trim();
    if cell.is_empty() || cell.len() > MAX_CELL {
        return parse_cell(field, raw).map(|v| v.is_some());
    }
    let got = || format!("expected {}, got {:?}", field.kind.expected(), shorten(cell));
    match field.kind {
        Kind::Text => write_str(out, raw),
        Kind::Url => {
            super::urls::check(field, cell)?;
            write_str(out, cell);
        }
        Kind::Int { .. } => {
            let n = int_cell(field, cell)?;
            serde_json::to_writer(&mut *out, &n).expect("writing to a Vec");
        }
        Kind::Bool => {
            let b = if ["true", "1", "yes"].iter().any(|t| cell.eq_ignore_ascii_case(t)) {
                true
            } else if ["false", "0", "no"].iter().any(|t| cell.eq_ignore_ascii_case(t)) {
                false
            } else {
                return Err(got());
            };
            out.extend_from_slice(if b { b"true" } else { b"false" });
        }
        Kind::OneOf(vals) => {
            if !vals.contains(&cell) {
                return Err(got());
            }
            write_str(out, cell);
        }
        Kind::Number { .. } => {
            let value = parse_cell(field, raw)?.expect("a non-empty cell is given");
            serde_json::to_writer(&mut *out, &value).expect("writing to a Vec");
        }
    }
    Ok(true)
}

/// `s` as a JSON string, escaped as `serde_json` escapes it.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec");
}

/// An integer cell (trimmed, not empty) of an `Int` field, in its range. Spreadsheets and
/// pandas write whole numbers as `81.0`: any whole value is read (`81.0`, `81.00`, `8.1e1`),
/// and sent as the integer, so `81` and `81.0` are one row; `81.5` is refused as not whole.
fn int_cell(field: &Field, cell: &str) -> Result<i64, String> {
    let Kind::Int { min, max } = field.kind else {
        unreachable!("int_cell is for Int fields")
    };
    let got = || format!("expected {}, got {:?}", field.kind.expected(), shorten(cell));
    let n = match cell.parse::<i64>() {
        Ok(n) => n,
        Err(_) => match whole_number(cell) {
            Some(Ok(n)) => n,
            Some(Err(NotWhole)) => return Err(format!("{}, which is not a whole number", got())),
            None => return Err(got()),
        },
    };
    if n < min || n > max {
        return Err(got());
    }
    Ok(n)
}

/// A number that is not whole.
struct NotWhole;

/// The value of a whole number written with a decimal point or an exponent; `None` if `cell`
/// is no number, or too large to read exactly (beyond 2^53, where `f64` skips integers).
fn whole_number(cell: &str) -> Option<Result<i64, NotWhole>> {
    // `123.000` exactly, whatever its size (a seed may be near 2^63).
    if let Some((int, zeros)) = cell.split_once('.') {
        if !zeros.is_empty() && zeros.bytes().all(|b| b == b'0') {
            if let Ok(n) = int.parse::<i64>() {
                return Some(Ok(n));
            }
        }
    }
    let x: f64 = cell.parse().ok()?;
    if !x.is_finite() {
        return None;
    }
    if x.fract() != 0.0 {
        return Some(Err(NotWhole));
    }
    // Whole, and every integer up to 2^53 is exact in an f64.
    (x.abs() <= (1u64 << 53) as f64).then_some(Ok(x as i64))
}

/// At most 60 characters of `s`, for error messages.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// A validated parameter set: the JSON object sent as the submit body.
#[derive(Clone, Debug, PartialEq)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Builds from already-parsed values keyed by field name, ordering them as in `FIELDS` so
    /// the same row always gives the same bytes (and the same hash).
    pub fn from_values(mut values: Vec<(&'static Field, Value)>) -> Params {
        values.sort_by_key(|(fld, _)| FIELDS.iter().position(|g| g.name == fld.name));
        let mut map = Map::new();
        for (fld, v) in values {
            map.insert(fld.name.to_string(), v);
        }
        Params(map)
    }

    /// The canonical JSON text (field order of `FIELDS`, no whitespace).
    pub fn to_json(&self) -> String {
        // serde_json's Map keeps insertion order only with `preserve_order`; we do not enable it,
        // so write the object by hand in FIELDS order.
        let mut out = String::from("{");
        let mut first = true;
        for fld in FIELDS {
            if let Some(v) = self.0.get(fld.name) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::to_string(fld.name).expect("string"));
                out.push(':');
                out.push_str(&serde_json::to_string(v).expect("json value"));
            }
        }
        out.push('}');
        out
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn from_json(text: &str) -> serde_json::Result<Params> {
        Ok(Params(serde_json::from_str(text)?))
    }

    /// The class used to learn durations: what changes how long Segmind takes.
    pub fn duration_class(&self) -> String {
        let res = self.get("resolution").and_then(Value::as_str).unwrap_or("480p");
        let frames = self.get("num_frames").and_then(Value::as_i64).unwrap_or(81);
        let fast = self.get("go_fast").and_then(Value::as_bool).unwrap_or(true);
        format!("{res}|{frames}|{fast}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, raw: &str) -> Result<Option<Value>, String> {
        parse_cell(field(name).unwrap(), raw)
    }

    #[test]
    fn typed_values_come_out_with_their_json_types() {
        assert_eq!(p("num_frames", "81").unwrap(), Some(Value::from(81)));
        assert_eq!(p("sample_shift", "12").unwrap(), Some(Value::from(12)));
        assert_eq!(p("sample_shift", "7.5").unwrap(), Some(Value::from(7.5)));
        assert_eq!(p("go_fast", "FALSE").unwrap(), Some(Value::Bool(false)));
        assert_eq!(p("seed", "42").unwrap(), Some(Value::from(42)));
        assert_eq!(p("resolution", "720p").unwrap(), Some(Value::from("720p")));
    }

    #[test]
    fn empty_means_not_given_except_for_required() {
        assert_eq!(p("num_frames", "").unwrap(), None);
        assert_eq!(p("seed", "  ").unwrap(), None);
        assert!(p("prompt", "").unwrap_err().contains("required"));
        assert!(p("image", "").unwrap_err().contains("required"));
    }

    #[test]
    fn out_of_range_and_wrong_kinds_say_what_was_expected() {
        let e = p("num_frames", "120").unwrap_err();
        assert!(e.contains("81 to 100") && e.contains("120"), "{e}");
        assert_eq!(
            p("num_frames", "81.5").unwrap_err(),
            "expected a whole number from 81 to 100, got \"81.5\", which is not a whole number"
        );
        assert!(p("frames_per_second", "4").is_err());
        assert!(p("sample_shift", "0.5").is_err());
        assert!(p("sample_shift", "NaN").is_err());
        assert!(p("high_noise_lora_scale", "2.01").is_err());
        assert!(p("go_fast", "maybe").unwrap_err().contains("true or false"));
        assert!(p("aspect_ratio", "4:3").unwrap_err().contains("16:9, 9:16"));
        assert!(p("seed", "-1").is_err());
    }

    #[test]
    fn whole_numbers_written_with_a_decimal_point_are_integers() {
        for raw in ["81", "81.0", "81.00", " 81.0 ", "8.1e1", "810e-1", "+81.0"] {
            assert_eq!(p("num_frames", raw).unwrap(), Some(Value::from(81)), "{raw}");
        }
        assert_eq!(p("seed", "0.0").unwrap(), Some(Value::from(0)));
        // Exact beyond f64's integers when written as digits and zeros.
        assert_eq!(
            p("seed", "9223372036854775807.000").unwrap(),
            Some(Value::from(i64::MAX))
        );
        assert_eq!(
            p("seed", "9007199254740993.0").unwrap(),
            Some(Value::from(9007199254740993i64))
        );
        // An exponent past 2^53 cannot be read exactly: refused rather than rounded.
        assert!(p("seed", "1e20")
            .unwrap_err()
            .starts_with("expected a whole number ≥ 0, got \"1e20\""));
        assert!(p("frames_per_second", "16.5")
            .unwrap_err()
            .ends_with("which is not a whole number"));
        assert!(p("num_frames", "101.0").unwrap_err().contains("81 to 100"));
        assert!(p("num_frames", "81.0x").is_err());
        assert!(p("num_frames", "inf").is_err());
        let mut out = Vec::new();
        assert!(write_cell(field("num_frames").unwrap(), "81.0", &mut out).unwrap());
        assert_eq!(out, b"81");
    }

    #[test]
    fn urls_must_be_http_or_https() {
        assert!(p("image", "https://x.example/a.jpg").is_ok());
        assert!(p("image", "http://x.example/a.jpg").is_ok());
        assert!(p("image", "ftp://x.example/a.jpg").is_err());
        assert!(p("image", "file:///etc/passwd").is_err());
        assert!(p("last_image", "not a url").is_err());
        assert!(p("high_noise_lora", "javascript:alert(1)").is_err());
    }

    #[test]
    fn write_cell_writes_what_serde_writes_for_parse_cell() {
        let cells = [
            "",
            " ",
            "81",
            " 100 ",
            "80",
            "101",
            "x",
            "7.5",
            "12",
            "12.0",
            "1e1",
            "0.1",
            "2",
            "2.000001",
            "NaN",
            "inf",
            "true",
            "TRUE",
            " Yes ",
            "0",
            "no",
            "maybe",
            "480p",
            "720P",
            " 16:9 ",
            "https://a.example/b c.jpg",
            "https://a.example/x.jpg",
            " http://a.example/ ",
            "ftp://x/y",
            "a \"quoted\"\tprompt\u{1}é 😀",
            "-0",
            "9223372036854775807",
            "9223372036854775808",
            "+5",
            "81.0",
            "81.00",
            "8.1e1",
            "81.5",
            "1e20",
            "9223372036854775807.0",
            "photos/cat.png",
            "C:\\pics\\a.png",
        ];
        for fld in FIELDS {
            for raw in cells {
                let mut out = Vec::new();
                let fast = write_cell(fld, raw, &mut out);
                let slow = parse_cell(fld, raw);
                match (fast, slow) {
                    (Ok(true), Ok(Some(v))) => {
                        assert_eq!(
                            String::from_utf8(out).unwrap(),
                            serde_json::to_string(&v).unwrap(),
                            "{raw:?}"
                        )
                    }
                    (Ok(false), Ok(None)) => assert!(out.is_empty()),
                    (Err(a), Err(b)) => assert_eq!(a, b, "{} {raw:?}", fld.name),
                    (a, b) => panic!("{} {raw:?}: {a:?} vs {b:?}", fld.name),
                }
            }
        }
    }

    #[test]
    fn canonical_json_is_in_field_order_and_stable() {
        let a = Params::from_values(vec![
            (field("seed").unwrap(), Value::from(3)),
            (field("image").unwrap(), Value::from("https://a/b.png")),
            (field("prompt").unwrap(), Value::from("p")),
        ]);
        assert_eq!(a.to_json(), r#"{"image":"https://a/b.png","prompt":"p","seed":3}"#);
        assert_eq!(Params::from_json(&a.to_json()).unwrap().to_json(), a.to_json());
        assert_eq!(a.duration_class(), "480p|81|true");
    }
}
