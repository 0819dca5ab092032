//! Reading request bodies and files: YAML (one or many documents) or JSON,
//! with limits against hostile input.
//!
//! Limits: total input size, number of documents, and YAML alias expansion
//! (a "billion laughs" file is rejected by the parser's alias budget before
//! anything is expanded in memory).

use serde_json::Value;

/// Largest input accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 32 * 1024 * 1024;
/// Largest single document, in bytes of its JSON form.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most documents in one input.
pub const MAX_DOCUMENTS: usize = 10_000;

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The input is larger than [`MAX_INPUT_BYTES`].
    #[error("input is {0} bytes; the limit is {MAX_INPUT_BYTES}")]
    TooLarge(usize),
    /// More than [`MAX_DOCUMENTS`] documents.
    #[error("input has more than {MAX_DOCUMENTS} documents")]
    TooManyDocuments,
    /// One document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("document {0} is larger than {MAX_DOCUMENT_BYTES} bytes")]
    DocumentTooLarge(usize),
    /// Not valid YAML, or over the parser's alias/event budget.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    let mut b = serde_saphyr::Budget::default();
    b.max_aliases = 1_000;
    b.max_anchors = 1_000;
    b.max_events = 2_000_000;
    b.max_recorded_anchor_events = 100_000;
    // The parser's own default (1 024) would reject inputs well under
    // MAX_DOCUMENTS with a bare budget error; count documents ourselves and
    // leave room for empty ones (`---` separators), which are skipped.
    b.max_documents = 2 * MAX_DOCUMENTS;
    o.budget = Some(b);
    let mut a = serde_saphyr::options::AliasLimits::default();
    a.max_total_replayed_events = 100_000;
    a.max_replay_stack_depth = 16;
    o.alias_limits = a;
    o
}

/// Parses one or many YAML documents (or a JSON document, which is YAML)
/// into JSON values. Empty documents are skipped; a `kind: List` document
/// (or a JSON array) contributes its items.
pub fn parse_documents(input: &str) -> Result<Vec<Value>, ParseError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(ParseError::TooLarge(input.len()));
    }
    let trimmed = input.trim_start();
    let raw: Vec<Value> = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        match serde_json::from_str::<Value>(input) {
            Ok(v) => vec![v],
            Err(_) => yaml_docs(input)?,
        }
    } else {
        yaml_docs(input)?
    };
    let mut out = Vec::new();
    for v in raw {
        match v {
            Value::Null => {}
            Value::Array(items) => out.extend(items),
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = m.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            other => out.push(other),
        }
        if out.len() > MAX_DOCUMENTS {
            return Err(ParseError::TooManyDocuments);
        }
    }
    for (i, d) in out.iter().enumerate() {
        if serde_json::to_vec(d).map(|b| b.len()).unwrap_or(0) > MAX_DOCUMENT_BYTES {
            return Err(ParseError::DocumentTooLarge(i + 1));
        }
    }
    Ok(out)
}

fn yaml_docs(input: &str) -> Result<Vec<Value>, ParseError> {
    serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(input, options()).map_err(
        |e| {
            if too_many_documents(&e) {
                ParseError::TooManyDocuments
            } else {
                ParseError::Yaml(e.to_string())
            }
        },
    )
}

/// Whether the parser stopped because the input holds too many documents.
fn too_many_documents(mut e: &serde_saphyr::Error) -> bool {
    loop {
        match e {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => e = error,
            serde_saphyr::Error::Budget { breach, .. } => {
                return matches!(breach, serde_saphyr::budget::BudgetBreach::Documents { .. })
            }
            _ => return false,
        }
    }
}

/// Serialises a value as YAML (for `-o yaml` and YAML responses).
pub fn to_yaml<T: serde::Serialize>(v: &T) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# could not render YAML: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_stays_a_string_and_multiple_documents_are_read() {
        let docs = parse_documents("a: NO\nb: true\n---\n---\nc: 1\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["a"], Value::String("NO".into()));
        assert_eq!(docs[0]["b"], Value::Bool(true));
    }

    #[test]
    fn billion_laughs_is_rejected_quickly() {
        let mut s = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for c in 'b'..='j' {
            s.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = c;
        }
        let t = std::time::Instant::now();
        let r = parse_documents(&s);
        assert!(matches!(r, Err(ParseError::Yaml(_))), "{r:?}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn json_arrays_and_lists_are_flattened() {
        assert_eq!(parse_documents(r#"[{"a":1},{"b":2}]"#).unwrap().len(), 2);
        assert_eq!(
            parse_documents("kind: List\nitems:\n- a: 1\n- b: 2\n")
                .unwrap()
                .len(),
            2
        );
    }
}
