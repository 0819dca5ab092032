//! What the agent knows, shared between the script runner (which writes it)
//! and the connection (which reports it).
//!
//! One mutex guards the lifecycle, every script's status and log buffer, and
//! the queue of changes to send on the current connection; nobody holds it
//! across an `.await`. Writers wake the connection through a [`Notify`].
//!
//! Changes (script states, lifecycle, activity) are queued only while
//! connected: a `Hello` carries the full current state, so what happened
//! while disconnected needs no queue. The snapshot for a `Hello` and the
//! start of queueing happen under the same lock, so no change falls between
//! them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;
use tokio::sync::Notify;

use super::logbuf::LogBuffer;
use super::protocol::{
    ActivityKind, AgentMessage, Lifecycle, LogLine, Manifest, ScriptState, ScriptStatus, Stream,
};

/// Most changes queued on one connection before the oldest activity
/// reports are dropped (states are few: at most four per script).
const MAX_QUEUED: usize = 1024;

/// One script as the agent tracks it.
#[derive(Debug)]
pub struct ScriptSlot {
    /// Its status now.
    pub status: ScriptStatus,
    /// Its unacknowledged output.
    pub logs: LogBuffer,
}

/// The agent's state.
#[derive(Debug)]
pub struct State {
    /// The lifecycle now.
    pub lifecycle: Lifecycle,
    /// Every script of the manifest, in manifest order (empty before the
    /// first `Welcome`).
    pub scripts: Vec<ScriptSlot>,
    /// Whether the manifest was received (it is used once).
    pub has_manifest: bool,
    /// Whether a connection is up (its `Hello` was sent).
    pub connected: bool,
    /// Changes to send on the current connection, in order.
    pub queue: VecDeque<AgentMessage>,
    /// Activity seen while disconnected (the latest), sent after the next `Welcome`.
    pub pending_activity: Option<ActivityKind>,
    log_cap: usize,
}

/// The shared state and its wake-up.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// Woken on every change (for the connection, its only waiter).
    pub changed: Notify,
}

impl Shared {
    /// A fresh agent: `Starting`, no scripts; log buffers of `log_cap` bytes.
    pub fn new(log_cap: usize) -> Shared {
        Shared {
            state: Mutex::new(State {
                lifecycle: Lifecycle::Starting,
                scripts: Vec::new(),
                has_manifest: false,
                connected: false,
                queue: VecDeque::new(),
                pending_activity: None,
                log_cap,
            }),
            changed: Notify::new(),
        }
    }

    /// Locks the state (a poisoned lock is still usable: every update is
    /// a plain assignment).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the manifest's scripts (all `Pending`), numbering each one's
    /// output from what the operator already stored of it (0 unless an
    /// earlier agent process of the same start reported some). Returns
    /// `false`, and changes nothing, when a manifest was taken already.
    pub fn take_manifest(&self, manifest: &Manifest, acked: &BTreeMap<String, u64>) -> bool {
        let mut st = self.lock();
        if st.has_manifest {
            return false;
        }
        st.has_manifest = true;
        let cap = st.log_cap;
        st.scripts = manifest
            .scripts
            .iter()
            .map(|s| ScriptSlot {
                status: ScriptStatus {
                    name: s.name.clone(),
                    state: ScriptState::Pending,
                    exit_code: None,
                    started_at: None,
                    finished_at: None,
                },
                logs: LogBuffer::starting_at(cap, acked.get(&s.name).copied().unwrap_or(0)),
            })
            .collect();
        true
    }

    /// Sets the lifecycle (only forward) and reports it.
    pub fn set_lifecycle(&self, next: Lifecycle) {
        let mut st = self.lock();
        if st.lifecycle == next || !st.lifecycle.may_become(next) {
            return;
        }
        tracing::info!(lifecycle = next.as_str(), "agent lifecycle");
        st.lifecycle = next;
        st.enqueue(AgentMessage::Lifecycle { state: next });
        drop(st);
        self.changed.notify_one();
    }

    /// The lifecycle now.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lock().lifecycle
    }

    /// Script `idx` started.
    pub fn script_running(&self, idx: usize) {
        self.update(idx, |s| {
            s.state = ScriptState::Running;
            s.started_at = Some(Utc::now());
        });
    }

    /// Script `idx` finished: `Succeeded` for exit code 0, else `Failed`
    /// (`code` is `None` when it was killed by a signal or never started).
    pub fn script_finished(&self, idx: usize, code: Option<i32>) {
        self.update(idx, |s| {
            s.state = if code == Some(0) {
                ScriptState::Succeeded
            } else {
                ScriptState::Failed
            };
            s.exit_code = code;
            s.finished_at = Some(Utc::now());
        });
    }

    /// Script `idx` is not run (see [`ScriptState::Skipped`]).
    pub fn script_skipped(&self, idx: usize) {
        self.update(idx, |s| {
            s.state = ScriptState::Skipped;
            s.finished_at = Some(Utc::now());
        });
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut ScriptStatus)) {
        let mut st = self.lock();
        let Some(slot) = st.scripts.get_mut(idx) else {
            return;
        };
        let before = slot.status.state;
        f(&mut slot.status);
        if !before.may_become(slot.status.state) {
            tracing::error!(script = %slot.status.name, "script state cannot go back; kept");
            slot.status.state = before;
            return;
        }
        let status = slot.status.clone();
        st.enqueue(AgentMessage::Script { status });
        drop(st);
        self.changed.notify_one();
    }

    /// Appends a line of script `idx`'s output.
    pub fn log(&self, idx: usize, stream: Stream, text: &str) {
        let mut st = self.lock();
        if let Some(slot) = st.scripts.get_mut(idx) {
            slot.logs.push(stream, text);
        }
        drop(st);
        self.changed.notify_one();
    }

    /// Someone used the workspace.
    pub fn activity(&self, kind: ActivityKind) {
        let mut st = self.lock();
        if st.connected {
            st.enqueue(AgentMessage::Activity { kind });
        } else {
            st.pending_activity = Some(kind);
        }
        drop(st);
        self.changed.notify_one();
    }

    /// Every script's status, in manifest order.
    pub fn statuses(&self) -> Vec<ScriptStatus> {
        self.lock()
            .scripts
            .iter()
            .map(|s| s.status.clone())
            .collect()
    }

    /// Whether everything was reported: no queued change and no
    /// unacknowledged line.
    pub fn settled(&self) -> bool {
        let st = self.lock();
        st.connected && st.queue.is_empty() && st.scripts.iter().all(|s| s.logs.is_empty())
    }

    /// Whether no connection is up and no line waits for one.
    pub fn idle_disconnected(&self) -> bool {
        let st = self.lock();
        !st.connected && st.scripts.iter().all(|s| s.logs.is_empty())
    }

    /// Lines not acknowledged, over every script.
    pub fn unacked_lines(&self) -> usize {
        self.lock().scripts.iter().map(|s| s.logs.len()).sum()
    }
}

impl State {
    fn enqueue(&mut self, m: AgentMessage) {
        if !self.connected {
            return;
        }
        if self.queue.len() >= MAX_QUEUED {
            if let Some(i) = self
                .queue
                .iter()
                .position(|m| matches!(m, AgentMessage::Activity { .. }))
            {
                self.queue.remove(i);
            }
        }
        self.queue.push_back(m);
    }

    /// A connection is up: the `Hello` to send (the full current state);
    /// changes from now on are queued for this connection.
    pub fn hello(&mut self) -> AgentMessage {
        self.connected = true;
        self.queue.clear();
        AgentMessage::Hello {
            protocol: super::protocol::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            lifecycle: self.lifecycle,
            scripts: self.scripts.iter().map(|s| s.status.clone()).collect(),
        }
    }

    /// The connection is gone.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.queue.clear();
    }

    /// The next batch of any script's unsent lines: the script's index,
    /// the lines and the drop count. With `full_only`, only a script with a
    /// full batch pending qualifies.
    pub fn next_batch(&mut self, full_only: bool) -> Option<(String, Vec<LogLine>, u64)> {
        let slot = self.scripts.iter_mut().find(|s| {
            let n = s.logs.unsent();
            n > 0 && (!full_only || n >= super::protocol::MAX_LINES_PER_BATCH)
        })?;
        let (lines, dropped) = slot.logs.next_batch()?;
        Some((slot.status.name.clone(), lines, dropped))
    }

    /// Whether some line was not sent on this connection yet.
    pub fn has_unsent(&self) -> bool {
        self.scripts.iter().any(|s| s.logs.unsent() > 0)
    }

    /// The operator stored `script`'s lines below `next_seq`.
    pub fn ack(&mut self, script: &str, next_seq: u64) {
        if let Some(s) = self.scripts.iter_mut().find(|s| s.status.name == script) {
            s.logs.ack(next_seq);
        }
    }

    /// A `Welcome` on a new connection: resend from what it acknowledged.
    pub fn rewind(&mut self, acked: &BTreeMap<String, u64>) {
        for s in &mut self.scripts {
            s.logs
                .rewind(acked.get(&s.status.name).copied().unwrap_or(0));
        }
    }
}
