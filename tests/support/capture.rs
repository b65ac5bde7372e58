//! A process-wide `tracing` subscriber that records the events of one target, for the tests
//! of what the runtime logs. The runtime logs from its own threads (reporter, supervisor), so
//! a thread-local subscriber would miss them; a test binary therefore has one capture, of one
//! target.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One captured event: when it came, its level, and its fields as text.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub level: tracing::Level,
    pub fields: Vec<(String, String)>,
}

impl Event {
    /// The text of field `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The events of one target captured so far.
#[derive(Debug, Clone)]
pub struct Capture {
    target: &'static str,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Capture {
    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The events whose `stage` field is `stage`, in order.
    pub fn for_stage(&self, stage: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.field("stage") == Some(stage))
            .collect()
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != self.target {
            return;
        }
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(Event {
            at: Instant::now(),
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// The process-wide capture of `target`'s events, installed as the global subscriber on the
/// first call. Panics if a later call names another target.
pub fn capture(target: &'static str) -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    let capture = CAPTURE.get_or_init(|| {
        let capture = Capture {
            target,
            events: Arc::default(),
        };
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        capture
    });
    assert_eq!(capture.target, target, "one capture target per test binary");
    capture
}
