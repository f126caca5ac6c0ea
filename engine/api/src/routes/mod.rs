//! The `/v1` routes, one module per area, and what they share: cursor pagination and
//! the shape of answers that carry a revision.

pub(crate) mod accounts;
pub(crate) mod audit;
pub(crate) mod bundles;
pub(crate) mod door_ops;
pub(crate) mod import;
pub(crate) mod iqs;
pub(crate) mod keys;
pub(crate) mod live;
pub(crate) mod model;
pub(crate) mod notifications;
pub(crate) mod offline;
pub(crate) mod policy;
pub(crate) mod rights;
pub(crate) mod rule_state;
pub(crate) mod sites;
pub(crate) mod vouchers;
pub(crate) mod webhooks;

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The default page size.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
/// The largest page size.
pub(crate) const MAX_LIMIT: u32 = 500;

/// Cursor pagination of a list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Pagination {
    /// The `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
    /// The page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
}

impl Pagination {
    /// The page size and the cursor, checked.
    pub(crate) fn limit_and_cursor(&self) -> Result<(u32, Option<i64>), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("`limit` must be 1 to {MAX_LIMIT}"),
            ));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| ApiError::bad_request("bad_cursor", format!("`{c}` is not a cursor of this list")))?,
            ),
        };
        Ok((limit, cursor))
    }

    /// One page of `items` (sorted by ascending `key`) and the cursor of the next.
    pub(crate) fn page<T>(&self, items: Vec<T>, key: impl Fn(&T) -> i64) -> Result<(Vec<T>, Option<String>), ApiError> {
        let (limit, after) = self.limit_and_cursor()?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut page: Vec<T> = items.into_iter().filter(|i| after.is_none_or(|a| key(i) > a)).collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|i| key(i).to_string())
        } else {
            None
        };
        Ok((page, next))
    }
}

/// An answer to a change of the decision model: the revision it produced.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Revisioned {
    /// The revision this change produced; pass it as `at_least_revision` to decide on it.
    pub revision: u64,
    /// Keys this change pushed out of its site's IQ offline lists (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushed_out: Vec<offline::PushedOut>,
}

impl Revisioned {
    /// The answer to a change that pushes no key out of an offline list.
    pub(crate) fn new(revision: u64) -> Self {
        Revisioned {
            revision,
            pushed_out: Vec::new(),
        }
    }
}

/// Defines a page type for a list of `$item`.
macro_rules! page_of {
    ($name:ident, $item:ty) => {
        /// A page of a list.
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub(crate) struct $name {
            /// The items of this page.
            pub items: Vec<$item>,
            /// The cursor of the next page; absent on the last page.
            pub next_cursor: Option<String>,
        }
    };
}
pub(crate) use page_of;
