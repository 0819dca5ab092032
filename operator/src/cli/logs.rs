//! `berth logs WS [--script NAME] [-f] [--previous] [--timestamps]`: the
//! output of a workspace's scripts, as the agent reported it, from the
//! current start (or the one before it).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::client::Client;
use super::CliError;

/// One item of the logs stream: a line, or how many lines of a script were
/// dropped to keep within the size cap.
#[derive(Debug, Deserialize)]
struct Item {
    script: String,
    #[serde(default)]
    dropped: Option<i64>,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    at: Option<DateTime<Utc>>,
    #[serde(default)]
    text: String,
}

/// What to show.
#[derive(Clone, Debug, Default)]
pub struct LogsArgs {
    /// Only this script's output (else every script's, each line prefixed).
    pub script: Option<String>,
    /// Keep printing new lines until the agent of that start is off.
    pub follow: bool,
    /// The start before the current one.
    pub previous: bool,
    /// Prefix each line with the time the agent read it.
    pub timestamps: bool,
}

/// Formats one line as printed.
fn render(item: &Item, args: &LogsArgs) -> String {
    let mut out = String::new();
    if args.timestamps {
        if let Some(at) = item.at {
            out.push_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            out.push(' ');
        }
    }
    if args.script.is_none() {
        out.push_str(&format!("[{}] ", item.script));
    }
    out.push_str(&item.text);
    out.push('\n');
    out
}

/// Prints the logs: stdout lines to stdout and stderr lines to stderr, as
/// the script wrote them; a note about dropped lines goes to stderr.
pub async fn run(client: &Client, ns: &str, name: &str, args: &LogsArgs) -> Result<u8, CliError> {
    let mut items = client
        .logs(ns, name, args.script.as_deref(), args.follow, args.previous)
        .await?;
    while let Some(item) = items.next::<Item>().await? {
        if let Some(n) = item.dropped {
            eprintln!(
                "berth: {n} earlier lines of script {} were dropped to keep its log within the size cap",
                item.script
            );
            continue;
        }
        let line = render(&item, args);
        if item.stream == "stderr" {
            use std::io::Write as _;
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        } else {
            super::write_stdout(line.as_bytes())?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_with_their_script_unless_one_script_is_asked_for() {
        let item = Item {
            script: "setup".into(),
            dropped: None,
            stream: "stdout".into(),
            at: "2026-12-03T10:00:00.5Z".parse().ok(),
            text: "hello".into(),
        };
        assert_eq!(render(&item, &LogsArgs::default()), "[setup] hello\n");
        let one = LogsArgs {
            script: Some("setup".into()),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(render(&item, &one), "2026-12-03T10:00:00.500Z hello\n");
    }
}
