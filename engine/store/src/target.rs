//! Which entity a change touches: the key of its audit row and of [`crate::Model::record`].

use keyway_core::{CalendarId, Change, CredentialId, DoorId, GroupId, IqId, PersonId, Record, ScheduleId, SiteId};
use std::fmt;

/// One entity of the model, by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A site.
    Site(SiteId),
    /// A holiday calendar.
    Calendar(CalendarId),
    /// An IQ.
    Iq(IqId),
    /// A schedule.
    Schedule(ScheduleId),
    /// A door.
    Door(DoorId),
    /// A person.
    Person(PersonId),
    /// A credential.
    Credential(CredentialId),
    /// An access group.
    Group(GroupId),
    /// The role flags.
    Roles,
}

impl Target {
    /// The entity `change` writes (for a grant, the group).
    #[must_use]
    pub fn of(change: &Change) -> Target {
        match change {
            Change::BlockPerson(p) | Change::UnblockPerson(p) | Change::RemovePerson(p) => Target::Person(*p),
            Change::PutPerson(r) => Target::Person(r.id),
            Change::RevokeCredential(c) | Change::RestoreCredential(c) | Change::RemoveCredential(c) => {
                Target::Credential(*c)
            }
            Change::PutCredential(r) => Target::Credential(r.id),
            Change::Grant { group, .. } | Change::Ungrant { group, .. } | Change::RemoveGroup(group) => {
                Target::Group(*group)
            }
            Change::PutGroup(r) => Target::Group(r.id),
            Change::PutDoor(r) => Target::Door(r.id),
            Change::RemoveDoor(d) | Change::SetDoorMode { door: d, .. } | Change::SetDoorLockdown { door: d, .. } => {
                Target::Door(*d)
            }
            Change::SetSiteLockdown { site, .. } => Target::Site(*site),
            Change::PutSite(r) => Target::Site(r.id),
            Change::PutSchedule(r) => Target::Schedule(r.id),
            Change::RemoveSchedule(s) => Target::Schedule(*s),
            Change::PutIq(r) => Target::Iq(r.id),
            Change::RemoveIq(i) => Target::Iq(*i),
            Change::PutCalendar(r) => Target::Calendar(r.id),
            Change::SetRoles(_) => Target::Roles,
        }
    }

    /// The entity a record describes.
    #[must_use]
    pub fn of_record(record: &Record) -> Target {
        match record {
            Record::Site(r) => Target::Site(r.id),
            Record::Calendar(r) => Target::Calendar(r.id),
            Record::Iq(r) => Target::Iq(r.id),
            Record::Door(r) => Target::Door(r.id),
            Record::Person(r) => Target::Person(r.id),
            Record::Credential(r) => Target::Credential(r.id),
            Record::Schedule(r) => Target::Schedule(r.id),
            Record::Group(r) => Target::Group(r.id),
            Record::Roles(_) => Target::Roles,
        }
    }

    /// The table holding the entity.
    #[must_use]
    pub const fn table(self) -> &'static str {
        match self {
            Target::Site(_) => "sites",
            Target::Calendar(_) => "calendars",
            Target::Iq(_) => "iqs",
            Target::Schedule(_) => "schedules",
            Target::Door(_) => "doors",
            Target::Person(_) => "people",
            Target::Credential(_) => "credentials",
            Target::Group(_) => "access_groups",
            Target::Roles => "role_flags",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Site(id) => id.fmt(f),
            Target::Calendar(id) => id.fmt(f),
            Target::Iq(id) => id.fmt(f),
            Target::Schedule(id) => id.fmt(f),
            Target::Door(id) => id.fmt(f),
            Target::Person(id) => id.fmt(f),
            Target::Credential(id) => id.fmt(f),
            Target::Group(id) => id.fmt(f),
            Target::Roles => f.write_str("roles"),
        }
    }
}

/// The audit action name of a change.
#[must_use]
pub(crate) fn action(change: &Change) -> &'static str {
    match change {
        Change::BlockPerson(_) => "block_person",
        Change::UnblockPerson(_) => "unblock_person",
        Change::RevokeCredential(_) => "revoke_credential",
        Change::RestoreCredential(_) => "restore_credential",
        Change::PutCredential(_) => "put_credential",
        Change::RemoveCredential(_) => "remove_credential",
        Change::Grant { .. } => "grant",
        Change::Ungrant { .. } => "ungrant",
        Change::PutPerson(_) => "put_person",
        Change::RemovePerson(_) => "remove_person",
        Change::PutDoor(_) => "put_door",
        Change::RemoveDoor(_) => "remove_door",
        Change::SetDoorMode { .. } => "set_door_mode",
        Change::SetDoorLockdown { .. } => "set_door_lockdown",
        Change::SetSiteLockdown { .. } => "set_site_lockdown",
        Change::PutGroup(_) => "put_group",
        Change::RemoveGroup(_) => "remove_group",
        Change::PutSchedule(_) => "put_schedule",
        Change::RemoveSchedule(_) => "remove_schedule",
        Change::PutIq(_) => "put_iq",
        Change::RemoveIq(_) => "remove_iq",
        Change::PutSite(_) => "put_site",
        Change::PutCalendar(_) => "put_calendar",
        Change::SetRoles(_) => "set_roles",
    }
}
