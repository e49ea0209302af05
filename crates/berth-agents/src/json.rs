//! Small, forgiving accessors for CLI JSON lines: a missing or mistyped field reads as absent
//! instead of failing the whole line, because CLIs add and rename fields between releases.

use serde_json::Value;

/// Parses a stdout line as a JSON object, or `None` for anything else (banners, blank lines).
pub(crate) fn object_line(line: &str) -> Option<Value> {
    let t = line.trim();
    if !t.starts_with('{') {
        return None;
    }
    serde_json::from_str::<Value>(t)
        .ok()
        .filter(Value::is_object)
}

pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

pub(crate) fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    at(v, path).and_then(Value::as_u64)
}

pub(crate) fn f64_at(v: &Value, path: &[&str]) -> Option<f64> {
    at(v, path).and_then(Value::as_f64)
}

pub(crate) fn bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

pub(crate) fn type_of(v: &Value) -> &str {
    str_at(v, &["type"]).unwrap_or("")
}

/// Text of a message content that is either a string or an array of parts, some of which are
/// `{"type":"text","text":…}`; other parts are skipped.
pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                _ if type_of(p) == "text" => str_at(p, &["text"]),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A tool's output rendered as text: strings as-is, anything else as compact JSON.
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(_) => {
            let t = text_of(v);
            if t.is_empty() { v.to_string() } else { t }
        }
        other => other.to_string(),
    }
}

/// Case-insensitive substring test for stderr/error wording.
pub(crate) fn mentions(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// A summed dollar amount rounded to 1e-10, so that float noise from adding per-step costs
/// does not show up in the events (0.0003 + 0.0001 reads as 0.0004).
pub(crate) fn round_usd(x: f64) -> f64 {
    (x * 1e10).round() / 1e10
}
