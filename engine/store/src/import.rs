//! Bulk import of people, their tags and their group memberships: many rows in one
//! transaction, one revision per change, so that followers, the change feed and the IQ
//! link see ordinary changes. People carry the id they have in the system the site
//! imports from (`external_id`, unique per site), which is how a re-import finds them.
//!
//! The caller (the admin API) decides what each row needs: it resolves external ids
//! ([`Model::people_by_external_id`]), checks roles, vouchers, tags and groups, and hands
//! the store only what is to be written. The core still validates every change.

use crate::error::StoreError;
use crate::store::{FollowUp, Model};
use keyway_core::{CredentialId, CredentialRecord, GroupId, PersonId, RoleId, SiteId};
use std::collections::HashMap;

/// Longest external id, in characters.
pub const MAX_EXTERNAL_ID: usize = 128;

/// Most rows one [`Model::import_people`] call takes.
pub const MAX_IMPORT_ROWS: usize = 5_000;

/// A tag an imported person is to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportTag {
    /// A tag not on the site yet: its UID.
    New(Vec<u8>),
    /// An unassigned tag of the site, to be assigned to the person.
    Assign(CredentialRecord),
}

/// What to write for one imported row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportPerson {
    /// The person, when they exist already; `None` makes them.
    pub person: Option<PersonId>,
    /// Their id in the system imported from (kept for a new person).
    pub external_id: String,
    /// Their name (kept for a new person).
    pub name: String,
    /// Their role (for a new person).
    pub role: RoleId,
    /// Tags to add or assign.
    pub tags: Vec<ImportTag>,
    /// Groups to add them to (ones they are not in).
    pub groups: Vec<GroupId>,
}

/// What was written for one row, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The person, made or found.
    pub person: PersonId,
    /// Their tags that were added or assigned.
    pub tags: Vec<CredentialId>,
}

/// Refuse an external id that is empty, too long or not printable.
///
/// # Errors
/// [`StoreError::Invalid`] naming the rule.
pub fn check_external_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.chars().count() > MAX_EXTERNAL_ID || id.chars().any(char::is_control) || id.trim() != id {
        return Err(StoreError::invalid(format!(
            "an external id has 1 to {MAX_EXTERNAL_ID} characters, no control characters and no \
             surrounding spaces"
        )));
    }
    Ok(())
}

mod queries {
    //! The SQL of this concern, compiled for both backends (see `crate::dispatch`).
    use super::*;
    use crate::dispatch::Conn;

    pub(super) async fn people_by_external_id(
        conn: Conn<'_>,
        site: SiteId,
        ids: &[String],
    ) -> Result<HashMap<String, PersonId>, StoreError> {
        each_backend!(conn, |conn, ops| {
            let mut found = HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(1000) {
                let mut qb = sqlx::QueryBuilder::<ops::Db>::new("SELECT external_id, id FROM people WHERE site = ");
                qb.push_bind(i64::from(site.0)).push(" AND external_id IN (");
                let mut list = qb.separated(", ");
                for id in chunk {
                    list.push_bind(id.as_str());
                }
                qb.push(")");
                let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                for (external, id) in rows {
                    let id = u32::try_from(id).map_err(StoreError::internal)?;
                    found.insert(external, PersonId(id));
                }
            }
            Ok(found)
        })
    }
}

impl Model<'_> {
    /// The people of `site` with these external ids, by external id; ids nobody has are
    /// left out.
    ///
    /// # Errors
    /// If the database fails.
    pub async fn people_by_external_id(
        &self,
        site: SiteId,
        ids: &[String],
    ) -> Result<HashMap<String, PersonId>, StoreError> {
        queries::people_by_external_id(self.store.reader().await?.conn(), site, ids).await
    }

    /// Write `rows` on `site` as `actor` in one transaction: new people (with their name
    /// and external id), their tags, their group memberships, one revision per change,
    /// each audited, plus an `import` audit row with the counts. `follow_up` sees the
    /// snapshots before and after the whole batch. Returns when this node's snapshot holds
    /// every change.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for more than [`MAX_IMPORT_ROWS`] rows or a bad external
    /// id; [`StoreError::Duplicate`] for an external id or a tag taken meanwhile; as
    /// [`Model::write`] otherwise. Either way nothing was written.
    pub async fn import_people(
        &self,
        actor: &str,
        site: SiteId,
        rows: Vec<ImportPerson>,
        follow_up: Option<FollowUp>,
    ) -> Result<Vec<Imported>, StoreError> {
        if rows.len() > MAX_IMPORT_ROWS {
            return Err(StoreError::invalid(format!(
                "an import takes at most {MAX_IMPORT_ROWS} rows at once, found {}",
                rows.len()
            )));
        }
        for row in rows.iter().filter(|r| r.person.is_none()) {
            check_external_id(&row.external_id)?;
        }
        self.store.commit_import(actor, site, rows, follow_up).await
    }
}
