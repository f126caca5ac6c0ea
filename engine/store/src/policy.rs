//! Policy as the store keeps it: uploaded plugin binaries, the bundles that deploy them
//! (one active per site, or globally), which door runs which door rule, and each site's
//! opening hours.
//!
//! The store does not run WebAssembly: it checks what it can without the plugin host (a
//! module's magic bytes, sizes, the manifest's shape) and records SHA-256 digests, and
//! the host verifies and compiles what it loads. Activating a bundle switches the site's
//! active bundle in one transaction; a partial unique index keeps at most one active.

use crate::codec::{self, PeriodDto};
use crate::dispatch::secrets;
use crate::error::StoreError;
use crate::ids::{BundleId, PluginId};
use crate::store::{PolicyWrite, Store, WriteOp};
use jiff::Timestamp;
use keyway_core::{DoorId, Revision, Schedule, SiteId};

/// The largest plugin module accepted, in bytes.
pub const MAX_PLUGIN_BYTES: usize = 16 << 20;
/// The largest bundle manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 << 10;

/// An uploaded plugin's description (the module comes from [`PolicyRecords::plugin_wasm`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPlugin {
    pub id: PluginId,
    pub name: String,
    pub version: String,
    /// The module's SHA-256, hex.
    pub sha256: String,
    /// When it was uploaded.
    pub uploaded_at: Timestamp,
}

/// A policy bundle: a manifest and the plugins it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBundle {
    pub id: BundleId,
    /// The site it is for (`None`: every site without its own).
    pub site: Option<SiteId>,
    pub name: String,
    pub version: String,
    /// The manifest (TOML).
    pub manifest: String,
    /// The manifest's SHA-256, hex.
    pub sha256: String,
    /// Whether it is the one in force.
    pub active: bool,
    /// When it was uploaded.
    pub uploaded_at: Timestamp,
    /// The plugins it deploys, by id.
    pub plugins: Vec<PluginId>,
}

/// Most rules one door's chain may hold (the plugin host's limit too).
pub const MAX_RULE_CHAIN: usize = 8;

/// Largest configuration one rule of a door's chain may carry, as JSON text.
pub const MAX_RULE_CONFIG_BYTES: usize = 4096;

/// One rule of a door's chain: the rule plugin's name in the active bundle, what a
/// failure means, and the door's own configuration for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainedRule {
    /// The rule's name in the bundle.
    pub rule: String,
    /// Whether a rule failure keeps the core's verdict (fail-safe) rather than denying
    /// (fail-secure).
    pub fail_safe: bool,
    /// The door's own settings for the rule, a JSON object (empty when none). The plugin
    /// host checks them with the rule; the store checks their shape and size.
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl ChainedRule {
    /// `rule` with this fail mode and no configuration of its own.
    #[must_use]
    pub fn new(rule: impl Into<String>, fail_safe: bool) -> Self {
        ChainedRule {
            rule: rule.into(),
            fail_safe,
            config: serde_json::Map::new(),
        }
    }
}

/// A door's chain of rules, in the order they run (the first deny wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorRuleChain {
    pub door: DoorId,
    /// Its rules, in order; never empty.
    pub rules: Vec<ChainedRule>,
}

/// Checks a chain's shape, as [`PolicyRecords::set_door_rules`] does before writing it: at least
/// one rule and at most [`MAX_RULE_CHAIN`], well-formed names, no rule twice, and each
/// configuration within [`MAX_RULE_CONFIG_BYTES`].
///
/// # Errors
/// [`StoreError::Invalid`], naming what is wrong.
pub fn check_rule_chain(rules: &[ChainedRule]) -> Result<(), StoreError> {
    if rules.is_empty() {
        return Err(StoreError::invalid(
            "a chain needs at least one rule; detach the door's rules instead".to_owned(),
        ));
    }
    if rules.len() > MAX_RULE_CHAIN {
        return Err(StoreError::invalid(format!(
            "a chain of {} rules, over the limit of {MAX_RULE_CHAIN}",
            rules.len()
        )));
    }
    for (i, link) in rules.iter().enumerate() {
        check_name("rule name", &link.rule)?;
        if rules.iter().take(i).any(|other| other.rule == link.rule) {
            return Err(StoreError::invalid(format!(
                "rule `{}` appears twice in the chain",
                link.rule
            )));
        }
        let size = config_text(&link.config).len();
        if size > MAX_RULE_CONFIG_BYTES {
            return Err(StoreError::invalid(format!(
                "the configuration of rule `{}` is {size} bytes of JSON, over the limit of {MAX_RULE_CONFIG_BYTES}",
                link.rule
            )));
        }
    }
    Ok(())
}

fn config_text(config: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(config.clone()).to_string()
}

fn config_from_text(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(StoreError::internal(
            "a stored door-rule configuration is not a JSON object".to_owned(),
        )),
    }
}

fn check_name(what: &str, text: &str) -> Result<(), StoreError> {
    if text.is_empty()
        || text.len() > 64
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    {
        return Err(StoreError::invalid(format!(
            "a {what} has 1 to 64 letters, digits, dots, dashes, underscores or pluses, found `{}`",
            text.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

fn bundle_json(b: &StoredBundle) -> String {
    serde_json::json!({
        "id": b.id.get(), "site": b.site.map(|s| s.0), "name": b.name, "version": b.version,
        "sha256": b.sha256, "active": b.active, "plugins": b.plugins.iter().map(|p| p.get()).collect::<Vec<_>>(),
    })
    .to_string()
}

fn chain_json(chain: &DoorRuleChain) -> String {
    let rules: Vec<serde_json::Value> = chain
        .rules
        .iter()
        .map(|r| serde_json::json!({ "rule": r.rule, "fail_safe": r.fail_safe, "config": r.config }))
        .collect();
    serde_json::json!({ "door": chain.door.0, "rules": rules }).to_string()
}

pub(crate) mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::{Columns, Conn};

    const PLUGIN_COLS: &str = "SELECT id, name, version, sha256, uploaded_at FROM plugins";
    const BUNDLE_COLS: &str =
        "SELECT id, site, name, version, manifest, sha256, active, uploaded_at FROM policy_bundles";

    fn plugin_from(r: &impl Columns) -> Result<StoredPlugin, StoreError> {
        Ok(StoredPlugin {
            id: r.col(0)?,
            name: r.col(1)?,
            version: r.col(2)?,
            sha256: r.col(3)?,
            uploaded_at: r.time(4)?,
        })
    }

    async fn bundle_from(conn: Conn<'_>, r: &impl Columns) -> Result<StoredBundle, StoreError> {
        each_backend!(conn, |conn| {
            let id: BundleId = r.col(0)?;
            let site: Option<i64> = r.col(1)?;
            let plugins: Vec<PluginId> =
                sqlx::query_scalar("SELECT plugin FROM policy_bundle_plugins WHERE bundle = $1 ORDER BY plugin")
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?;
            Ok(StoredBundle {
                id,
                site: codec::opt_id32(site, "site")?.map(SiteId),
                name: r.col(2)?,
                version: r.col(3)?,
                manifest: r.col(4)?,
                sha256: r.col(5)?,
                active: r.col(6)?,
                uploaded_at: r.time(7)?,
                plugins,
            })
        })
    }

    pub(super) async fn insert_plugin(
        conn: Conn<'_>,
        actor: &str,
        name: &str,
        version: &str,
        wasm: &[u8],
        now: Timestamp,
    ) -> Result<StoredPlugin, StoreError> {
        each_backend!(conn, |conn| {
            let sha256 = secrets::sha256_hex(wasm);
            let id: PluginId = sqlx::query_scalar(
            "INSERT INTO plugins (name, version, sha256, wasm, uploaded_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(name)
        .bind(version)
        .bind(&sha256)
        .bind(wasm)
        .bind(now.as_second())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| StoreError::from(e).duplicate(format!("plugin `{name}` `{version}`"), "that version was uploaded already".to_owned()))?;
            let plugin = StoredPlugin {
                id,
                name: name.to_owned(),
                version: version.to_owned(),
                sha256,
                uploaded_at: crate::dispatch::whole(now),
            };
            let after =
                serde_json::json!({ "id": id.get(), "name": name, "version": version, "sha256": plugin.sha256 })
                    .to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "upload_plugin",
                &id.to_string(),
                None,
                Some(&after),
            )
            .await?;
            Ok(plugin)
        })
    }

    pub(super) async fn plugin(conn: Conn<'_>, id: PluginId) -> Result<Option<StoredPlugin>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{PLUGIN_COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            row.as_ref().map(plugin_from).transpose()
        })
    }

    pub(super) async fn plugins(conn: Conn<'_>) -> Result<Vec<StoredPlugin>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{PLUGIN_COLS} ORDER BY id");
            let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
            rows.iter().map(plugin_from).collect()
        })
    }

    pub(super) async fn plugin_wasm(conn: Conn<'_>, id: PluginId) -> Result<Option<Vec<u8>>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar("SELECT wasm FROM plugins WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?)
        })
    }

    pub(super) async fn plugin_users(conn: Conn<'_>, id: PluginId) -> Result<Vec<BundleId>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(
                sqlx::query_scalar("SELECT bundle FROM policy_bundle_plugins WHERE plugin = $1 ORDER BY bundle")
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?,
            )
        })
    }

    pub(super) async fn delete_plugin(
        conn: Conn<'_>,
        actor: &str,
        before: &StoredPlugin,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM plugins WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            let json = serde_json::json!({ "id": before.id.get(), "name": before.name, "version": before.version, "sha256": before.sha256 }).to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "delete_plugin",
                &before.id.to_string(),
                Some(&json),
                None,
            )
            .await
        })
    }

    pub(super) async fn insert_bundle(
        conn: Conn<'_>,
        actor: &str,
        draft: &StoredBundle,
    ) -> Result<StoredBundle, StoreError> {
        each_backend!(conn, |conn| {
            let id: BundleId = sqlx::query_scalar(
                "INSERT INTO policy_bundles (site, name, version, manifest, sha256, active, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, FALSE, $6) RETURNING id",
            )
            .bind(draft.site.map(|s| i64::from(s.0)))
            .bind(&draft.name)
            .bind(&draft.version)
            .bind(&draft.manifest)
            .bind(&draft.sha256)
            .bind(draft.uploaded_at.as_second())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                StoreError::from(e).duplicate(
                    format!("bundle `{}` `{}`", draft.name, draft.version),
                    "that version was uploaded already".to_owned(),
                )
            })?;
            for plugin in &draft.plugins {
                sqlx::query("INSERT INTO policy_bundle_plugins (bundle, plugin) VALUES ($1, $2)")
                    .bind(id)
                    .bind(plugin)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| StoreError::from(e).unknown_reference(id.to_string(), plugin.to_string()))?;
            }
            let bundle = StoredBundle { id, ..draft.clone() };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                draft.uploaded_at.as_second(),
                actor,
                "upload_bundle",
                &id.to_string(),
                None,
                Some(&bundle_json(&bundle)),
            )
            .await?;
            Ok(bundle)
        })
    }

    pub(crate) async fn bundle(conn: Conn<'_>, id: BundleId) -> Result<Option<StoredBundle>, StoreError> {
        each_backend!(conn, |conn| {
            let sql = format!("{BUNDLE_COLS} WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
            match row {
                Some(r) => Ok(Some(bundle_from(Conn::from(&mut *conn), &r).await?)),
                None => Ok(None),
            }
        })
    }

    pub(super) async fn bundles(
        conn: Conn<'_>,
        site: Option<SiteId>,
        only_active: bool,
    ) -> Result<Vec<StoredBundle>, StoreError> {
        each_backend!(conn, |conn| {
            let active = if only_active { " AND active" } else { "" };
            let rows = match site {
                Some(site) => {
                    let sql = format!("{BUNDLE_COLS} WHERE site = $1{active} ORDER BY id");
                    sqlx::query(&sql).bind(i64::from(site.0)).fetch_all(&mut *conn).await?
                }
                None => {
                    let sql = format!("{BUNDLE_COLS} WHERE site IS NULL{active} ORDER BY id");
                    sqlx::query(&sql).fetch_all(&mut *conn).await?
                }
            };
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(bundle_from(Conn::from(&mut *conn), r).await?);
            }
            Ok(out)
        })
    }

    pub(crate) async fn activate(
        conn: Conn<'_>,
        actor: &str,
        before: &StoredBundle,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            // Deactivate first: the one-active index holds at every statement.
            sqlx::query("UPDATE policy_bundles SET active = FALSE WHERE COALESCE(site, 0) = $1 AND active")
                .bind(before.site.map_or(0, |s| i64::from(s.0)))
                .execute(&mut *conn)
                .await?;
            // A sequence, not a time: two activations in one second stay ordered.
            sqlx::query(
                "UPDATE policy_bundles SET active = TRUE, \
             activation_seq = (SELECT COALESCE(MAX(activation_seq), 0) + 1 FROM policy_bundles) WHERE id = $1",
            )
            .bind(before.id)
            .execute(&mut *conn)
            .await?;
            let after = StoredBundle {
                active: true,
                ..before.clone()
            };
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "activate_bundle",
                &before.id.to_string(),
                Some(&bundle_json(before)),
                Some(&bundle_json(&after)),
            )
            .await
        })
    }

    pub(super) async fn previous_bundle(conn: Conn<'_>, site: Option<SiteId>) -> Result<Option<BundleId>, StoreError> {
        each_backend!(conn, |conn| {
            Ok(sqlx::query_scalar(
            "SELECT id FROM policy_bundles WHERE COALESCE(site, 0) = $1 AND NOT active AND activation_seq IS NOT NULL \
             ORDER BY activation_seq DESC LIMIT 1",
        )
        .bind(site.map_or(0, |s| i64::from(s.0)))
        .fetch_optional(&mut *conn)
        .await?)
        })
    }

    pub(super) async fn delete_bundle(
        conn: Conn<'_>,
        actor: &str,
        before: &StoredBundle,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM policy_bundles WHERE id = $1")
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "delete_bundle",
                &before.id.to_string(),
                Some(&bundle_json(before)),
                None,
            )
            .await
        })
    }

    pub(crate) async fn door_rule_chain(conn: Conn<'_>, door: DoorId) -> Result<Option<DoorRuleChain>, StoreError> {
        each_backend!(conn, |conn| {
            let rows =
                sqlx::query("SELECT rule, fail_safe, config FROM door_rule_chains WHERE door = $1 ORDER BY position")
                    .bind(i64::from(door.0))
                    .fetch_all(&mut *conn)
                    .await?;
            let rules = rows
                .iter()
                .map(|r| {
                    Ok(ChainedRule {
                        rule: r.col(0)?,
                        fail_safe: r.col(1)?,
                        config: config_from_text(&r.col::<String>(2)?)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((!rules.is_empty()).then_some(DoorRuleChain { door, rules }))
        })
    }

    pub(super) async fn door_rules(conn: Conn<'_>) -> Result<Vec<DoorRuleChain>, StoreError> {
        each_backend!(conn, |conn| {
            let rows =
                sqlx::query("SELECT door, rule, fail_safe, config FROM door_rule_chains ORDER BY door, position")
                    .fetch_all(&mut *conn)
                    .await?;
            let mut chains: Vec<DoorRuleChain> = Vec::new();
            for r in &rows {
                let door = DoorId(codec::id32(r.col::<i64>(0)?, "door")?);
                let link = ChainedRule {
                    rule: r.col(1)?,
                    fail_safe: r.col(2)?,
                    config: config_from_text(&r.col::<String>(3)?)?,
                };
                match chains.last_mut() {
                    Some(chain) if chain.door == door => chain.rules.push(link),
                    _ => chains.push(DoorRuleChain {
                        door,
                        rules: vec![link],
                    }),
                }
            }
            Ok(chains)
        })
    }

    pub(crate) async fn put_door_rule_chain(
        conn: Conn<'_>,
        actor: &str,
        before: Option<&DoorRuleChain>,
        after: &DoorRuleChain,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM door_rule_chains WHERE door = $1")
                .bind(i64::from(after.door.0))
                .execute(&mut *conn)
                .await?;
            for (position, link) in after.rules.iter().enumerate() {
                sqlx::query(
                "INSERT INTO door_rule_chains (door, position, rule, fail_safe, config, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(i64::from(after.door.0))
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&link.rule)
            .bind(link.fail_safe)
            .bind(config_text(&link.config))
            .bind(now.as_second())
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from(e).unknown_reference("door rule".to_owned(), format!("door:{}", after.door.0)))?;
            }
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "attach_door_rule",
                &format!("door_rule:{}", after.door.0),
                before.map(chain_json).as_deref(),
                Some(&chain_json(after)),
            )
            .await
        })
    }

    pub(crate) async fn audit_rule_state_reset(
        conn: Conn<'_>,
        actor: &str,
        rule: &str,
        site: SiteId,
        scope: codec::RuleScope,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            let before = serde_json::json!({ "rule": rule, "site": site.0, "scope": scope.kind(), "id": scope.id() })
                .to_string();
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "reset_rule_state",
                &format!("rule_state:{rule}"),
                Some(&before),
                None,
            )
            .await
        })
    }

    pub(crate) async fn delete_door_rule_chain(
        conn: Conn<'_>,
        actor: &str,
        before: &DoorRuleChain,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            sqlx::query("DELETE FROM door_rule_chains WHERE door = $1")
                .bind(i64::from(before.door.0))
                .execute(&mut *conn)
                .await?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "detach_door_rule",
                &format!("door_rule:{}", before.door.0),
                Some(&chain_json(before)),
                None,
            )
            .await
        })
    }

    pub(super) async fn opening_hours(
        conn: Conn<'_>,
        site: Option<SiteId>,
    ) -> Result<Vec<(SiteId, Schedule)>, StoreError> {
        each_backend!(conn, |conn| {
            let rows = match site {
                Some(site) => {
                    sqlx::query("SELECT site, periods, date_first, date_last FROM site_opening_hours WHERE site = $1")
                        .bind(i64::from(site.0))
                        .fetch_all(&mut *conn)
                        .await?
                }
                None => {
                    sqlx::query("SELECT site, periods, date_first, date_last FROM site_opening_hours ORDER BY site")
                        .fetch_all(&mut *conn)
                        .await?
                }
            };
            rows.iter()
                .map(|r| {
                    let site: i64 = r.col(0)?;
                    let periods: String = r.col(1)?;
                    let periods: Vec<PeriodDto> = serde_json::from_str(&periods).map_err(StoreError::internal)?;
                    let first: Option<String> = r.col(2)?;
                    let last: Option<String> = r.col(3)?;
                    Ok((
                        SiteId(codec::id32(site, "site")?),
                        codec::schedule(&periods, first.as_deref(), last.as_deref())?,
                    ))
                })
                .collect()
        })
    }

    pub(crate) async fn put_opening_hours(
        conn: Conn<'_>,
        actor: &str,
        site: SiteId,
        hours: Option<&Schedule>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        each_backend!(conn, |conn| {
            let before = opening_hours(Conn::from(&mut *conn), Some(site))
                .await?
                .pop()
                .map(|(_, s)| hours_json(&s))
                .transpose()?;
            match hours {
                Some(schedule) => {
                    let periods = serde_json::to_string(&codec::periods_dto(schedule)).map_err(StoreError::internal)?;
                    let range = schedule.date_range();
                    sqlx::query(
                    "INSERT INTO site_opening_hours (site, periods, date_first, date_last, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (site) DO UPDATE SET periods = excluded.periods, date_first = excluded.date_first, \
                     date_last = excluded.date_last, updated_at = excluded.updated_at",
                )
                .bind(i64::from(site.0))
                .bind(periods)
                .bind(range.map(|r| r.first.to_string()))
                .bind(range.map(|r| r.last.to_string()))
                .bind(now.as_second())
                .execute(&mut *conn)
                .await
                .map_err(|e| StoreError::from(e).unknown_reference("opening hours".to_owned(), format!("site:{}", site.0)))?;
                }
                None => {
                    sqlx::query("DELETE FROM site_opening_hours WHERE site = $1")
                        .bind(i64::from(site.0))
                        .execute(&mut *conn)
                        .await?;
                }
            }
            let after = hours.map(hours_json).transpose()?;
            crate::sql::insert_audit(
                Conn::from(&mut *conn),
                None,
                now.as_second(),
                actor,
                "set_opening_hours",
                &format!("site:{}", site.0),
                before.as_deref(),
                after.as_deref(),
            )
            .await
        })
    }
}

fn hours_json(schedule: &Schedule) -> Result<String, StoreError> {
    let range = schedule.date_range();
    serde_json::to_string(&serde_json::json!({
        "periods": codec::periods_dto(schedule),
        "date_first": range.map(|r| r.first.to_string()),
        "date_last": range.map(|r| r.last.to_string()),
    }))
    .map_err(StoreError::internal)
}

pub(crate) fn bundle_not_found(id: BundleId) -> StoreError {
    StoreError::NotFound { entity: id.to_string() }
}

/// The stored policy: plugins, bundles, door rules and opening hours: [`Store::policy_records`].
#[derive(Clone, Copy, Debug)]
pub struct PolicyRecords<'s> {
    pub(crate) store: &'s Store,
}

impl Store {
    /// The stored policy: plugins, bundles, door rules and opening hours.
    #[must_use]
    pub fn policy_records(&self) -> PolicyRecords<'_> {
        PolicyRecords { store: self }
    }
}

impl PolicyRecords<'_> {
    /// Store a plugin module as `name` `version`. The module must at least look like
    /// WebAssembly; the plugin host validates the rest when a bundle loads it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed name or version, or bytes that are empty,
    /// oversized or not WebAssembly; [`StoreError::Duplicate`] for a version uploaded
    /// already.
    pub async fn upload_plugin(
        &self,
        actor: &str,
        name: &str,
        version: &str,
        wasm: &[u8],
        now: Timestamp,
    ) -> Result<StoredPlugin, StoreError> {
        check_name("plugin name", name)?;
        check_name("plugin version", version)?;
        if wasm.len() > MAX_PLUGIN_BYTES {
            return Err(StoreError::invalid(format!(
                "a plugin module has at most {MAX_PLUGIN_BYTES} bytes, found {}",
                wasm.len()
            )));
        }
        if wasm.get(..4) != Some(b"\0asm".as_slice()) {
            return Err(StoreError::invalid(
                "the plugin module is not WebAssembly (no `\\0asm` header)",
            ));
        }
        let mut db = self.store.writer().await?;
        let out = queries::insert_plugin(db.conn(), actor, name, version, wasm, now).await?;
        db.commit().await?;
        Ok(out)
    }

    /// The plugin `id`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn plugin(&self, id: PluginId) -> Result<Option<StoredPlugin>, StoreError> {
        queries::plugin(self.store.reader().await?.conn(), id).await
    }

    /// Every uploaded plugin, oldest first.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn plugins(&self) -> Result<Vec<StoredPlugin>, StoreError> {
        queries::plugins(self.store.reader().await?.conn()).await
    }

    /// The module of plugin `id`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn plugin_wasm(&self, id: PluginId) -> Result<Option<Vec<u8>>, StoreError> {
        queries::plugin_wasm(self.store.reader().await?.conn(), id).await
    }

    /// Delete plugin `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown plugin; [`StoreError::InUse`] while a
    /// bundle deploys it.
    pub async fn delete_plugin(&self, actor: &str, id: PluginId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::plugin(db.conn(), id)
            .await?
            .ok_or_else(|| StoreError::NotFound { entity: id.to_string() })?;
        if let Some(bundle) = queries::plugin_users(db.conn(), id).await?.first() {
            return Err(StoreError::InUse {
                entity: id.to_string(),
                used_by: bundle.to_string(),
            });
        }
        queries::delete_plugin(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Store a bundle (inactive) for `site`, or globally: its manifest and the uploaded
    /// plugins it deploys.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed name, version or manifest (empty,
    /// oversized or not TOML); [`StoreError::ForeignKey`] for an unknown site or plugin;
    /// [`StoreError::Duplicate`] for a version uploaded already.
    #[expect(clippy::too_many_arguments, reason = "a bundle's fields, its maker and the time")]
    pub async fn upload_bundle(
        &self,
        actor: &str,
        site: Option<SiteId>,
        name: &str,
        version: &str,
        manifest: &str,
        plugins: &[PluginId],
        now: Timestamp,
    ) -> Result<StoredBundle, StoreError> {
        check_name("bundle name", name)?;
        check_name("bundle version", version)?;
        if manifest.trim().is_empty() || manifest.len() > MAX_MANIFEST_BYTES {
            return Err(StoreError::invalid(format!(
                "a bundle manifest has 1 to {MAX_MANIFEST_BYTES} bytes, found {}",
                manifest.len()
            )));
        }
        if let Err(e) = manifest.parse::<toml::Table>() {
            return Err(StoreError::invalid(format!(
                "the bundle manifest is not TOML: {}",
                e.message()
            )));
        }
        let mut plugins = plugins.to_vec();
        plugins.sort_unstable();
        plugins.dedup();
        let draft = StoredBundle {
            id: BundleId(0),
            site,
            name: name.to_owned(),
            version: version.to_owned(),
            manifest: manifest.to_owned(),
            sha256: secrets::sha256_hex(manifest.as_bytes()),
            active: false,
            uploaded_at: crate::dispatch::whole(now),
            plugins,
        };
        let mut db = self.store.writer().await?;
        let out = queries::insert_bundle(db.conn(), actor, &draft).await?;
        db.commit().await?;
        Ok(out)
    }

    /// The bundle that was in force for `site` (`None`: the global one) before the one
    /// in force now: the target of a rollback.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn previous_bundle(&self, site: Option<SiteId>) -> Result<Option<StoredBundle>, StoreError> {
        let id = queries::previous_bundle(self.store.reader().await?.conn(), site).await?;
        match id {
            Some(id) => self.bundle(id).await,
            None => Ok(None),
        }
    }

    /// The bundle `id`.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn bundle(&self, id: BundleId) -> Result<Option<StoredBundle>, StoreError> {
        queries::bundle(self.store.reader().await?.conn(), id).await
    }

    /// The bundles of `site` (`None`: the global ones), oldest first.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn bundles(&self, site: Option<SiteId>) -> Result<Vec<StoredBundle>, StoreError> {
        queries::bundles(self.store.reader().await?.conn(), site, false).await
    }

    /// The bundle in force for `site`: its own active one, else the active global one.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn active_bundle(&self, site: Option<SiteId>) -> Result<Option<StoredBundle>, StoreError> {
        let mut db = self.store.reader().await?;
        let own = match site {
            Some(_) => queries::bundles(db.conn(), site, true).await?.pop(),
            None => None,
        };
        Ok(match own {
            Some(b) => Some(b),
            None => queries::bundles(db.conn(), None, true).await?.pop(),
        })
    }

    /// Make bundle `id` the one in force for its site (or globally), retiring the one
    /// before it in the same transaction, which also writes a change-log row so that
    /// every node's plugin host hears of it in revision order. The caller has loaded and
    /// validated it with the plugin host first.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown bundle.
    pub async fn activate_bundle(&self, actor: &str, id: BundleId) -> Result<(StoredBundle, Revision), StoreError> {
        let written = self
            .store
            .commit(actor, WriteOp::Policy(PolicyWrite::Activate(id)))
            .await?;
        let bundle = self.bundle(id).await?.ok_or_else(|| bundle_not_found(id))?;
        Ok((bundle, written.revision))
    }

    /// Delete bundle `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown bundle; [`StoreError::InUse`] for the
    /// active one (activate another first).
    pub async fn delete_bundle(&self, actor: &str, id: BundleId, now: Timestamp) -> Result<(), StoreError> {
        let mut db = self.store.writer().await?;
        let before = queries::bundle(db.conn(), id)
            .await?
            .ok_or_else(|| bundle_not_found(id))?;
        if before.active {
            return Err(StoreError::InUse {
                entity: id.to_string(),
                used_by: "its site, as the active bundle".to_owned(),
            });
        }
        queries::delete_bundle(db.conn(), actor, &before, now).await?;
        db.commit().await?;
        Ok(())
    }

    /// Attach the door rule named `rule` to `door` as its only rule (replacing any chain),
    /// with no configuration of its own. See [`PolicyRecords::set_door_rules`].
    ///
    /// # Errors
    /// As [`PolicyRecords::set_door_rules`].
    pub async fn attach_door_rule(
        &self,
        actor: &str,
        door: DoorId,
        rule: &str,
        fail_safe: bool,
    ) -> Result<(DoorRuleChain, Revision), StoreError> {
        self.set_door_rules(actor, door, vec![ChainedRule::new(rule, fail_safe)])
            .await
    }

    /// Set `door`'s chain of rules (replacing any), in the order they run, with a
    /// change-log row that carries it to every node. Whether each rule exists in the
    /// bundle in force and takes its configuration is the plugin host's call, made by
    /// the caller before this.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty chain (detach instead), a chain longer than
    /// [`MAX_RULE_CHAIN`], a malformed rule name, a rule named twice, or a configuration
    /// over [`MAX_RULE_CONFIG_BYTES`]; [`StoreError::ForeignKey`] for an unknown door.
    pub async fn set_door_rules(
        &self,
        actor: &str,
        door: DoorId,
        rules: Vec<ChainedRule>,
    ) -> Result<(DoorRuleChain, Revision), StoreError> {
        check_rule_chain(&rules)?;
        let after = DoorRuleChain { door, rules };
        let written = self
            .store
            .commit(actor, WriteOp::Policy(PolicyWrite::Attach(after.clone())))
            .await?;
        Ok((after, written.revision))
    }

    /// Remove every rule of `door`, with a change-log row that carries it to every node.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the door has none.
    pub async fn detach_door_rule(&self, actor: &str, door: DoorId) -> Result<Revision, StoreError> {
        Ok(self
            .store
            .commit(actor, WriteOp::Policy(PolicyWrite::Detach(door)))
            .await?
            .revision)
    }

    /// Record an admin's reset of the state door rule `rule` keeps for a person, a door or
    /// `site` itself, audited, with a change-log row that carries it to every node (each
    /// node keeps rule states in memory and forgets this one when it applies the row).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed rule name; database errors.
    pub async fn reset_rule_state(
        &self,
        actor: &str,
        rule: &str,
        site: SiteId,
        scope: codec::RuleScope,
    ) -> Result<Revision, StoreError> {
        check_name("rule name", rule)?;
        Ok(self
            .store
            .commit(
                actor,
                WriteOp::Policy(PolicyWrite::ResetRuleState {
                    rule: rule.to_owned(),
                    site,
                    scope,
                }),
            )
            .await?
            .revision)
    }

    /// `door`'s chain of rules, in order; `None` when it has none.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn door_rule_chain(&self, door: DoorId) -> Result<Option<DoorRuleChain>, StoreError> {
        queries::door_rule_chain(self.store.reader().await?.conn(), door).await
    }

    /// Every door's chain of rules, by door; what the plugin host's door rules load at
    /// start.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn door_rules(&self) -> Result<Vec<DoorRuleChain>, StoreError> {
        queries::door_rules(self.store.reader().await?.conn()).await
    }

    /// Set (or clear, with `None`) `site`'s opening hours, with a change-log row that
    /// carries them to every node.
    ///
    /// # Errors
    /// [`StoreError::ForeignKey`] for an unknown site.
    pub async fn set_opening_hours(
        &self,
        actor: &str,
        site: SiteId,
        hours: Option<&Schedule>,
    ) -> Result<Revision, StoreError> {
        Ok(self
            .store
            .commit(actor, WriteOp::Policy(PolicyWrite::Hours(site, hours.cloned())))
            .await?
            .revision)
    }

    /// `site`'s opening hours, if set.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn opening_hours(&self, site: SiteId) -> Result<Option<Schedule>, StoreError> {
        let hours = queries::opening_hours(self.store.reader().await?.conn(), Some(site)).await?;
        Ok(hours.into_iter().next_back().map(|(_, s)| s))
    }

    /// Every site's opening hours, by site.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn all_opening_hours(&self) -> Result<Vec<(SiteId, Schedule)>, StoreError> {
        queries::opening_hours(self.store.reader().await?.conn(), None).await
    }
}
