//! Bulk import of people, tags and group memberships (what `keyway import` sends, a batch
//! of CSV rows at a time). Each row is judged on its own: created, updated (a tag or a
//! group added to someone imported before), skipped (nothing to do) or refused with the
//! reason; what is accepted is written in one transaction. People are found again by
//! their external id, so importing the same file twice changes nothing the second time.
//! Roles and vouchers apply as for one person made by hand; a dry run reports the same
//! outcomes and writes nothing.

use crate::auth::{Access, Caller, require};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path};
use crate::routes::model::check_name;
use crate::routes::vouchers::admit_users;
use crate::state::AppState;
use axum::extract::State;
use keyway_core::{CredentialKind, GroupId, RoleId, SiteId};
use keyway_plugin_host::Capability;
use keyway_store::{ImportPerson, ImportTag, Named, check_external_id};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use utoipa::ToSchema;

/// Most rows in one request; `keyway import` sends files in batches of this size.
pub const MAX_ROWS_PER_REQUEST: usize = 1_000;
/// Most tags on one row.
pub const MAX_TAGS_PER_ROW: usize = 8;
/// Most groups on one row.
pub const MAX_GROUPS_PER_ROW: usize = 32;

/// A batch of rows to import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRequest {
    /// Judge every row and report, but write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The rows, at most 1,000.
    pub rows: Vec<ImportRow>,
}

/// One person to import.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRow {
    /// Where the row came from (a line of the file), echoed in the report.
    pub line: Option<u64>,
    /// The person's id in the system imported from: unique on the site, how a re-import
    /// finds them.
    pub external_id: String,
    /// Their name.
    pub name: String,
    /// Their role (default `basic_user`); one the caller may grant.
    pub role: Option<String>,
    /// Tag UIDs in hex: new tags are made, unassigned ones assigned.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Names of access groups of the site to add them to.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What became of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// A new person (with their tags and groups).
    Created,
    /// Someone imported before got a tag or a group.
    Updated,
    /// Nothing to do: the person is there with everything the row names.
    Skipped,
    /// Not written; `detail` says why.
    Refused,
}

/// The report on one row.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RowReport {
    /// The row's `line`, as sent.
    pub line: Option<u64>,
    /// The row's external id, as sent.
    pub external_id: String,
    /// What became of it.
    pub outcome: Outcome,
    /// The person (not in a dry run for a new one).
    pub person: Option<u32>,
    /// Why it was refused, or what was done.
    pub detail: String,
}

/// The report on a batch.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportReport {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Rows created.
    pub created: u32,
    /// Rows updated.
    pub updated: u32,
    /// Rows skipped.
    pub skipped: u32,
    /// Rows refused.
    pub refused: u32,
    /// The revision after the import (at least), when something was written.
    pub revision: Option<u64>,
    /// Every row, in the order sent.
    pub rows: Vec<RowReport>,
}

/// A row that passed the checks of its own fields.
struct Parsed {
    external_id: String,
    name: String,
    role: RoleId,
    tags: Vec<(String, Vec<u8>)>,
    groups: Vec<GroupId>,
}

/// Import people, tags and group memberships (see `docs/import.md`).
#[utoipa::path(post, path = "/v1/sites/{site}/import", tag = "people", request_body = ImportRequest,
    params(("site" = u32, Path, description = "The site")),
    responses((status = 200, body = ImportReport), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn import_people(
    State(state): State<AppState>,
    caller: Caller,
    Path(site): Path<u32>,
    Json(body): Json<ImportRequest>,
) -> Result<Json<ImportReport>, ApiError> {
    let site = SiteId(site);
    let (me, bundle) = caller
        .with_capability(&state, Access::Write, site, Capability::PEOPLE_INVITE)
        .await?;
    if body.rows.len() > MAX_ROWS_PER_REQUEST {
        return Err(ApiError::Unprocessable {
            code: "too_many_rows",
            message: format!(
                "an import request takes at most {MAX_ROWS_PER_REQUEST} rows, found {}; send the rest in \
                 another request",
                body.rows.len()
            ),
            details: Vec::new(),
        });
    }
    if body.rows.iter().any(|r| !r.groups.is_empty()) {
        require(bundle.roles(), &me, Capability::RIGHTS_GRANT)?;
    }
    let store = state.node().store();
    let groups = group_names(&state, site).await?;
    let roles = bundle.roles();

    // Each row's own fields, then duplicates within the request.
    let mut judged: Vec<Result<Parsed, String>> = body
        .rows
        .iter()
        .map(|row| parse_row(row, roles, me.role, &groups))
        .collect();
    let mut seen_ids: HashMap<&str, usize> = HashMap::new();
    let mut seen_tags: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, row) in body.rows.iter().enumerate() {
        let Some(Ok(parsed)) = judged.get(i) else { continue };
        let mut clash = seen_ids
            .get(row.external_id.as_str())
            .map(|first| format!("external id `{}` is on row {} already", row.external_id, first + 1));
        for (text, secret) in &parsed.tags {
            if clash.is_none()
                && let Some(first) = seen_tags.get(secret)
            {
                clash = Some(format!("tag `{text}` is on row {} already", first + 1));
            }
        }
        if let Some(clash) = clash {
            judged[i] = Err(clash);
            continue;
        }
        seen_ids.insert(row.external_id.as_str(), i);
        for (_, secret) in &parsed.tags {
            seen_tags.insert(secret.clone(), i);
        }
    }

    // Who exists, and what each row needs on the snapshot as it is.
    let wanted: Vec<String> = judged
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|p| p.external_id.clone()))
        .collect();
    let existing = store.model().people_by_external_id(site, &wanted).await?;
    let snapshot = state.node().snapshot().load_full();
    let mut plans: Vec<Result<(Outcome, ImportPerson), String>> = Vec::with_capacity(judged.len());
    for parsed in judged {
        plans.push(parsed.and_then(|p| {
            let person = existing.get(&p.external_id).copied();
            if let Some(id) = person
                && snapshot.person_record(id).is_none_or(|r| r.site != site)
            {
                return Err(format!("person {} of external id `{}` is gone", id.0, p.external_id));
            }
            let mut tags = Vec::new();
            for (text, secret) in p.tags {
                match snapshot.credential_by_secret(site, CredentialKind::Tag, &secret) {
                    None => tags.push(ImportTag::New(secret)),
                    Some(c) if c.owner.is_none() => tags.push(ImportTag::Assign(c)),
                    Some(c) if person.is_some() && c.owner == person => {}
                    Some(_) => return Err(format!("tag `{text}` belongs to another person")),
                }
            }
            let held: &[GroupId] = person.and_then(|id| snapshot.person_groups(id)).unwrap_or(&[]);
            let groups: Vec<GroupId> = p.groups.into_iter().filter(|g| !held.contains(g)).collect();
            let outcome = match person {
                None => Outcome::Created,
                Some(_) if tags.is_empty() && groups.is_empty() => Outcome::Skipped,
                Some(_) => Outcome::Updated,
            };
            Ok((
                outcome,
                ImportPerson {
                    person,
                    external_id: p.external_id,
                    name: p.name,
                    role: p.role,
                    tags,
                    groups,
                },
            ))
        }));
    }

    // The voucher: new people beyond what it allows are refused, in row order.
    let new_people = plans.iter().filter(|p| matches!(p, Ok((Outcome::Created, _)))).count();
    let follow_up = if new_people == 0 {
        None
    } else {
        let (admitted, refusal, follow_up) =
            admit_users(&state, site, u32::try_from(new_people).unwrap_or(u32::MAX)).await?;
        if let Some(refusal) = refusal {
            let mut seen = 0u32;
            for plan in &mut plans {
                if matches!(plan, Ok((Outcome::Created, _))) {
                    seen += 1;
                    if seen > admitted {
                        *plan = Err(refusal.clone());
                    }
                }
            }
        }
        Some(follow_up)
    };

    let mut report = ImportReport {
        dry_run: body.dry_run,
        created: 0,
        updated: 0,
        skipped: 0,
        refused: 0,
        revision: None,
        rows: Vec::with_capacity(plans.len()),
    };
    let mut to_write = Vec::new();
    let mut written_rows = Vec::new();
    for (row, plan) in body.rows.iter().zip(plans) {
        let (outcome, person, detail) = match plan {
            Err(why) => (Outcome::Refused, None, why),
            Ok((outcome, plan)) => {
                let person = plan.person.map(|p| p.0);
                let detail = describe(outcome, &plan);
                if outcome != Outcome::Skipped {
                    written_rows.push(report.rows.len());
                    to_write.push(plan);
                }
                (outcome, person, detail)
            }
        };
        match outcome {
            Outcome::Created => report.created += 1,
            Outcome::Updated => report.updated += 1,
            Outcome::Skipped => report.skipped += 1,
            Outcome::Refused => report.refused += 1,
        }
        report.rows.push(RowReport {
            line: row.line,
            external_id: row.external_id.clone(),
            outcome,
            person,
            detail,
        });
    }
    if body.dry_run || to_write.is_empty() {
        return Ok(Json(report));
    }
    let imported = store
        .model()
        .import_people(&caller.actor(), site, to_write, follow_up)
        .await?;
    for (index, done) in written_rows.into_iter().zip(imported) {
        if let Some(row) = report.rows.get_mut(index) {
            row.person = Some(done.person.0);
        }
    }
    report.revision = Some(state.node().snapshot().load().revision().0);
    Ok(Json(report))
}

/// The site's groups by name (a name two groups share maps to both).
async fn group_names(state: &AppState, site: SiteId) -> Result<HashMap<String, Vec<GroupId>>, ApiError> {
    let mut by_name: HashMap<String, Vec<GroupId>> = HashMap::new();
    for (id, name) in state.node().store().names().list(Named::Group, Some(site)).await? {
        by_name.entry(name).or_default().push(GroupId(id));
    }
    Ok(by_name)
}

/// A row's own fields, checked: the reason for the first thing wrong.
fn parse_row(
    row: &ImportRow,
    roles: &keyway_plugin_host::RoleTable,
    caller_role: RoleId,
    groups: &HashMap<String, Vec<GroupId>>,
) -> Result<Parsed, String> {
    check_external_id(&row.external_id).map_err(|e| match e {
        keyway_store::StoreError::Invalid { message, .. } => message,
        other => other.to_string(),
    })?;
    let name = check_name(&row.name).map_err(|e| e.to_string())?.to_owned();
    let role_name = row.role.as_deref().map_or("basic_user", str::trim);
    let role_name = if role_name.is_empty() { "basic_user" } else { role_name };
    let role = roles
        .by_name(role_name)
        .ok_or_else(|| format!("the bundle in force has no role `{role_name}`"))?;
    if !roles.may_grant(caller_role, role) {
        return Err(format!(
            "your role `{}` may not grant `{role_name}`",
            roles.name(caller_role).unwrap_or("unknown")
        ));
    }
    if row.tags.len() > MAX_TAGS_PER_ROW {
        return Err(format!("a row has at most {MAX_TAGS_PER_ROW} tags"));
    }
    if row.groups.len() > MAX_GROUPS_PER_ROW {
        return Err(format!("a row has at most {MAX_GROUPS_PER_ROW} groups"));
    }
    let mut tags: Vec<(String, Vec<u8>)> = Vec::with_capacity(row.tags.len());
    for text in &row.tags {
        let text = text.trim();
        let secret = hex::decode(text)
            .ok()
            .filter(|s| CredentialKind::Tag.accepts(s))
            .ok_or_else(|| {
                let (min, max) = CredentialKind::Tag.secret_len();
                format!("tag `{}` is not a UID of {min} to {max} bytes in hex", printable(text))
            })?;
        if !tags.iter().any(|(_, s)| *s == secret) {
            tags.push((text.to_owned(), secret));
        }
    }
    let mut ids = Vec::with_capacity(row.groups.len());
    let mut named = HashSet::new();
    for group in &row.groups {
        let group = group.trim();
        if !named.insert(group) {
            continue;
        }
        match groups.get(group).map(Vec::as_slice) {
            Some([id]) => ids.push(*id),
            Some(several) if several.len() > 1 => {
                return Err(format!(
                    "{} groups are named `{}`; rename all but one",
                    several.len(),
                    printable(group)
                ));
            }
            _ => return Err(format!("the site has no group named `{}`", printable(group))),
        }
    }
    Ok(Parsed {
        external_id: row.external_id.clone(),
        name,
        role,
        tags,
        groups: ids,
    })
}

/// At most 64 characters of `text`, control characters escaped, for a message.
fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_default).collect();
    if text.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

fn describe(outcome: Outcome, plan: &ImportPerson) -> String {
    let (tags, groups) = (plan.tags.len(), plan.groups.len());
    match outcome {
        Outcome::Created => format!("new person with {tags} tag(s) and {groups} group(s)"),
        Outcome::Updated => format!("added {tags} tag(s) and {groups} group(s)"),
        Outcome::Skipped => "already imported, with every tag and group of the row".to_owned(),
        Outcome::Refused => String::new(),
    }
}
