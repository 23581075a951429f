//! What the loop reacts to: key presses and resizes (from an input thread), ticks, and the
//! answers of network tasks.

use std::time::Duration;

use ratatui::crossterm::event::{
    self as ct, KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind,
};
use shared::api::{ActionResponse, LogChunk, PluginInfo, PluginList, RunResponse, Status};
use shared::ClientError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fleet::action::Outcome;
use crate::fleet::probe::Row;

/// One thing that happened.
#[derive(Debug)]
pub enum Event {
    /// A key press.
    Key(KeyEvent),
    /// A click or a wheel notch (only those: motion is dropped by the input thread).
    Mouse(MouseEvent),
    /// The terminal changed size (the next draw adapts; mouse hit-testing needs it).
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// The clock, once a second.
    Tick {
        /// Unix seconds.
        now: i64,
    },
    /// A network task finished.
    Net(Box<Net>),
}

/// The plugin actions that go through the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `/plugins/update`.
    Update,
    /// `/plugins/enable`.
    Enable,
    /// `/plugins/disable`.
    Disable,
}

impl Verb {
    /// The word shown to people.
    pub fn word(self) -> &'static str {
        match self {
            Verb::Update => "update",
            Verb::Enable => "enable",
            Verb::Disable => "disable",
        }
    }
}

/// The answer of a network task.
// Net travels boxed (`Event::Net(Box<Net>)`), so its variants' sizes cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Net {
    /// One refresh: status, then namespaces and plugins (those two only when status answered).
    Refreshed {
        /// Milliseconds since the console started, when the status arrived.
        at_ms: u64,
        /// `/me/status`.
        status: Result<Status, ClientError>,
        /// `/me/ns`.
        namespaces: Option<Result<Vec<String>, ClientError>>,
        /// `/plugins/list`.
        plugins: Option<Result<PluginList, ClientError>>,
    },
    /// `/plugins/run` answered.
    Ran {
        /// Namespace.
        ns: String,
        /// Project.
        project: String,
        /// The answer.
        result: Result<RunResponse, ClientError>,
    },
    /// `/plugins/update|enable|disable` answered.
    Acted {
        /// Which action.
        verb: Verb,
        /// Namespace.
        ns: String,
        /// Project.
        project: String,
        /// The answer.
        result: Result<ActionResponse, ClientError>,
    },
    /// `/log/offset` answered.
    Log {
        /// The path asked for (answers for a path no longer shown are dropped).
        path: String,
        /// The offset asked for.
        offset: u64,
        /// The answer.
        result: Result<LogChunk, ClientError>,
    },
    /// The Points screen's tap sent lines.
    Tapped {
        /// What arrived since the last batch.
        lines: Vec<shared::api::TapLine>,
    },
    /// The Points screen's tap ended or was refused.
    TapEnded {
        /// Why, for the screen.
        reason: String,
    },
    /// Fleet: one host's probe answered (or timed out).
    Probed {
        /// Index in the inventory.
        host: usize,
        /// What it said.
        row: Box<Row>,
    },
    /// Fleet: the probe round is over.
    ProbeDone,
    /// Fleet: a host's `/plugins/list`, for the picker.
    HostPlugins {
        /// Index in the inventory.
        host: usize,
        /// The plugins, or why not.
        result: Result<Vec<PluginInfo>, String>,
    },
    /// Fleet: an action finished on one host.
    Outcome {
        /// Index in the inventory.
        host: usize,
        /// How it went.
        outcome: Outcome,
    },
}

/// Reads terminal events on a thread of its own (crossterm's reader blocks) and forwards key
/// presses, clicks, wheel notches and resizes; polls at most 4 times a second to notice `cancel`.
pub fn spawn_input(tx: mpsc::Sender<Event>, cancel: CancellationToken) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("agentctl-input".into())
        .spawn(move || {
            while !cancel.is_cancelled() {
                match ct::poll(Duration::from_millis(250)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(_) => break,
                }
                let event = match ct::read() {
                    Ok(ct::Event::Key(k)) if k.kind != KeyEventKind::Release => Event::Key(k),
                    Ok(ct::Event::Mouse(m)) if wanted(&m) => Event::Mouse(m),
                    Ok(ct::Event::Resize(width, height)) => Event::Resize { width, height },
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if tx.blocking_send(event).is_err() {
                    break;
                }
            }
        })
        .map(|_| ())
}

/// Mouse capture reports every motion and release too; only presses of the left button and the
/// wheel do anything, and dropping the rest here keeps a moving mouse from waking the loop.
fn wanted(m: &MouseEvent) -> bool {
    matches!(
        m.kind,
        MouseEventKind::Down(MouseButton::Left)
            | MouseEventKind::ScrollUp
            | MouseEventKind::ScrollDown
    )
}
