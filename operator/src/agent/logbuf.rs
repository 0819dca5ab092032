//! The per-script resend buffer of log lines.
//!
//! Every line a script prints gets the next sequence number of that script
//! (0, 1, 2, … across stdout and stderr, in read order) and stays here until
//! the operator acknowledges it (`LogsAck`, or `logsAcked` in a `Welcome`).
//! The buffer remembers how far it has sent on the current connection, so a
//! line is sent once per connection and resent only after a reconnect, from
//! the operator's acknowledged sequence on.
//!
//! The buffer is bounded by the bytes of text it holds: when a line does
//! not fit, the oldest lines (acknowledged or not) are dropped and counted;
//! the count goes out with the next batch (`Logs.dropped`). The operator
//! also sees the gap in sequence numbers, so a lost count is harmless.

use std::collections::VecDeque;

use chrono::Utc;

use super::protocol::{self, LogLine, Stream};

/// Bytes counted per line on top of its text (the sequence number, stream
/// and timestamp), so that a flood of empty lines is bounded too.
const LINE_OVERHEAD: usize = 48;

/// Default bound of one script's buffer.
pub const DEFAULT_CAP_BYTES: usize = 2 * 1024 * 1024;

/// One script's unacknowledged lines.
#[derive(Debug)]
pub struct LogBuffer {
    lines: VecDeque<LogLine>,
    bytes: usize,
    cap: usize,
    /// The sequence number the next line gets.
    next_seq: u64,
    /// Lines from here on have not been sent on the current connection.
    sent_upto: u64,
    /// Lines dropped for room and not yet reported in a batch.
    dropped_unreported: u64,
    /// Lines dropped for room since the start.
    dropped_total: u64,
}

fn cost(line: &LogLine) -> usize {
    line.text.len() + LINE_OVERHEAD
}

impl LogBuffer {
    /// An empty buffer holding at most `cap` bytes (text plus a small
    /// per-line overhead).
    pub fn new(cap: usize) -> LogBuffer {
        LogBuffer::starting_at(cap, 0)
    }

    /// An empty buffer whose first line gets sequence number `seq`.
    pub fn starting_at(cap: usize, seq: u64) -> LogBuffer {
        LogBuffer {
            lines: VecDeque::new(),
            bytes: 0,
            cap: cap.max(protocol::MAX_LOG_LINE_BYTES + LINE_OVERHEAD),
            next_seq: seq,
            sent_upto: seq,
            dropped_unreported: 0,
            dropped_total: 0,
        }
    }

    /// Appends one line of output (clipped to
    /// [`protocol::MAX_LOG_LINE_BYTES`]) and returns its sequence number.
    pub fn push(&mut self, stream: Stream, text: &str) -> u64 {
        let line = LogLine {
            seq: self.next_seq,
            stream,
            at: Utc::now(),
            text: protocol::clip_line(text),
        };
        self.next_seq += 1;
        let c = cost(&line);
        while self.bytes + c > self.cap {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= cost(&old);
            self.dropped_unreported += 1;
            self.dropped_total += 1;
        }
        self.bytes += c;
        let seq = line.seq;
        self.lines.push_back(line);
        seq
    }

    /// Drops every line below `next_seq` (the operator stored them).
    pub fn ack(&mut self, next_seq: u64) {
        while self.lines.front().is_some_and(|l| l.seq < next_seq) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= cost(&old);
            }
        }
    }

    /// A new connection: the operator has everything below `acked`;
    /// everything still held from there on is to be sent again.
    pub fn rewind(&mut self, acked: u64) {
        self.ack(acked);
        self.sent_upto = acked;
    }

    fn first_unsent(&self) -> usize {
        let front = self.lines.front().map_or(self.next_seq, |l| l.seq);
        let from = self.sent_upto.max(front);
        (from - front) as usize
    }

    /// Lines held that were not sent on the current connection.
    pub fn unsent(&self) -> usize {
        self.lines.len() - self.first_unsent().min(self.lines.len())
    }

    /// Takes the next batch to send on the current connection (at most
    /// [`protocol::MAX_LINES_PER_BATCH`] lines, fitting a message), with the
    /// count of lines dropped before it; `None` when everything was sent.
    pub fn next_batch(&mut self) -> Option<(Vec<LogLine>, u64)> {
        let skip = self.first_unsent();
        if skip >= self.lines.len() {
            return None;
        }
        // Leave room for the envelope (script name, dropped count).
        let budget = protocol::MAX_MESSAGE_BYTES - 4096;
        let mut size = 0;
        let mut batch = Vec::new();
        for l in self.lines.iter().skip(skip) {
            if batch.len() == protocol::MAX_LINES_PER_BATCH {
                break;
            }
            let n = serde_json::to_string(l).map_or(budget, |s| s.len() + 1);
            if !batch.is_empty() && size + n > budget {
                break;
            }
            size += n;
            batch.push(l.clone());
        }
        self.sent_upto = batch.last().map_or(self.sent_upto, |l| l.seq + 1);
        let dropped = std::mem::take(&mut self.dropped_unreported);
        Some((batch, dropped))
    }

    /// Lines held (not acknowledged).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether every line was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The sequence number the next line gets (= lines read so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Lines dropped for room since the start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_the_oldest_lines_and_reports_the_count_once() {
        let line = "x".repeat(1000);
        let mut b = LogBuffer::new(20 * (1000 + LINE_OVERHEAD));
        for _ in 0..25 {
            b.push(Stream::Stdout, &line);
        }
        assert_eq!(b.next_seq(), 25);
        assert_eq!(b.dropped_total(), 5);
        let (lines, dropped) = b.next_batch().expect("a batch");
        assert_eq!(dropped, 5);
        assert_eq!(lines.first().map(|l| l.seq), Some(5));
        assert_eq!(lines.last().map(|l| l.seq), Some(24));
        b.push(Stream::Stderr, "more");
        let (lines, dropped) = b.next_batch().expect("a batch");
        assert_eq!(dropped, 1, "the new line pushed one more out");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].seq, 25);
    }

    #[test]
    fn batches_are_bounded_and_acked_lines_are_not_resent_after_a_rewind() {
        let mut b = LogBuffer::new(DEFAULT_CAP_BYTES);
        for i in 0..250 {
            b.push(Stream::Stdout, &format!("line {i}"));
        }
        let (first, _) = b.next_batch().expect("a batch");
        assert_eq!(first.len(), protocol::MAX_LINES_PER_BATCH);
        assert_eq!(b.unsent(), 150);
        b.ack(100);
        let (second, _) = b.next_batch().expect("a batch");
        assert_eq!(second[0].seq, 100);
        // The connection drops before the second batch is acked.
        b.rewind(100);
        assert_eq!(b.unsent(), 150);
        let (again, _) = b.next_batch().expect("a batch");
        assert_eq!(again[0].seq, 100);
        let (last, _) = b.next_batch().expect("a batch");
        assert_eq!(last.len(), 50);
        assert!(b.next_batch().is_none());
        b.ack(250);
        assert!(b.is_empty());
    }

    #[test]
    fn a_batch_of_long_escaped_lines_fits_one_message() {
        let mut b = LogBuffer::new(DEFAULT_CAP_BYTES);
        let nasty = "\u{1}".repeat(protocol::MAX_LOG_LINE_BYTES);
        for _ in 0..100 {
            b.push(Stream::Stdout, &nasty);
        }
        let (lines, dropped) = b.next_batch().expect("a batch");
        let m = protocol::AgentMessage::Logs {
            script: "s".into(),
            lines,
            dropped,
        };
        assert!(m.encode().len() <= protocol::MAX_MESSAGE_BYTES);
        assert!(m.validate().is_ok());
        assert!(b.unsent() > 0, "the rest waits for the next batch");
    }
}
