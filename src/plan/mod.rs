//! The plan: what dirsync would do to one target, computed by the pure [`diff`] and judged by
//! the pure [`policy`]. Nothing in this module does I/O.

pub mod diff;
pub mod existing;
pub mod held;
pub mod policy;
pub mod prefilter;

use serde::{Deserialize, Serialize};

use crate::mapping::Account;

pub use diff::{DiffInput, OnMissing, PlanSettings, Triage, diff, triage};
pub use policy::{BlockReason, SafetySettings, SourceFacts, Verdict};
pub use prefilter::{Prefilter, PrefilterTarget, Settled};

/// One field that changes: before → after (`None` = absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Why an account is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// The source marks the user disabled.
    SourceDisabled,
    /// The user is no longer in the source.
    MissingFromSource,
    /// The user is still in the source, but this target's `include_groups` /
    /// `exclude_groups` no longer admit it.
    OutOfScope,
}

/// Why an account is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// `on_missing = "delete"`.
    MissingFromSource,
    /// `on_missing = "disable_then_delete"` and `delete_after` has passed since the disable.
    GracePeriodOver,
}

/// An operation on one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create the account (with its roles and enabled flag).
    Create {
        account: Account,
    },
    /// Change only these fields. `account` is the desired state after the change.
    Update {
        changes: Vec<FieldChange>,
        #[serde(skip)]
        account: Account,
    },
    /// Add and remove roles. `roles` is the complete desired set (for APIs that replace).
    SetRoles {
        add: Vec<String>,
        remove: Vec<String>,
        roles: Vec<String>,
        #[serde(skip)]
        account: Account,
    },
    /// Add and remove target-side groups (targets with groups). `groups` is the desired set.
    SetGroups {
        add: Vec<String>,
        remove: Vec<String>,
        groups: Vec<String>,
        #[serde(skip)]
        account: Account,
    },
    Enable,
    Disable {
        reason: DisableReason,
    },
    Delete {
        reason: DeleteReason,
    },
}

impl Op {
    /// The stable lower-case name of the operation kind (journal `kind`, report `op`).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Update { .. } => "update",
            Op::SetRoles { .. } => "set_roles",
            Op::SetGroups { .. } => "set_groups",
            Op::Enable => "enable",
            Op::Disable { .. } => "disable",
            Op::Delete { .. } => "delete",
        }
    }
}

/// An operation with the account it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedOp {
    /// Source key of the account.
    pub key: String,
    /// Login or email, for humans.
    pub label: Option<String>,
    /// The account's id at the target, when known.
    pub remote_id: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

/// Counts per kind, and the accounts left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: u64,
    pub update: u64,
    pub set_roles: u64,
    pub set_groups: u64,
    pub enable: u64,
    pub disable: u64,
    pub delete: u64,
    /// Owned accounts already as desired.
    pub unchanged: u64,
    /// Recorded accounts dirsync does not own (never changed).
    pub not_owned: u64,
    /// Source users not acted on: disabled in the source and never created, or not mappable.
    pub skipped: u64,
    /// Source users whose account already exists on the target, not owned by dirsync (found
    /// on first contact): not created; `dirsync adopt` takes them.
    #[serde(default)]
    pub exists_unowned: u64,
    /// Recorded accounts whose source record is quarantined ([`crate::model::Quarantined`]):
    /// left exactly as they are.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quarantined: u64,
    /// Source users this target's filters leave out (no account, not counted `skipped`).
    #[serde(default)]
    pub out_of_scope: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Summary {
    /// Operations planned.
    pub fn changes(&self) -> u64 {
        self.create
            + self.update
            + self.set_roles
            + self.set_groups
            + self.enable
            + self.disable
            + self.delete
    }
}

/// Why a source user gets no operation on this target (reports list every one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// The target's `include_groups` / `exclude_groups` leave the user out, and it has no
    /// account there (an owned account of a user out of scope is handled as missing).
    Scope { scope: crate::mapping::OutOfScope },
    /// Disabled in the source and never created on this target.
    SourceDisabled,
    /// The source record is quarantined: its account (if any) is left as it is.
    Quarantined,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Scope { scope } => write!(f, "scope: {scope}"),
            SkipReason::SourceDisabled => f.write_str("disabled in the source"),
            SkipReason::Quarantined => f.write_str("quarantined"),
        }
    }
}

/// A source user skipped on this target, and why. Users that cannot be mapped are
/// [`UserProblem`]s instead (with the problem as the reason).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SkippedUser {
    pub key: String,
    #[serde(flatten)]
    pub reason: SkipReason,
}

impl SkippedUser {
    pub fn new(key: &str, reason: SkipReason) -> SkippedUser {
        SkippedUser {
            key: key.to_string(),
            reason,
        }
    }
}

/// A source user that could not be planned for this target, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProblem {
    pub key: String,
    pub message: String,
}

/// The plan for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPlan {
    pub summary: Summary,
    /// Accounts dirsync owns on this target before the run (the base of the percentages).
    pub owned: u64,
    pub ops: Vec<PlannedOp>,
    pub problems: Vec<UserProblem>,
    /// Creates held back because the account already exists on the target, not owned
    /// ([`existing::hold_existing`]): "exists, not owned: adopt first".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub existing: Vec<existing::ExistingAccount>,
    /// Every source user skipped on this target with the reason, sorted by key: out of scope,
    /// disabled in the source (never created), quarantined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_users: Vec<SkippedUser>,
}
