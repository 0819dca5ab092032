//! Text rendering shared by `get` and `describe`: kubectl-style tables and
//! ages.
//!
//! Tables are left-aligned columns separated by three spaces, with
//! upper-case headers, no trailing spaces. Ages are the largest one or two
//! units (`45s`, `5m`, `3h`, `2d`, like kubectl's `HumanDuration`).

use chrono::{DateTime, Utc};

/// Set to a fixed string to print it instead of every age and relative
/// time (golden tests use it; ages depend on the clock).
pub const FIXED_AGE_ENV: &str = "BERTH_TEST_FIXED_AGE";

/// Placeholder for a missing value, as kubectl prints it.
pub const NONE: &str = "<none>";

/// A table: headers and rows of cells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Column headers (upper-case).
    pub headers: Vec<String>,
    /// Rows; each as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Column widths over headers and rows.
    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    /// Renders with a header line.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = format_row(&self.headers, &widths);
        for row in &self.rows {
            out.push_str(&format_row(row, &widths));
        }
        out
    }

    /// Renders with a header line, indented by `indent` spaces (for `describe`).
    pub fn render_indented(&self, indent: usize) -> String {
        self.render()
            .lines()
            .map(|l| format!("{:indent$}{l}\n", ""))
            .collect()
    }
}

/// One line of a table with the given widths, newline-terminated.
pub fn format_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("   ");
        }
        line.push_str(c);
        if i + 1 < cells.len() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count());
            line.push_str(&" ".repeat(pad));
        }
    }
    let mut line = line.trim_end().to_string();
    line.push('\n');
    line
}

fn fixed_age() -> Option<String> {
    std::env::var(FIXED_AGE_ENV).ok().filter(|s| !s.is_empty())
}

/// How long ago `t` was, kubectl style (`45s`, `5m`, `3h`, `2d`); `<unknown>` without a time.
pub fn age(t: Option<DateTime<Utc>>) -> String {
    if let Some(f) = fixed_age() {
        return f;
    }
    match t {
        Some(t) => human_duration((Utc::now() - t).num_seconds().max(0)),
        None => "<unknown>".to_string(),
    }
}

/// A time relative to now: `5m` ago for the past, `in 2h` for the future; `<none>` without a time.
pub fn relative(t: Option<DateTime<Utc>>) -> String {
    if let Some(f) = fixed_age() {
        return if t.is_some() { f } else { NONE.to_string() };
    }
    match t {
        None => NONE.to_string(),
        Some(t) => {
            let secs = (t - Utc::now()).num_seconds();
            if secs > 0 {
                format!("in {}", human_duration(secs))
            } else {
                format!("{} ago", human_duration(-secs))
            }
        }
    }
}

/// Formats seconds like kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 60 * 2 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 60 * 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        if d % 365 == 0 {
            format!("{}y", d / 365)
        } else {
            format!("{}y{}d", d / 365, d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

/// A stored time as people read it: RFC 3339 to the second, in UTC
/// (`2026-12-03T08:00:00Z`); `<none>` without one.
pub fn timestamp(v: Option<&serde_json::Value>) -> String {
    match v.and_then(|v| v.as_str()) {
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t
                .with_timezone(&Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Err(_) => s.to_string(),
        },
        None => NONE.to_string(),
    }
}

/// A string field of a JSON value by dotted path, if present and non-empty.
pub fn str_at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a str> {
    value_at(v, path)
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
}

/// A field of a JSON value by dotted path.
pub fn value_at<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .try_fold(v, |cur, key| cur.get(key))
        .filter(|x| !x.is_null())
}

/// A scalar as a cell: strings bare, numbers and bools as JSON, missing as `<none>`.
pub fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => NONE.to_string(),
        Some(serde_json::Value::String(s)) if s.is_empty() => NONE.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A timestamp field parsed from a JSON value.
pub fn time_at(v: &serde_json::Value, path: &str) -> Option<DateTime<Utc>> {
    str_at(v, path)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Memory in MiB as a short quantity: `512Mi`, `4Gi`.
pub fn memory(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(330), "5m30s");
        assert_eq!(human_duration(3 * 3600), "3h");
        assert_eq!(human_duration(3 * 3600 + 600), "3h10m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(2 * 86400), "2d");
        assert_eq!(human_duration(50 * 86400), "50d");
        assert_eq!(human_duration(3 * 365 * 86400), "3y");
    }

    #[test]
    fn tables_are_left_aligned_with_three_spaces_and_no_trailing_blanks() {
        let mut t = Table::new(["NAME", "PHASE", "AGE"]);
        t.push(vec!["alice".into(), "Running".into(), "5m".into()]);
        t.push(vec!["bo".into(), "".into(), "2d".into()]);
        assert_eq!(
            t.render(),
            "NAME    PHASE     AGE\nalice   Running   5m\nbo                2d\n"
        );
    }

    #[test]
    fn memory_prints_whole_gibibytes_as_gi() {
        assert_eq!(memory(512), "512Mi");
        assert_eq!(memory(4096), "4Gi");
        assert_eq!(memory(1536), "1536Mi");
    }
}
