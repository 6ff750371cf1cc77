//! State events for subscribers, taken from the state history so that every
//! recorded transition reaches them, whichever `tenderd` process made it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::state::{Event, Phase, Slot};

/// One event line of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// RFC 3339 time of the robot's clock.
    pub time: String,
    /// The history event, such as `staging`, `committed` or `held`.
    pub event: String,
    /// State the robot entered with this event; `None` for events that
    /// change no state, such as `held`.
    pub phase: Option<Phase>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub slot: Option<Slot>,
    /// The history event's detail: why it happened or what it did.
    pub reason: String,
}

/// Returns the state an event name leads to, as `updater.rs` records them.
fn phase_of(event: &str) -> Option<Phase> {
    Some(match event {
        "staging" => Phase::Staging,
        "staged" => Phase::Staged,
        "switching" | "reverting" | "rollback" => Phase::Switching,
        "committed" | "rolled back" => Phase::Committed,
        "reverted" => Phase::Reverted,
        "staging failed" | "pre-switch failed" | "trial failed" | "recovered" => Phase::Failed,
        _ => return None,
    })
}

impl From<&Event> for EventLine {
    fn from(event: &Event) -> Self {
        Self {
            time: event.time.clone(),
            event: event.event.clone(),
            phase: phase_of(&event.event),
            name: event.release.as_ref().map(|r| r.name.clone()),
            version: event.release.as_ref().map(|r| r.version.to_string()),
            slot: event.slot,
            reason: event.detail.clone(),
        }
    }
}

/// Events to compare when finding where an earlier history ends in a newer one.
const OVERLAP: usize = 8;

/// Returns the events of `new` that came after the end of `old`. The history
/// drops its oldest events beyond its limit, so the end of `old` is looked
/// up in `new` by its last events rather than by position.
pub fn new_events<'a>(old: &VecDeque<Event>, new: &'a VecDeque<Event>) -> Vec<&'a Event> {
    let Some(last) = old.back() else { return new.iter().collect() };
    for end in (0..new.len()).rev() {
        if &new[end] != last {
            continue;
        }
        // The events before `end` may have been dropped from the front of `new`.
        let overlap = old.len().min(OVERLAP).min(end + 1);
        let matches = (0..overlap).all(|back| new[end - back] == old[old.len() - 1 - back]);
        if matches {
            return new.iter().skip(end + 1).collect();
        }
    }
    new.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, time: &str) -> Event {
        Event { time: time.to_owned(), event: name.to_owned(), slot: None, release: None, detail: String::new() }
    }

    #[test]
    fn new_events_follow_the_old_end() {
        let old: VecDeque<Event> = [event("held", "t1"), event("resumed", "t2")].into();
        let mut new = old.clone();
        new.push_back(event("held", "t3"));
        new.pop_front();
        let found: Vec<&str> = new_events(&old, &new).iter().map(|e| e.time.as_str()).collect();
        assert_eq!(found, ["t3"]);
        assert!(new_events(&new, &new).is_empty());
    }

    #[test]
    fn event_names_map_to_phases() {
        let line = EventLine::from(&event("reverted", "t"));
        assert_eq!(line.phase, Some(Phase::Reverted));
        assert_eq!(EventLine::from(&event("held", "t")).phase, None);
    }
}
