//! Incremental changes: each turns a snapshot into the next revision without rebuilding
//! the credential FST.
//!
//! A change is validated against the snapshot it applies to; a refused change leaves
//! nothing behind. Structural edits (sites, calendars, role flags) copy the small tables
//! they touch; credential, person and door edits go to overlays.

use crate::error::ModelError;
use crate::group_list::GroupList;
use crate::ids::{CredentialId, DoorId, GroupId, IqId, PersonId, Revision, ScheduleId, SiteId};
use crate::model::{
    CalendarRecord, CredentialRecord, DoorMode, DoorRecord, GroupRecord, IqRecord, PersonRecord, RoleFlags,
    ScheduleRecord, SiteRecord,
};
use crate::snapshot::{
    CredentialKey, CredentialRow, DoorRow, PersonRow, ScheduleRow, SiteRow, Snapshot, check_credential, check_door,
    clock_for, entity, exempt_table, group_row, put_row,
};
use roaring::RoaringBitmap;
use std::sync::Arc;

/// One mutation of the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Block a person: every credential of theirs is denied.
    BlockPerson(PersonId),
    /// Lift a block.
    UnblockPerson(PersonId),
    /// Revoke a credential.
    RevokeCredential(CredentialId),
    /// Lift a revocation.
    RestoreCredential(CredentialId),
    /// Add a credential, or replace the one with the same id (same site only).
    PutCredential(CredentialRecord),
    /// Remove a credential.
    RemoveCredential(CredentialId),
    /// Add a person to a group.
    Grant {
        /// Who.
        person: PersonId,
        /// Which group.
        group: GroupId,
    },
    /// Take a person out of a group.
    Ungrant {
        /// Who.
        person: PersonId,
        /// Which group.
        group: GroupId,
    },
    /// Add a person, or replace one (same site only).
    PutPerson(PersonRecord),
    /// Remove a person. Their credentials stay, unassigned.
    RemovePerson(PersonId),
    /// Add a door, or replace one (same site only).
    PutDoor(DoorRecord),
    /// Remove a door no group opens.
    RemoveDoor(DoorId),
    /// Set a door's mode.
    SetDoorMode {
        /// Which door.
        door: DoorId,
        /// The new mode.
        mode: DoorMode,
    },
    /// Lock a door down, or lift it.
    SetDoorLockdown {
        /// Which door.
        door: DoorId,
        /// On or off.
        on: bool,
    },
    /// Lock a whole site down, or lift it.
    SetSiteLockdown {
        /// Which site.
        site: SiteId,
        /// On or off.
        on: bool,
    },
    /// Add a group, or replace one (same site only), members included.
    PutGroup(GroupRecord),
    /// Remove a group.
    RemoveGroup(GroupId),
    /// Add a schedule, or replace one (same site only).
    PutSchedule(ScheduleRecord),
    /// Remove a schedule nothing uses.
    RemoveSchedule(ScheduleId),
    /// Add an IQ.
    PutIq(IqRecord),
    /// Remove an IQ no door uses.
    RemoveIq(IqId),
    /// Add a site, or replace its settings.
    PutSite(SiteRecord),
    /// Add a holiday calendar, or replace one.
    PutCalendar(CalendarRecord),
    /// Replace the role flags.
    SetRoles(RoleFlags),
}

impl Snapshot {
    /// The snapshot after `change`, at `revision`. `self` is untouched.
    ///
    /// # Errors
    /// [`ModelError::StaleRevision`] if `revision` is not newer than this snapshot's;
    /// otherwise why the change does not fit the model.
    pub fn apply(&self, revision: Revision, change: &Change) -> Result<Snapshot, ModelError> {
        if revision <= self.revision {
            return Err(ModelError::StaleRevision {
                current: self.revision,
                given: revision,
            });
        }
        let mut next = self.clone();
        next.revision = revision;
        next.apply_in_place(change)?;
        Ok(next)
    }

    /// The snapshot after `changes`, the first at `first` and each next one at the next
    /// revision. `self` is untouched. Cheaper than chaining [`Snapshot::apply`]: the
    /// tables are copied once, not once per change.
    ///
    /// # Errors
    /// The index of the first change refused and why; nothing is returned then.
    pub fn apply_batch(&self, first: Revision, changes: &[Change]) -> Result<Snapshot, (usize, ModelError)> {
        if first <= self.revision {
            return Err((
                0,
                ModelError::StaleRevision {
                    current: self.revision,
                    given: first,
                },
            ));
        }
        let mut next = self.clone();
        for (i, change) in changes.iter().enumerate() {
            next.revision = Revision(first.0.saturating_add(i as u64));
            next.apply_in_place(change).map_err(|e| (i, e))?;
        }
        Ok(next)
    }

    fn person_row(&self, id: PersonId) -> Result<PersonRow, ModelError> {
        self.people
            .get(id.0)
            .cloned()
            .ok_or_else(|| ModelError::NotFound { entity: entity(id) })
    }

    fn door_row(&self, id: DoorId) -> Result<DoorRow, ModelError> {
        self.doors
            .get(id.0)
            .cloned()
            .ok_or_else(|| ModelError::NotFound { entity: entity(id) })
    }

    fn site_row(&self, id: SiteId) -> Result<&SiteRow, ModelError> {
        self.site(id).ok_or_else(|| ModelError::NotFound { entity: entity(id) })
    }

    /// Refuse a record naming a site that does not exist, as `build` does.
    fn require_site(&self, site: SiteId, from: impl std::fmt::Display) -> Result<(), ModelError> {
        match self.site(site) {
            Some(_) => Ok(()),
            None => Err(ModelError::UnknownReference {
                from: from.to_string(),
                to: entity(site),
            }),
        }
    }

    fn apply_in_place(&mut self, change: &Change) -> Result<(), ModelError> {
        match change {
            Change::BlockPerson(p) => {
                self.person_row(*p)?;
                Arc::make_mut(&mut self.blocked).insert(p.0);
            }
            Change::UnblockPerson(p) => {
                self.person_row(*p)?;
                Arc::make_mut(&mut self.blocked).remove(p.0);
            }
            Change::RevokeCredential(c) => {
                self.credential_by_id(*c)
                    .ok_or_else(|| ModelError::NotFound { entity: entity(*c) })?;
                Arc::make_mut(&mut self.revoked).insert(c.0);
            }
            Change::RestoreCredential(c) => {
                self.credential_by_id(*c)
                    .ok_or_else(|| ModelError::NotFound { entity: entity(*c) })?;
                Arc::make_mut(&mut self.revoked).remove(c.0);
            }
            Change::PutCredential(rec) => self.put_credential(rec)?,
            Change::RemoveCredential(c) => {
                self.credential_by_id(*c)
                    .ok_or_else(|| ModelError::NotFound { entity: entity(*c) })?;
                self.unlink_credential(*c);
                Arc::make_mut(&mut self.revoked).remove(c.0);
            }
            Change::Grant { person, group } | Change::Ungrant { person, group } => {
                let grant = matches!(change, Change::Grant { .. });
                let person_row = self.person_row(*person)?;
                let groups = Arc::make_mut(&mut self.groups);
                let Some(row) = groups.get_mut(group.0) else {
                    return Err(ModelError::NotFound { entity: entity(*group) });
                };
                if row.site != person_row.site {
                    return Err(ModelError::CrossSite {
                        from: entity(*group),
                        to: entity(*person),
                    });
                }
                let members = Arc::make_mut(&mut row.members);
                let mut person_row = person_row;
                if grant {
                    members.insert(person.0);
                    person_row.groups = person_row.groups.with(*group);
                } else {
                    members.remove(person.0);
                    person_row.groups = person_row.groups.without(*group);
                }
                self.people.set_row(person.0, Some(person_row));
            }
            Change::PutPerson(rec) => {
                self.require_site(rec.site, rec.id)?;
                let groups = match self.people.get(rec.id.0) {
                    Some(old) if old.site != rec.site => {
                        return Err(ModelError::SiteChange { entity: entity(rec.id) });
                    }
                    Some(old) => old.groups.clone(),
                    None => GroupList::default(),
                };
                if rec.id.0 > crate::snapshot::MAX_ID {
                    return Err(ModelError::IdTooLarge { entity: entity(rec.id) });
                }
                self.people.set_row(
                    rec.id.0,
                    Some(PersonRow {
                        site: rec.site,
                        role: rec.role,
                        groups,
                    }),
                );
                let blocked = Arc::make_mut(&mut self.blocked);
                if rec.blocked {
                    blocked.insert(rec.id.0);
                } else {
                    blocked.remove(rec.id.0);
                }
            }
            Change::RemovePerson(p) => self.remove_person(*p)?,
            Change::PutDoor(rec) => {
                check_door(&self.sites, &self.iqs, &self.schedules, rec)?;
                if rec.id.0 > crate::snapshot::MAX_ID {
                    return Err(ModelError::IdTooLarge { entity: entity(rec.id) });
                }
                let groups = match self.doors.get(rec.id.0) {
                    Some(old) if old.site != rec.site => return Err(ModelError::SiteChange { entity: entity(rec.id) }),
                    Some(old) => old.groups.clone(),
                    None => GroupList::default(),
                };
                let row = DoorRow {
                    site: rec.site,
                    iq: rec.iq,
                    mode: rec.mode,
                    lockdown: rec.lockdown,
                    groups,
                };
                self.doors.set_row(rec.id.0, Some(row));
            }
            Change::RemoveDoor(d) => {
                let row = self.door_row(*d)?;
                if let Some(g) = row.groups.as_slice().first() {
                    return Err(ModelError::InUse {
                        entity: entity(*d),
                        used_by: entity(*g),
                    });
                }
                self.doors.set_row(d.0, None);
            }
            Change::SetDoorMode { door, mode } => {
                let mut row = self.door_row(*door)?;
                let rec = DoorRecord {
                    id: *door,
                    site: row.site,
                    iq: row.iq,
                    mode: *mode,
                    lockdown: row.lockdown,
                };
                check_door(&self.sites, &self.iqs, &self.schedules, &rec)?;
                row.mode = *mode;
                self.doors.set_row(door.0, Some(row));
            }
            Change::SetDoorLockdown { door, on } => {
                let mut row = self.door_row(*door)?;
                row.lockdown = *on;
                self.doors.set_row(door.0, Some(row));
            }
            Change::SetSiteLockdown { site, on } => {
                self.site_row(*site)?;
                if let Some(row) = Arc::make_mut(&mut self.sites).get_mut(site.0) {
                    row.lockdown = *on;
                }
            }
            Change::PutGroup(rec) => self.put_group(rec)?,
            Change::RemoveGroup(g) => {
                let old = self
                    .group(*g)
                    .cloned()
                    .ok_or_else(|| ModelError::NotFound { entity: entity(*g) })?;
                self.relink_group_doors(*g, &old.doors, &[])?;
                self.relink_group_members(*g, &old.members, &RoaringBitmap::new())?;
                put_row(Arc::make_mut(&mut self.groups), g.0, None, *g)?;
            }
            Change::PutSchedule(rec) => {
                self.require_site(rec.site, rec.id)?;
                if let Some(old) = self.schedule(rec.id)
                    && old.site != rec.site
                {
                    return Err(ModelError::SiteChange { entity: entity(rec.id) });
                }
                let row = ScheduleRow {
                    site: rec.site,
                    schedule: rec.schedule.clone(),
                };
                put_row(Arc::make_mut(&mut self.schedules), rec.id.0, Some(row), rec.id)?;
            }
            Change::RemoveSchedule(s) => {
                self.schedule(*s)
                    .ok_or_else(|| ModelError::NotFound { entity: entity(*s) })?;
                if let Some((id, _)) = self.groups.sorted().into_iter().find(|(_, g)| g.schedule == Some(*s)) {
                    return Err(ModelError::InUse {
                        entity: entity(*s),
                        used_by: format!("group:{id}"),
                    });
                }
                if let Some((id, _)) = self.doors.iter().find(|(_, d)| d.mode == DoorMode::OfficeScheduled(*s)) {
                    return Err(ModelError::InUse {
                        entity: entity(*s),
                        used_by: entity(DoorId(id)),
                    });
                }
                put_row(Arc::make_mut(&mut self.schedules), s.0, None, *s)?;
            }
            Change::PutIq(rec) => {
                self.require_site(rec.site, rec.id)?;
                if let Some(site) = self.iq_site(rec.id)
                    && site != rec.site
                {
                    return Err(ModelError::SiteChange { entity: entity(rec.id) });
                }
                put_row(Arc::make_mut(&mut self.iqs), rec.id.0, Some(rec.site), rec.id)?;
            }
            Change::RemoveIq(iq) => {
                self.iq_site(*iq)
                    .ok_or_else(|| ModelError::NotFound { entity: entity(*iq) })?;
                if let Some((id, _)) = self.doors.iter().find(|(_, d)| d.iq == Some(*iq)) {
                    return Err(ModelError::InUse {
                        entity: entity(*iq),
                        used_by: entity(DoorId(id)),
                    });
                }
                put_row(Arc::make_mut(&mut self.iqs), iq.0, None, *iq)?;
            }
            Change::PutSite(rec) => {
                if let Some(cal) = rec.holiday_calendar
                    && self.calendar(cal).is_none()
                {
                    return Err(ModelError::UnknownReference {
                        from: entity(rec.id),
                        to: entity(cal),
                    });
                }
                let row = SiteRow {
                    clock: clock_for(&rec.time_zone, self.sites.iter().map(|(_, s)| &s.clock)),
                    calendar: rec.holiday_calendar,
                    lockdown: rec.lockdown,
                };
                put_row(Arc::make_mut(&mut self.sites), rec.id.0, Some(row), rec.id)?;
            }
            Change::PutCalendar(rec) => {
                put_row(
                    Arc::make_mut(&mut self.calendars),
                    rec.id.0,
                    Some(rec.calendar.clone()),
                    rec.id,
                )?;
            }
            Change::SetRoles(flags) => {
                self.lockdown_exempt = Arc::new(exempt_table(flags));
            }
        }
        Ok(())
    }

    fn put_credential(&mut self, rec: &CredentialRecord) -> Result<(), ModelError> {
        if rec.id.0 > crate::snapshot::MAX_ID {
            return Err(ModelError::IdTooLarge { entity: entity(rec.id) });
        }
        let key = check_credential(&self.sites, |p| self.people.get(p.0).map(|r| r.site), rec)?;
        // A credential stays on its site, as every record does: what was built from it
        // per site (an IQ's offline list) would otherwise keep it.
        if self
            .credential_by_id(rec.id)
            .and_then(|row| CredentialKey::decode(row.key.as_slice()).map(|(_, site, _)| site))
            .is_some_and(|site| site != rec.site)
        {
            return Err(ModelError::SiteChange { entity: entity(rec.id) });
        }
        if let Some(holder) = self.credential(&key)
            && holder.id != rec.id.0
        {
            return Err(ModelError::DuplicateSecret {
                existing: entity(CredentialId(holder.id)),
                claimed_by: entity(rec.id),
            });
        }
        self.unlink_credential(rec.id);
        self.link_credential(CredentialRow::from_record(rec, key));
        let revoked = Arc::make_mut(&mut self.revoked);
        if rec.revoked {
            revoked.insert(rec.id.0);
        } else {
            revoked.remove(rec.id.0);
        }
        Ok(())
    }

    fn remove_person(&mut self, p: PersonId) -> Result<(), ModelError> {
        self.person_row(p)?;
        let mut owned = Vec::new();
        self.for_each_credential(|row| {
            if row.owner() == Some(p) {
                owned.push(*row);
            }
        });
        for mut row in owned {
            row.clear_owner();
            self.unlink_credential(CredentialId(row.id));
            self.link_credential(row);
        }
        let person = self.person_row(p)?;
        if !person.groups.as_slice().is_empty() {
            let groups = Arc::make_mut(&mut self.groups);
            for g in person.groups.as_slice() {
                if let Some(row) = groups.get_mut(g.0) {
                    Arc::make_mut(&mut row.members).remove(p.0);
                }
            }
        }
        Arc::make_mut(&mut self.blocked).remove(p.0);
        self.people.set_row(p.0, None);
        Ok(())
    }

    fn put_group(&mut self, rec: &GroupRecord) -> Result<(), ModelError> {
        if rec.id.0 > crate::snapshot::MAX_ID {
            return Err(ModelError::IdTooLarge { entity: entity(rec.id) });
        }
        let row = group_row(
            &self.sites,
            &self.schedules,
            |d| self.doors.get(d.0).map(|r| r.site),
            |p| self.people.get(p.0).map(|r| r.site),
            rec,
        )?;
        let (old_doors, old_members): (Arc<[DoorId]>, Arc<RoaringBitmap>) = match self.group(rec.id) {
            Some(old) if old.site != rec.site => return Err(ModelError::SiteChange { entity: entity(rec.id) }),
            Some(old) => (old.doors.clone(), old.members.clone()),
            None => (Arc::from([]), Arc::default()),
        };
        self.relink_group_doors(rec.id, &old_doors, &row.doors)?;
        self.relink_group_members(rec.id, &old_members, &row.members)?;
        put_row(Arc::make_mut(&mut self.groups), rec.id.0, Some(row), rec.id)
    }

    /// Update the per-door group lists when `group` moves from `old` doors to `new` ones.
    /// Both door lists are sorted and free of duplicates.
    fn relink_group_doors(&mut self, group: GroupId, old: &[DoorId], new: &[DoorId]) -> Result<(), ModelError> {
        for door in old.iter().filter(|d| new.binary_search(d).is_err()) {
            let mut row = self.door_row(*door)?;
            row.groups = row.groups.without(group);
            self.doors.set_row(door.0, Some(row));
        }
        for door in new.iter().filter(|d| old.binary_search(d).is_err()) {
            let mut row = self.door_row(*door)?;
            row.groups = row.groups.with(group);
            self.doors.set_row(door.0, Some(row));
        }
        Ok(())
    }

    /// Update the people's group lists when `group`'s members go from `old` to `new`.
    fn relink_group_members(
        &mut self,
        group: GroupId,
        old: &RoaringBitmap,
        new: &RoaringBitmap,
    ) -> Result<(), ModelError> {
        for person in old - new {
            let mut row = self.person_row(PersonId(person))?;
            row.groups = row.groups.without(group);
            self.people.set_row(person, Some(row));
        }
        for person in new - old {
            let mut row = self.person_row(PersonId(person))?;
            row.groups = row.groups.with(group);
            self.people.set_row(person, Some(row));
        }
        Ok(())
    }
}
