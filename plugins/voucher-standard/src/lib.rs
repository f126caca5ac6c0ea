//! Voucher tiers: how many users and app users a site may have.
//!
//! The config names the tiers: `[plugins.voucher.config.tiers.basic] max_users = 50,
//! max_app_users = 10` (and optionally `max_iqs`). Doors are never limited. A write that
//! would take a count past its tier's maximum is refused with an explicit message; a full
//! site never silently "suspends" anyone. Removals are always allowed.

use keyway_sdk::{Config, Counted, HookResult, IssuedVoucher, Plugin, VoucherInput, VoucherVerdict};
use std::collections::BTreeMap;

/// One tier's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tier {
    /// People on the site.
    pub max_users: Option<u32>,
    /// App users on the site.
    pub max_app_users: Option<u32>,
    /// IQs on the site.
    pub max_iqs: Option<u32>,
}

impl Tier {
    fn limit(&self, what: Counted) -> Option<u32> {
        match what {
            Counted::People => self.max_users,
            Counted::AppUsers => self.max_app_users,
            Counted::Iqs => self.max_iqs,
            Counted::Doors => None,
        }
    }
}

/// The plugin: the tiers by name.
#[derive(Debug)]
pub struct VoucherStandard {
    tiers: BTreeMap<String, Tier>,
}

fn limit(table: &Config, tier: &str, key: &str) -> HookResult<Option<u32>> {
    match table.int(key).map_err(|e| format!("tier `{tier}`: {e}"))? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| format!("tier `{tier}`: `{key}` must be between 0 and {}, found {n}", u32::MAX)),
    }
}

impl Plugin for VoucherStandard {
    fn configure(config: &Config) -> HookResult<Self> {
        let tiers_table = config.table("tiers")?.ok_or("config needs a `tiers` table")?;
        let mut tiers = BTreeMap::new();
        for name in tiers_table.values.keys() {
            let t = tiers_table.table(name)?.unwrap_or_default();
            tiers.insert(
                name.clone(),
                Tier {
                    max_users: limit(&t, name, "max_users")?,
                    max_app_users: limit(&t, name, "max_app_users")?,
                    max_iqs: limit(&t, name, "max_iqs")?,
                },
            );
        }
        Ok(VoucherStandard { tiers })
    }

    fn voucher(&self, input: &VoucherInput) -> HookResult<VoucherVerdict> {
        if input.delta <= 0 {
            return Ok(VoucherVerdict::Allow);
        }
        if let Some(issued) = &input.issued {
            return Ok(issued_verdict(issued, input));
        }
        let tier_name = &input.voucher.tier;
        let Some(tier) = self.tiers.get(tier_name) else {
            return Ok(VoucherVerdict::Deny {
                message: format!("the site's voucher tier `{tier_name}` is unknown; contact your integrator"),
            });
        };
        if input.voucher.valid_until.is_some_and(|end| input.at_unix >= end) {
            return Ok(VoucherVerdict::Deny {
                message: format!(
                    "the site's `{tier_name}` voucher has expired; renew it to add {}",
                    input.change.noun()
                ),
            });
        }
        let Some(max) = tier.limit(input.change) else {
            return Ok(VoucherVerdict::Allow);
        };
        let current = input.counts.of(input.change);
        let wanted = u64::from(current) + u64::from(input.delta.unsigned_abs());
        if wanted <= u64::from(max) {
            return Ok(VoucherVerdict::Allow);
        }
        let noun = input.change.noun();
        Ok(VoucherVerdict::Deny {
            message: format!(
                "the site is full: the `{tier_name}` voucher allows {max} {noun} and the site has {current}; \
                 remove some or upgrade the voucher"
            ),
        })
    }
}

/// The verdict on a voucher issued with its own caps: people and app users are capped by
/// it; doors and IQs are not.
fn issued_verdict(issued: &IssuedVoucher, input: &VoucherInput) -> VoucherVerdict {
    let (max, cap) = match input.change {
        Counted::People => (issued.max_users, "max_users"),
        Counted::AppUsers => (issued.max_app_users, "max_app_users"),
        Counted::Doors | Counted::Iqs => return VoucherVerdict::Allow,
    };
    let current = input.counts.of(input.change);
    let wanted = u64::from(current) + u64::from(input.delta.unsigned_abs());
    if wanted <= u64::from(max) {
        return VoucherVerdict::Allow;
    }
    VoucherVerdict::Deny {
        message: format!(
            "the site is full: voucher `{}` allows {max} {} (`{cap}`) and the site has {current}; \
             remove some or redeem a larger voucher",
            issued.code,
            input.change.noun()
        ),
    }
}

keyway_sdk::export_plugin!(VoucherStandard, voucher);

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_sdk::testing::Harness;
    use keyway_sdk::{Counts, Value, VoucherTerms};

    fn harness() -> Harness<VoucherStandard> {
        let basic = Config::new().with("max_users", 3).with("max_app_users", 1);
        let pro = Config::new().with("max_users", 1000);
        let tiers = Config::new().with("basic", basic).with("pro", pro);
        Harness::new(Config::new().with("tiers", tiers)).unwrap()
    }

    fn input(tier: &str, people: u32, app_users: u32, change: Counted, delta: i32) -> VoucherInput {
        VoucherInput {
            voucher: VoucherTerms {
                tier: tier.into(),
                valid_until: Some(2_000_000_000),
            },
            counts: Counts {
                people,
                app_users,
                doors: 500,
                iqs: 3,
            },
            change,
            delta,
            at_unix: 1_800_000_000,
            issued: None,
        }
    }

    #[test]
    fn limits() {
        let h = harness();
        let deny = |m: &str| VoucherVerdict::Deny { message: m.into() };
        let cases = [
            (input("basic", 2, 0, Counted::People, 1), VoucherVerdict::Allow),
            (
                input("basic", 3, 0, Counted::People, 1),
                deny(
                    "the site is full: the `basic` voucher allows 3 users and the site has 3; \
                     remove some or upgrade the voucher",
                ),
            ),
            (input("basic", 3, 0, Counted::People, -1), VoucherVerdict::Allow),
            (input("basic", 1, 0, Counted::AppUsers, 1), VoucherVerdict::Allow),
            (
                input("basic", 1, 1, Counted::AppUsers, 1),
                deny(
                    "the site is full: the `basic` voucher allows 1 app users and the site has 1; \
                     remove some or upgrade the voucher",
                ),
            ),
            (input("basic", 3, 1, Counted::Doors, 50), VoucherVerdict::Allow),
            (input("pro", 999, 0, Counted::People, 1), VoucherVerdict::Allow),
            (
                input("gold", 0, 0, Counted::People, 1),
                deny("the site's voucher tier `gold` is unknown; contact your integrator"),
            ),
        ];
        for (i, expected) in cases {
            assert_eq!(h.voucher(&i).unwrap(), expected, "{i:?}");
        }
        let mut expired = input("pro", 0, 0, Counted::People, 1);
        expired.at_unix = 2_000_000_000;
        assert_eq!(
            h.voucher(&expired).unwrap(),
            deny("the site's `pro` voucher has expired; renew it to add users")
        );
    }

    /// A voucher issued with its own caps: they decide whatever the tier, removals and
    /// doors are never capped.
    #[test]
    fn issued_caps() {
        let h = harness();
        let issued = |people, app_users, change, delta| {
            let mut i = input("", people, app_users, change, delta);
            i.issued = Some(IssuedVoucher {
                code: "TOUR-2026".into(),
                max_users: 10,
                max_app_users: 2,
            });
            i
        };
        let deny = |m: &str| VoucherVerdict::Deny { message: m.into() };
        let cases = [
            (issued(9, 0, Counted::People, 1), VoucherVerdict::Allow),
            (
                issued(10, 0, Counted::People, 1),
                deny(
                    "the site is full: voucher `TOUR-2026` allows 10 users (`max_users`) and the site has 10; \
                     remove some or redeem a larger voucher",
                ),
            ),
            (issued(10, 0, Counted::People, -1), VoucherVerdict::Allow),
            (issued(0, 1, Counted::AppUsers, 1), VoucherVerdict::Allow),
            (
                issued(0, 2, Counted::AppUsers, 1),
                deny(
                    "the site is full: voucher `TOUR-2026` allows 2 app users (`max_app_users`) and the site has 2; \
                     remove some or redeem a larger voucher",
                ),
            ),
            (issued(10, 2, Counted::Doors, 1000), VoucherVerdict::Allow),
            (
                issued(u32::MAX, 0, Counted::People, i32::MAX),
                deny(
                    "the site is full: voucher `TOUR-2026` allows 10 users (`max_users`) and the site has 4294967295; \
                 remove some or redeem a larger voucher",
                ),
            ),
        ];
        for (i, expected) in cases {
            assert_eq!(h.voucher(&i).unwrap(), expected, "{i:?}");
        }
    }

    #[test]
    fn bad_config() {
        let cases = [
            (Config::new(), "config needs a `tiers` table"),
            (
                Config::new().with("tiers", Value::Int(1)),
                "config key `tiers` must be a table, found an integer",
            ),
            (
                Config::new().with("tiers", Config::new().with("x", Config::new().with("max_users", -1))),
                "tier `x`: `max_users` must be between 0 and 4294967295, found -1",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(Harness::<VoucherStandard>::new(config).unwrap_err(), expected);
        }
    }
}
