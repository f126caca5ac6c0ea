//! A door rule: doors open only within the site's opening hours, unless the person's
//! rank is admin or higher.
//!
//! The site's opening hours come from the host (`DoorRuleInput::site_open`), which
//! evaluates the schedule set for the door's site in the site's time zone, with its
//! holidays. For a site without opening hours the rule falls back to its configured
//! default hours.
//!
//! Config (all optional): `days = ["mon", "tue", "wed", "thu", "fri"]`, `open = "08:00"`,
//! `close = "18:00"` (the default hours: local time, `close` exclusive, may not wrap past
//! midnight), and `bypass_rank = 30` (the standard site admin's rank). The rule only
//! narrows: when the core already denies, it abstains.

use keyway_sdk::{Config, DoorRuleInput, DoorRuleOutput, HookResult, Plugin};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The plugin: opening days and hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    /// Bit `d - 1` set for ISO weekday `d`.
    days: u8,
    /// Opening minute of the day.
    open: u16,
    /// Closing minute of the day (exclusive).
    close: u16,
    /// People of this rank or higher pass at any time.
    bypass_rank: u8,
}

fn minute(key: &str, text: &str) -> HookResult<u16> {
    let bad = || format!("`{key}` must be a time like `08:30`, found `{text}`");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl BusinessHours {
    /// Whether the configured default hours admit the input's local time.
    fn default_hours_admit(&self, input: &DoorRuleInput<'_>) -> bool {
        let day_open = input
            .local
            .weekday
            .checked_sub(1)
            .is_some_and(|d| d < 7 && self.days & (1 << d) != 0);
        day_open && (self.open..self.close).contains(&input.local.minute_of_day)
    }
}

impl Plugin for BusinessHours {
    fn configure(config: &Config) -> HookResult<Self> {
        let mut days = 0u8;
        for day in config.strings("days")?.unwrap_or_else(|| DAYS[..5].to_vec()) {
            let i = DAYS
                .iter()
                .position(|d| *d == day)
                .ok_or_else(|| format!("unknown day `{day}`; use mon, tue, wed, thu, fri, sat, sun"))?;
            days |= 1 << i;
        }
        let open = minute("open", config.str("open")?.unwrap_or("08:00"))?;
        let close = minute("close", config.str("close")?.unwrap_or("18:00"))?;
        if open >= close {
            return Err("`open` must be before `close`".into());
        }
        let bypass_rank = match config.int("bypass_rank")? {
            None => 30,
            Some(r) => u8::try_from(r).map_err(|_| format!("`bypass_rank` must be between 0 and 255, found {r}"))?,
        };
        Ok(BusinessHours {
            days,
            open,
            close,
            bypass_rank,
        })
    }

    fn door_rule(&self, input: &DoorRuleInput<'_>) -> HookResult<DoorRuleOutput> {
        if !input.verdict.allow {
            return Ok(DoorRuleOutput::abstain());
        }
        if input.rank.is_some_and(|r| r >= self.bypass_rank) {
            return Ok(DoorRuleOutput::allow());
        }
        // The site's own hours win; the configured ones only stand in for a site that
        // has none, so each deny says which of the two closed the door.
        match input.site_open {
            Some(true) => Ok(DoorRuleOutput::allow()),
            Some(false) => Ok(DoorRuleOutput::deny("outside the site's opening hours")),
            None if self.default_hours_admit(input) => Ok(DoorRuleOutput::allow()),
            None => Ok(DoorRuleOutput::deny("outside business hours")),
        }
    }
}

keyway_sdk::export_plugin!(BusinessHours, door_rule);

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::testing::{Harness, door_input};
    use keyway_sdk::{LocalTime, RuleVerdict};

    #[test]
    fn hours() {
        let h = Harness::<BusinessHours>::new(Config::new()).unwrap();
        let deny = RuleVerdict::Deny {
            reason: "outside business hours".into(),
        };
        // (weekday, minute, rank, core allows, expected)
        let cases = [
            (1, 8 * 60, 10, true, RuleVerdict::Allow),
            (1, 8 * 60 - 1, 10, true, deny.clone()),
            (5, 18 * 60 - 1, 10, true, RuleVerdict::Allow),
            (5, 18 * 60, 10, true, deny.clone()),
            (6, 12 * 60, 10, true, deny.clone()),
            (7, 12 * 60, 20, true, deny.clone()),
            (7, 12 * 60, 30, true, RuleVerdict::Allow),
            (7, 3 * 60, 40, true, RuleVerdict::Allow),
            (6, 12 * 60, 40, false, RuleVerdict::Abstain),
        ];
        for (weekday, minute_of_day, rank, allow, expected) in cases {
            let mut i = door_input(1, Some(9));
            i.local = LocalTime { weekday, minute_of_day };
            i.rank = Some(rank);
            i.verdict.allow = allow;
            assert_eq!(i.site_open, None, "the default hours apply to a site without hours");
            assert_eq!(
                h.door_rule(&i).unwrap().verdict,
                expected,
                "{weekday} {minute_of_day} {rank}"
            );
        }
    }

    #[test]
    fn site_hours_win_over_the_default_hours() {
        let h = Harness::<BusinessHours>::new(Config::new()).unwrap();
        let site_closed = RuleVerdict::Deny {
            reason: "outside the site's opening hours".into(),
        };
        let default_closed = RuleVerdict::Deny {
            reason: "outside business hours".into(),
        };
        // (weekday, minute, site_open, rank, core allows, expected): each local time is
        // chosen so that the default hours (weekdays 08:00-18:00) say the opposite of the
        // site, except in the fallback rows.
        let cases = [
            (1, 12 * 60, Some(false), 10, true, site_closed.clone()),
            (6, 23 * 60, Some(true), 10, true, RuleVerdict::Allow),
            (7, 3 * 60, Some(true), 10, true, RuleVerdict::Allow),
            (3, 9 * 60, Some(false), 10, true, site_closed),
            // Admins pass whatever the site's hours say.
            (1, 12 * 60, Some(false), 30, true, RuleVerdict::Allow),
            // A core deny stands and the rule abstains, open site or not.
            (1, 12 * 60, Some(true), 10, false, RuleVerdict::Abstain),
            // No hours for the site: the default hours decide.
            (6, 23 * 60, None, 10, true, default_closed),
            (1, 12 * 60, None, 10, true, RuleVerdict::Allow),
        ];
        for (weekday, minute_of_day, site_open, rank, allow, expected) in cases {
            let mut i = door_input(1, Some(9));
            i.local = LocalTime { weekday, minute_of_day };
            i.site_open = site_open;
            i.rank = Some(rank);
            i.verdict.allow = allow;
            assert_eq!(
                h.door_rule(&i).unwrap().verdict,
                expected,
                "{weekday} {minute_of_day} {site_open:?} {rank} {allow}"
            );
        }
    }

    #[test]
    fn config() {
        let ok = Config::new()
            .with("days", vec!["sat", "sun"])
            .with("open", "10:00")
            .with("close", "24:00")
            .with("bypass_rank", 40);
        let h = Harness::<BusinessHours>::new(ok).unwrap();
        assert_eq!(
            h.plugin(),
            &BusinessHours {
                days: 0b110_0000,
                open: 600,
                close: 1440,
                bypass_rank: 40
            }
        );
        let cases = [
            (
                Config::new().with("days", vec!["funday"]),
                "unknown day `funday`; use mon, tue, wed, thu, fri, sat, sun",
            ),
            (
                Config::new().with("open", "8h"),
                "`open` must be a time like `08:30`, found `8h`",
            ),
            (Config::new().with("open", "19:00"), "`open` must be before `close`"),
            (
                Config::new().with("bypass_rank", 300),
                "`bypass_rank` must be between 0 and 255, found 300",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(Harness::<BusinessHours>::new(config).unwrap_err(), expected);
        }
    }
}
