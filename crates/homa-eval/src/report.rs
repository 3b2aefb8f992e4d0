//! CSV and JSON writers for reports.
//!
//! Both build strings in memory (the caller writes them where it wants) and produce the
//! same bytes for the same input: JSON objects keep their keys in insertion order, and
//! numbers are formatted by Rust's shortest round-trip representation. Non-finite
//! numbers (an empty bucket's NaN percentile) become JSON `null` and an empty CSV field.
//!
//! ```
//! use homa_eval::report::{Csv, Json};
//!
//! let mut csv = Csv::new(&["workload", "max_size", "p99_slowdown"]);
//! csv.row(&["w4".into(), 1430.into(), 2.5.into()]);
//! assert_eq!(csv.finish(), "workload,max_size,p99_slowdown\nw4,1430,2.5\n");
//!
//! let doc = Json::object()
//!     .field("tool", "homa sim")
//!     .field("seed", 1u64)
//!     .field("buckets", Json::Array(vec![Json::object().field("p50_slowdown", 1.25)]))
//!     .field("note", "say \"hi\"\n");
//! assert_eq!(
//!     doc.to_compact(),
//!     r#"{"tool":"homa sim","seed":1,"buckets":[{"p50_slowdown":1.25}],"note":"say \"hi\"\n"}"#
//! );
//! assert!(doc.to_pretty().contains("\n  \"seed\": 1,\n"));
//! ```

use core::fmt::Write as _;

/// Escapes one CSV field (RFC 4180): fields holding a comma, quote, CR or LF are quoted,
/// with quotes doubled.
///
/// ```
/// use homa_eval::report::csv_field;
/// assert_eq!(csv_field("plain"), "plain");
/// assert_eq!(csv_field("a,b"), "\"a,b\"");
/// assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
/// ```
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A CSV cell: text or a number.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text, escaped as needed.
    Text(String),
    /// An integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float; non-finite values are written as an empty field.
    Float(f64),
}

impl Cell {
    fn render(&self) -> String {
        match self {
            Cell::Text(s) => csv_field(s),
            Cell::Int(v) => v.to_string(),
            Cell::UInt(v) => v.to_string(),
            Cell::Float(v) if v.is_finite() => format_f64(*v),
            Cell::Float(_) => String::new(),
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Cell {
        Cell::Float(v)
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Cell {
        Cell::UInt(v)
    }
}
impl From<u32> for Cell {
    fn from(v: u32) -> Cell {
        Cell::UInt(u64::from(v))
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Cell {
        Cell::UInt(v as u64)
    }
}
impl From<i64> for Cell {
    fn from(v: i64) -> Cell {
        Cell::Int(v)
    }
}
impl From<i32> for Cell {
    fn from(v: i32) -> Cell {
        Cell::Int(i64::from(v))
    }
}

/// A CSV document with a header line.
#[derive(Debug, Clone, PartialEq)]
pub struct Csv {
    columns: usize,
    text: String,
}

impl Csv {
    /// A document whose first line names `columns`.
    pub fn new(columns: &[&str]) -> Csv {
        let header: Vec<String> = columns.iter().map(|c| csv_field(c)).collect();
        Csv {
            columns: columns.len(),
            text: header.join(",") + "\n",
        }
    }

    /// Appends one row. A row with fewer cells than columns is padded with empty fields;
    /// extra cells are written too (the caller's mistake shows in the output).
    pub fn row(&mut self, cells: &[Cell]) {
        let mut fields: Vec<String> = cells.iter().map(Cell::render).collect();
        while fields.len() < self.columns {
            fields.push(String::new());
        }
        self.text.push_str(&fields.join(","));
        self.text.push('\n');
    }

    /// The document so far.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The whole document.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A JSON value whose objects keep their keys in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float (`null` if not finite).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object: keys in order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An empty object.
    pub fn object() -> Json {
        Json::Object(Vec::new())
    }

    /// Adds `key: value` to an object (builder style). On a value that is not an object,
    /// it becomes an object holding only this field.
    pub fn field(mut self, key: &str, value: impl Into<Json>) -> Json {
        self.insert(key, value);
        self
    }

    /// Adds `key: value` to an object, replacing an existing value of `key` in place.
    pub fn insert(&mut self, key: &str, value: impl Into<Json>) {
        let value = value.into();
        if !matches!(self, Json::Object(_)) {
            *self = Json::object();
        }
        if let Json::Object(fields) = self {
            if let Some(slot) = fields.iter_mut().find(|(k, _)| k == key) {
                slot.1 = value;
            } else {
                fields.push((key.to_owned(), value));
            }
        }
    }

    /// The value of `key` in an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// One line, no spaces.
    pub fn to_compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None, 0);
        out
    }

    /// Indented by two spaces per level, ending with a newline.
    pub fn to_pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(2), 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>, depth: usize) {
        let newline = |out: &mut String, depth: usize| {
            if let Some(n) = indent {
                out.push('\n');
                out.extend(core::iter::repeat_n(' ', n * depth));
            }
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Json::UInt(v) => {
                let _ = write!(out, "{v}");
            }
            Json::Float(v) if v.is_finite() => out.push_str(&format_f64(*v)),
            Json::Float(_) => out.push_str("null"),
            Json::Str(s) => json_string(out, s),
            Json::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, depth + 1);
                    item.write(out, indent, depth + 1);
                }
                newline(out, depth);
                out.push(']');
            }
            Json::Object(fields) => {
                if fields.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, depth + 1);
                    json_string(out, k);
                    out.push(':');
                    if indent.is_some() {
                        out.push(' ');
                    }
                    v.write(out, indent, depth + 1);
                }
                newline(out, depth);
                out.push('}');
            }
        }
    }
}

/// Writes `s` as a JSON string literal: quotes, backslashes and control characters
/// escaped (`\n`, `\t`, `\r`, `\b`, `\f`, otherwise `\u00XX`).
///
/// ```
/// let mut out = String::new();
/// homa_eval::report::json_string(&mut out, "a\"b\\c\u{1}");
/// assert_eq!(out, r#""a\"b\\c\u0001""#);
/// ```
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A finite float in the shortest form that reads back exactly, always with a `.` or an
/// exponent so JSON readers keep it a float (`2.0`, `0.125`, `1e-7`).
fn format_f64(v: f64) -> String {
    let s = format!("{v:?}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        s + ".0"
    }
}

impl From<bool> for Json {
    fn from(v: bool) -> Json {
        Json::Bool(v)
    }
}
impl From<i64> for Json {
    fn from(v: i64) -> Json {
        Json::Int(v)
    }
}
impl From<i32> for Json {
    fn from(v: i32) -> Json {
        Json::Int(i64::from(v))
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Json {
        Json::UInt(v)
    }
}
impl From<u32> for Json {
    fn from(v: u32) -> Json {
        Json::UInt(u64::from(v))
    }
}
impl From<u16> for Json {
    fn from(v: u16) -> Json {
        Json::UInt(u64::from(v))
    }
}
impl From<u8> for Json {
    fn from(v: u8) -> Json {
        Json::UInt(u64::from(v))
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Json {
        Json::UInt(v as u64)
    }
}
impl From<f64> for Json {
    fn from(v: f64) -> Json {
        Json::Float(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Json {
        Json::Str(v.to_owned())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Json {
        Json::Str(v)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}
impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Json {
        Json::Array(v.into_iter().map(Into::into).collect())
    }
}

impl From<&crate::stats::BucketStats> for Json {
    /// `{max_size, count, p50_us, p99_us, p999_us, p50_slowdown, p99_slowdown,
    /// cumulative_fraction}`: BENCHMARKING.md's bucket object.
    fn from(b: &crate::stats::BucketStats) -> Json {
        Json::object()
            .field("max_size", b.max_size)
            .field("count", b.count)
            .field("p50_us", b.p50_us)
            .field("p99_us", b.p99_us)
            .field("p999_us", b.p999_us)
            .field("p50_slowdown", b.p50_slowdown)
            .field("p99_slowdown", b.p99_slowdown)
            .field("cumulative_fraction", b.cumulative_fraction)
    }
}

impl From<&crate::stats::ShortStats> for Json {
    /// `{max_size, count, p50_slowdown, p99_slowdown}`: BENCHMARKING.md's `short`
    /// object (with the threshold and count added).
    fn from(s: &crate::stats::ShortStats) -> Json {
        Json::object()
            .field("max_size", s.max_size)
            .field("count", s.count)
            .field("p50_slowdown", s.p50_slowdown)
            .field("p99_slowdown", s.p99_slowdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_pads_and_escapes() {
        let mut c = Csv::new(&["a", "b,c", "d"]);
        c.row(&["x\ny".into(), f64::NAN.into()]);
        c.row(&[Cell::Int(-3), Cell::UInt(4), Cell::Float(0.5)]);
        assert_eq!(c.finish(), "a,\"b,c\",d\n\"x\ny\",,\n-3,4,0.5\n");
    }

    #[test]
    fn json_numbers_and_nesting() {
        let j = Json::object()
            .field("nan", f64::NAN)
            .field("two", 2.0)
            .field("small", 1e-7)
            .field("neg", -5i64)
            .field("none", Option::<u32>::None)
            .field("list", vec![1u32, 2])
            .field("empty", Json::Array(vec![]))
            .field("obj", Json::object());
        assert_eq!(
            j.to_compact(),
            r#"{"nan":null,"two":2.0,"small":1e-7,"neg":-5,"none":null,"list":[1,2],"empty":[],"obj":{}}"#
        );
        let pretty = j.to_pretty();
        assert!(pretty.starts_with("{\n  \"nan\": null,\n"));
        assert!(pretty.contains("\"list\": [\n    1,\n    2\n  ],"));
        assert!(pretty.ends_with("}\n"));
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut j = Json::object().field("a", 1u32).field("b", 2u32);
        j.insert("a", "x");
        assert_eq!(j.to_compact(), r#"{"a":"x","b":2}"#);
        assert_eq!(j.get("b"), Some(&Json::UInt(2)));
        assert_eq!(j.get("c"), None);
    }

    #[test]
    fn json_escapes_control_and_unicode() {
        let mut s = String::new();
        json_string(&mut s, "é\u{1f}\t/");
        assert_eq!(s, "\"é\\u001f\\t/\"");
    }

    #[test]
    fn bucket_json_has_benchmarking_names() {
        let mut samples = crate::stats::Samples::new();
        samples.push(10, 2000.0, 1000.0);
        let b = &samples.buckets(&[10])[0];
        let j = Json::from(b).to_compact();
        for name in [
            "max_size",
            "count",
            "p50_us",
            "p99_us",
            "p50_slowdown",
            "p99_slowdown",
        ] {
            assert!(j.contains(&format!("\"{name}\":")), "{j}");
        }
    }
}
