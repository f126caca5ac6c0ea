//! Notifies the site owner of each event whose kind the site enabled.
//!
//! As the FAQ says: only the site owner receives messages, and only for the events
//! configured on the notifications page. Nobody else is ever notified; in particular a
//! blocked person is not told they were blocked.

use keyway_sdk::{Config, Event, EventKind, HookResult, Notification, NotifyInput, Plugin};
use std::fmt::Write as _;

/// The plugin. It takes no config.
#[derive(Debug)]
pub struct NotifyOwner;

impl Plugin for NotifyOwner {
    fn configure(config: &Config) -> HookResult<Self> {
        match config.values.keys().next() {
            Some(key) => Err(format!("notify-owner takes no config, found `{key}`")),
            None => Ok(NotifyOwner),
        }
    }

    fn notify(&self, input: &NotifyInput) -> HookResult<Vec<Notification>> {
        let settings = &input.settings;
        if !settings.enabled.contains(&input.event.kind) {
            return Ok(Vec::new());
        }
        Ok(vec![Notification {
            recipient: settings.owner.clone(),
            channel: settings.channel,
            subject: subject(&settings.site_name, &input.event),
            body: body(&input.event),
        }])
    }
}

keyway_sdk::export_plugin!(NotifyOwner, notify);

fn what(kind: EventKind) -> &'static str {
    match kind {
        EventKind::EntryGranted => "entry granted",
        EventKind::EntryDenied => "entry denied",
        EventKind::DoorForced => "door forced open",
        EventKind::DoorLeftOpen => "door left open",
        EventKind::BatteryLow => "battery low",
        EventKind::IqOffline => "IQ offline",
        EventKind::AdminChange => "administrative change",
        EventKind::Tamper => "tamper alarm",
    }
}

fn subject(site: &str, event: &Event) -> String {
    match &event.door {
        Some((_, door)) => format!("{site}: {} at {door}", what(event.kind)),
        None => format!("{site}: {}", what(event.kind)),
    }
}

fn body(event: &Event) -> String {
    let mut body = String::with_capacity(96);
    body.push_str(what(event.kind));
    if let Some((_, person)) = &event.person {
        let _ = write!(body, ", by {person}");
    }
    if let Some((_, door)) = &event.door {
        let _ = write!(body, ", at {door}");
    }
    let _ = write!(body, " (unix time {})", event.at_unix);
    if !event.detail.is_empty() {
        let _ = write!(body, ": {}", event.detail);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::testing::Harness;
    use keyway_sdk::{Channel, NotificationSettings, Recipient};

    fn input(kind: EventKind, enabled: &[EventKind]) -> NotifyInput {
        NotifyInput {
            event: Event {
                kind,
                at_unix: 1_800_000_000,
                door: Some((4, "Front door".into())),
                person: Some((7, "Ada".into())),
                detail: "no_right".into(),
            },
            settings: NotificationSettings {
                site_name: "HQ".into(),
                owner: Recipient {
                    person: 1,
                    address: "owner@example.com".into(),
                },
                channel: Channel::Email,
                enabled: enabled.to_vec(),
            },
        }
    }

    #[test]
    fn owner_only_for_enabled_kinds() {
        let h = Harness::<NotifyOwner>::new(Config::new()).unwrap();
        let enabled = [EventKind::EntryDenied, EventKind::DoorForced];
        for kind in EventKind::ALL {
            let out = h.notify(&input(kind, &enabled)).unwrap();
            assert_eq!(out.len(), usize::from(enabled.contains(&kind)), "{kind:?}");
        }
        let out = h.notify(&input(EventKind::EntryDenied, &enabled)).unwrap();
        assert_eq!(
            out,
            vec![Notification {
                recipient: Recipient {
                    person: 1,
                    address: "owner@example.com".into()
                },
                channel: Channel::Email,
                subject: "HQ: entry denied at Front door".into(),
                body: "entry denied, by Ada, at Front door (unix time 1800000000): no_right".into(),
            }]
        );
    }
}
