//! Rendering a planned run for people (text, Markdown) and for pipelines (JSON, versioned).
//!
//! JSON schema, version 1 (additive changes keep the version; anything else bumps it):
//! `{ "schema": "dirsync.report", "version": 1, "run_id", "trigger", "dry_run", "forced",
//!    "generated_at", "store", "status": "no_changes" | "changes_pending" | "blocked" | "applied" |
//!    "partial" | "failed" | "skipped" | "interrupted" | "quarantined", "exit_code",
//!    "source": { "kind", "users", "last_applied_users", "blocked_by": [reason],
//!      "quarantined"?: [ { "key" (null when unknown), "location" (`file:line` or DN),
//!        "field", "problem", "value" (quoted, escaped, cut) } ] },
//!    "targets": [ { "name", "kind", "verdict": { "status": "allowed" | "blocked" | "forced",
//!      "reasons"? }, "owned", "summary": { "create", "update", "set_roles", "enable",
//!      "disable", "delete", "unchanged", "not_owned", "skipped", "exists_unowned",
//!      "quarantined"? (owned accounts left alone: their source record is quarantined),
//!      "out_of_scope" (source users the target's filters leave out, with no account) },
//!      "skipped_users"?: [ { "key", "reason": "scope" | "source_disabled" | "quarantined",
//!        "scope"?: { "rule": "excluded_group" | "not_included", "group"? } } ],
//!      "ops": [ { "key", "label", "remote_id", "op", ...op fields } ],
//!      "problems": [ { "key", "message" } ],
//!      "existing"?: [ { "key", "login", "remote_id" } ], "existing_unchecked"?: "why" } ] }`
//! where a reason is `{ "rule", "limit", "actual", "message" }`. After a sync, targets also
//! carry `applied`, `recovered`, `estimate`, `refresh` and `skipped` objects; a saved plan
//! (`dirsync plan --out`) adds `"kind": "plan"` and a `"saved"` section (see `saved_plan`).

use std::fmt::Write as _;
use std::io;

use serde::Serialize;

pub mod skipped;
pub mod words;

pub use words::{count, plural};

use crate::outcome::{RunPlan, TargetOutcome};
use crate::plan::{DeleteReason, DisableReason, Op, PlannedOp, Verdict};
use crate::store::{OperationRecord, RunRecord};

/// The version of the JSON report schema.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// The overall state of a plan, as the exit code reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    NoChanges,
    ChangesPending,
    Blocked,
    /// Applied, every operation succeeded.
    Applied,
    /// Applied, some operations failed.
    Partial,
    /// A target could not be reached or reconciled (the others were still applied).
    Failed,
    /// Applying: every target was skipped because another dirsync instance holds its lock.
    Skipped,
    /// A shutdown request (SIGTERM / SIGINT) stopped the run with operations left unsent.
    Interrupted,
    /// Applied, every operation succeeded, but source records were quarantined (their
    /// accounts left as they are): the source needs fixing.
    Quarantined,
}

/// Exit code of a run that applied everything else but quarantined source records.
pub const EXIT_QUARANTINED: u8 = 7;

/// Exit code of a run a shutdown request stopped with operations left for the next run.
pub const EXIT_INTERRUPTED: u8 = 6;

/// Exit code: an error (bad config, unreadable source, store failure).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: every selected target was skipped because another dirsync instance is applying
/// it (`sync`, `run --once`).
pub const EXIT_SKIPPED: u8 = 5;

impl PlanStatus {
    pub fn of(plan: &RunPlan) -> PlanStatus {
        if plan.targets.iter().any(|t| t.error.is_some()) {
            PlanStatus::Failed
        } else if plan.interrupted() {
            PlanStatus::Interrupted
        } else if plan.blocked() {
            PlanStatus::Blocked
        } else if !plan.dry_run {
            if !plan.targets.is_empty() && plan.targets.iter().all(|t| t.skipped.is_some()) {
                PlanStatus::Skipped
            } else if plan.applied_failed().1 > 0 {
                PlanStatus::Partial
            } else if !plan.source.quarantined.is_empty() {
                PlanStatus::Quarantined
            } else if plan.changes() > 0 {
                PlanStatus::Applied
            } else {
                PlanStatus::NoChanges
            }
        } else if plan.changes() > 0 || plan.targets.iter().any(|t| !t.plan.existing.is_empty()) {
            // Accounts to adopt first also need the operator.
            PlanStatus::ChangesPending
        } else {
            PlanStatus::NoChanges
        }
    }

    /// 0 nothing to do / applied, 1 a target failed, 2 changes pending, 3 blocked by safety,
    /// 4 some operations failed, 5 every target skipped (another instance applies them), 6
    /// interrupted by a shutdown request, 7 applied but source records were quarantined.
    pub fn exit_code(self) -> u8 {
        match self {
            PlanStatus::Skipped => EXIT_SKIPPED,
            PlanStatus::Failed => 1,
            PlanStatus::NoChanges | PlanStatus::Applied => 0,
            PlanStatus::ChangesPending => 2,
            PlanStatus::Blocked => 3,
            PlanStatus::Partial => 4,
            PlanStatus::Interrupted => EXIT_INTERRUPTED,
            PlanStatus::Quarantined => EXIT_QUARANTINED,
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: &'static str,
    version: u32,
    status: PlanStatus,
    exit_code: u8,
    #[serde(flatten)]
    plan: &'a RunPlan,
}

/// Streams formatted text into an `io::Write`, keeping the first I/O error (a report of 100k
/// changes is written as it is rendered, never held whole in memory).
struct Out<'a> {
    w: &'a mut dyn io::Write,
    err: Option<io::Error>,
}

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.err.is_some() {
            return Err(std::fmt::Error);
        }
        self.w.write_all(s.as_bytes()).map_err(|e| {
            self.err = Some(e);
            std::fmt::Error
        })
    }
}

impl<'a> Out<'a> {
    fn new(w: &'a mut dyn io::Write) -> Self {
        Out { w, err: None }
    }
    fn finish(self) -> io::Result<()> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Writes the report in the chosen format.
pub fn write_report(
    w: &mut dyn io::Write,
    plan: &RunPlan,
    format: Format,
    dry_run: bool,
) -> io::Result<()> {
    match format {
        Format::Json => write_json(w, plan),
        Format::Text => {
            let mut o = Out::new(w);
            write_text(&mut o, plan, dry_run);
            o.finish()
        }
        Format::Markdown => {
            let mut o = Out::new(w);
            write_markdown(&mut o, plan, dry_run);
            o.finish()
        }
    }
}

/// The report as a string.
pub fn render(plan: &RunPlan, format: Format, dry_run: bool) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_report(&mut buf, plan, format, dry_run);
    String::from_utf8_lossy(&buf).into_owned()
}

fn write_json(w: &mut dyn io::Write, plan: &RunPlan) -> io::Result<()> {
    let status = PlanStatus::of(plan);
    let report = JsonReport {
        schema: "dirsync.report",
        version: SCHEMA_VERSION,
        status,
        exit_code: status.exit_code(),
        plan,
    };
    serde_json::to_writer_pretty(&mut *w, &report)?;
    writeln!(w)
}

/// Makes a value safe to print on one terminal line: control characters escaped, and quoted
/// when it has spaces at its ends or is empty.
fn show(v: &str) -> String {
    let needs_quotes = v.is_empty()
        || v.starts_with(' ')
        || v.ends_with(' ')
        || v.chars().any(|c| c.is_control() || c == '"');
    if needs_quotes {
        format!("\"{}\"", v.escape_debug())
    } else {
        v.to_string()
    }
}

fn show_opt(v: Option<&String>) -> String {
    v.map_or_else(|| "(none)".to_string(), |v| show(v))
}

/// A message on one line: control characters escaped (the sources already escape values).
fn plain(v: &str) -> String {
    if !v.chars().any(char::is_control) {
        return v.to_string();
    }
    v.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn who(op: &PlannedOp) -> String {
    match &op.label {
        Some(l) => format!("{} ({})", show(&op.key), show(l)),
        None => show(&op.key),
    }
}

fn disable_reason(r: DisableReason) -> &'static str {
    match r {
        DisableReason::SourceDisabled => "disabled in the source",
        DisableReason::MissingFromSource => "no longer in the source",
        DisableReason::OutOfScope => "no longer in this target's scope",
    }
}

fn delete_reason(r: DeleteReason) -> &'static str {
    match r {
        DeleteReason::MissingFromSource => "no longer in the source (on_missing = delete)",
        DeleteReason::GracePeriodOver => "disabled longer than delete_after",
    }
}

fn summary_line(t: &TargetOutcome) -> String {
    let s = &t.plan.summary;
    let groups = if s.set_groups > 0 {
        format!(", {}", plural(s.set_groups, "group change"))
    } else {
        String::new()
    };
    let mut exists = if s.exists_unowned > 0 {
        format!(", {} not owned", count(s.exists_unowned, "exists", "exist"))
    } else {
        String::new()
    };
    if s.quarantined > 0 {
        let _ = write!(exists, ", {} quarantined", s.quarantined);
    }
    if s.out_of_scope > 0 {
        let _ = write!(exists, ", {} outside the target's scope", s.out_of_scope);
    }
    format!(
        "{}, {}, {}{groups}, {}, {}, {}; {} unchanged, {} not owned, {} skipped{exists}",
        plural(s.create, "create"),
        plural(s.update, "update"),
        plural(s.set_roles, "role change"),
        plural(s.enable, "enable"),
        plural(s.disable, "disable"),
        plural(s.delete, "delete"),
        s.unchanged,
        s.not_owned,
        s.skipped
    )
}

/// "(the last run that applied changes read 120)" after the source's user count.
fn last_applied_text(plan: &RunPlan) -> String {
    plan.source
        .last_applied_users
        .map(|n| format!(" (the last run that applied changes read {n})"))
        .unwrap_or_default()
}

fn verdict_line(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allowed => "allowed",
        Verdict::Blocked { .. } => "BLOCKED by the safety policy: nothing will be applied",
        Verdict::Forced { .. } => "over safety limits, FORCED by --force",
    }
}

fn reasons(v: &Verdict) -> &[crate::plan::BlockReason] {
    match v {
        Verdict::Allowed => &[],
        Verdict::Blocked { reasons } | Verdict::Forced { reasons } => reasons,
    }
}

fn write_text(o: &mut Out<'_>, plan: &RunPlan, dry_run: bool) {
    let status = PlanStatus::of(plan);
    let _ = writeln!(
        o,
        "dirsync {} — run {}, source {}: {}{}",
        if dry_run { "plan (dry run)" } else { "sync" },
        plan.run_id,
        plan.source.kind,
        plural(plan.source.users, "user"),
        last_applied_text(plan)
    );
    if !plan.store.is_empty() {
        let _ = writeln!(o, "state store: {}", plan.store);
    }
    if !plan.source.quarantined.is_empty() {
        let _ = writeln!(
            o,
            "{} quarantined: their accounts are left as they are on every target until the record is fixed",
            plural(plan.source.quarantined.len() as u64, "source record")
        );
        for q in &plan.source.quarantined {
            let _ = writeln!(
                o,
                "  ? quarantined {} {}{}: {} (value {})",
                show(&q.location),
                q.key
                    .as_deref()
                    .map(|k| format!("key {} ", show(k)))
                    .unwrap_or_default(),
                show(&q.field),
                plain(&q.problem),
                q.value
            );
        }
    }
    for t in &plan.targets {
        let _ = writeln!(o);
        if let Some(why) = &t.skipped {
            let _ = writeln!(o, "target {} ({}): skipped: {why}", t.name, t.kind.as_str());
            continue;
        }
        if let Some(e) = &t.error {
            let _ = writeln!(o, "target {} ({}): FAILED: {e}", t.name, t.kind.as_str());
            continue;
        }
        let _ = writeln!(
            o,
            "target {} ({}): {}",
            t.name,
            t.kind.as_str(),
            verdict_line(&t.verdict)
        );
        let _ = writeln!(o, "  {}", summary_line(t));
        if let Some(e) = &t.estimate
            && e.requests > 0
        {
            let _ = writeln!(
                o,
                "  expected duration: about {} ({} at {}/s)",
                words::duration(std::time::Duration::from_secs(e.seconds)),
                plural(e.requests, "request"),
                e.requests_per_second
            );
        }
        for r in reasons(&t.verdict) {
            let _ = writeln!(o, "  ! {}: {}", r.rule, r.message);
        }
        for op in &t.plan.ops {
            write_text_op(o, op);
        }
        for p in &t.plan.problems {
            let _ = writeln!(o, "  ? {}: {}", show(&p.key), p.message);
        }
        write_text_skipped(o, t);
        write_text_existing(o, t);
        if let Some(r) = &t.recovered
            && r.superseded + r.confirmed + r.replanned > 0
        {
            let _ = writeln!(
                o,
                "  recovered an interrupted run: {} confirmed on the target, {} re-planned, {} never sent",
                plural(r.confirmed, "create"),
                r.replanned,
                r.superseded
            );
        }
        if let Some(r) = &t.refresh {
            let _ = writeln!(
                o,
                "  refresh: {} changed by hand ({} planned), {} deleted remotely ({} re-created), {} not owned",
                plural(r.drifted.len() as u64, "account"),
                plural(r.corrected_drift, "correction"),
                r.deleted_remotely.len(),
                r.recreated.len(),
                r.unowned
            );
        }
        if let Some(a) = &t.applied {
            let _ = writeln!(
                o,
                "  applied {}, failed {}, skipped {}",
                a.applied, a.failed, a.skipped
            );
            if a.interrupted > 0 {
                let _ = writeln!(o, "  left for the next run: {}", a.interrupted);
            }
            for f in &a.failures {
                let _ = writeln!(o, "  ! failed {} {}: {}", f.op, show(&f.key), f.error);
            }
            for n in &a.notes {
                let _ = writeln!(o, "  note {} {}: {}", n.op, show(&n.key), n.error);
            }
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{}",
        match status {
            PlanStatus::NoChanges => "Nothing to do.".to_string(),
            PlanStatus::ChangesPending => format!("{} pending.", changes(plan.changes())),
            PlanStatus::Blocked => format!(
                "Blocked by the safety policy ({} planned). Check the source; re-run with --force to apply anyway.",
                changes(plan.changes())
            ),
            PlanStatus::Applied => format!("Applied {}.", changes(plan.applied_failed().0)),
            PlanStatus::Partial => {
                let (a, f) = plan.applied_failed();
                format!(
                    "Applied {}; {f} failed (they are retried on the next run).",
                    changes(a)
                )
            }
            PlanStatus::Quarantined => format!(
                "Applied {}; {} quarantined, their accounts left as they are: fix the source.",
                changes(plan.applied_failed().0),
                plural(plan.source.quarantined.len() as u64, "source record")
            ),
            PlanStatus::Interrupted => {
                let (a, f) = plan.applied_failed();
                format!(
                    "Interrupted: applied {}, {f} failed, {} left for the next run.",
                    changes(a),
                    plan.left()
                )
            }
            PlanStatus::Failed => {
                let (a, f) = plan.applied_failed();
                let failed: Vec<&str> = plan
                    .targets
                    .iter()
                    .filter(|t| t.error.is_some())
                    .map(|t| t.name.as_str())
                    .collect();
                format!(
                    "Failed: {} could not be synced; applied {} elsewhere, {f} failed.",
                    failed.join(", "),
                    changes(a)
                )
            }
            PlanStatus::Skipped => "Skipped: another dirsync instance is applying every selected \
                                    target; nothing was planned or sent (exit code 5)."
                .to_string(),
        }
    );
}

fn changes(n: u64) -> String {
    plural(n, "change")
}

/// Every skipped user with the reason ([`skipped::SHOWN`] per reason, then a count).
fn write_text_skipped(o: &mut Out<'_>, t: &TargetOutcome) {
    for g in skipped::groups(&t.plan) {
        for s in &g.shown {
            let _ = writeln!(o, "  - skipped  {}  ({})", show(&s.key), g.reason);
        }
        if g.more > 0 {
            let _ = writeln!(
                o,
                "  - skipped  and {} more ({}; --format json lists them all)",
                g.more, g.reason
            );
        }
    }
}

/// First contact: creates held back because the account exists, or why that was not checked.
fn write_text_existing(o: &mut Out<'_>, t: &TargetOutcome) {
    if let Some(why) = &t.existing_unchecked {
        let _ = writeln!(
            o,
            "  ! existing accounts not checked ({why}): the creates above may meet accounts that already exist; `dirsync sync` checks before sending"
        );
    }
    if t.plan.existing.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "  {} on the target, not owned by dirsync: not created; run `dirsync adopt {}` first",
        count(
            t.plan.existing.len() as u64,
            "account already exists",
            "accounts already exist"
        ),
        t.name
    );
    for e in &t.plan.existing {
        let _ = writeln!(
            o,
            "  = exists   {} ({})  remote id {}: exists, not owned: adopt first",
            show(&e.key),
            show(&e.login),
            show(&e.remote_id)
        );
    }
}

fn write_text_op(o: &mut Out<'_>, op: &PlannedOp) {
    match &op.op {
        Op::Create { account } => {
            let roles: Vec<&str> = account.roles.iter().map(String::as_str).collect();
            let groups = if account.groups.is_empty() {
                String::new()
            } else {
                let g: Vec<&str> = account.groups.iter().map(String::as_str).collect();
                format!("  groups [{}]", g.join(", "))
            };
            let _ = writeln!(
                o,
                "  + create   {}  roles [{}]{groups}{}",
                who(op),
                roles.join(", "),
                if account.enabled { "" } else { " (disabled)" }
            );
            for (k, v) in &account.fields {
                let _ = writeln!(o, "      {k}: {}", show(v));
            }
        }
        Op::Update { changes, .. } => {
            let _ = writeln!(o, "  ~ update   {}", who(op));
            for c in changes {
                let _ = writeln!(
                    o,
                    "      {}: {} -> {}",
                    c.field,
                    show_opt(c.before.as_ref()),
                    show_opt(c.after.as_ref())
                );
            }
        }
        Op::SetRoles { add, remove, .. } => {
            let mut parts: Vec<String> = add.iter().map(|r| format!("+{r}")).collect();
            parts.extend(remove.iter().map(|r| format!("-{r}")));
            let _ = writeln!(o, "  ~ roles    {}  {}", who(op), parts.join(" "));
        }
        Op::SetGroups { add, remove, .. } => {
            let mut parts: Vec<String> = add.iter().map(|g| format!("+{g}")).collect();
            parts.extend(remove.iter().map(|g| format!("-{g}")));
            let _ = writeln!(o, "  ~ groups   {}  {}", who(op), parts.join(" "));
        }
        Op::Enable => {
            let _ = writeln!(o, "  > enable   {}", who(op));
        }
        Op::Disable { reason } => {
            let _ = writeln!(o, "  < disable  {}  ({})", who(op), disable_reason(*reason));
        }
        Op::Delete { reason } => {
            let _ = writeln!(o, "  x delete   {}  ({})", who(op), delete_reason(*reason));
        }
    }
}

/// Escapes text for a Markdown table cell.
fn md(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '<' | '>' | '[' | ']' => {
                s.push('\\');
                s.push(c);
            }
            c if c.is_control() => {
                let _ = write!(s, "{}", c.escape_default());
            }
            c => s.push(c),
        }
    }
    s
}

fn write_markdown(o: &mut Out<'_>, plan: &RunPlan, dry_run: bool) {
    let _ = writeln!(
        o,
        "# dirsync {} — run {}\n\nSource **{}**: {}{}.\n",
        if dry_run { "plan (dry run)" } else { "run" },
        plan.run_id,
        plan.source.kind,
        plural(plan.source.users, "user"),
        last_applied_text(plan)
    );
    if !plan.store.is_empty() {
        let _ = writeln!(o, "State store: `{}`.\n", plan.store);
    }
    if !plan.source.quarantined.is_empty() {
        let _ = writeln!(
            o,
            "**{} quarantined**: their accounts are left as they are on every target until the record is fixed.\n",
            plural(plan.source.quarantined.len() as u64, "source record")
        );
        for q in &plan.source.quarantined {
            let _ = writeln!(
                o,
                "- ? quarantined {}{}, {}: {} (value {})",
                md(&q.location),
                q.key
                    .as_deref()
                    .map(|k| format!(" (key {})", md(k)))
                    .unwrap_or_default(),
                md(&q.field),
                md(&plain(&q.problem)),
                md(&q.value)
            );
        }
        let _ = writeln!(o);
    }
    for t in &plan.targets {
        let s = &t.plan.summary;
        let _ = writeln!(o, "## {} ({})\n", md(&t.name), t.kind.as_str());
        let _ = writeln!(o, "**{}**\n", verdict_line(&t.verdict));
        for r in reasons(&t.verdict) {
            let _ = writeln!(o, "- `{}`: {}", r.rule, md(&r.message));
        }
        let _ = writeln!(
            o,
            "| create | update | roles | groups | enable | disable | delete | unchanged | not owned | skipped | outside scope |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.create,
            s.update,
            s.set_roles,
            s.set_groups,
            s.enable,
            s.disable,
            s.delete,
            s.unchanged,
            s.not_owned,
            s.skipped,
            s.out_of_scope
        );
        if !t.plan.ops.is_empty() {
            let _ = writeln!(o, "| op | key | account | details |\n|---|---|---|---|");
            for op in &t.plan.ops {
                let details = match &op.op {
                    Op::Create { account } => md_create(account),
                    Op::Update { changes, .. } => changes
                        .iter()
                        .map(|c| {
                            format!(
                                "{}: {} → {}",
                                md(&c.field),
                                md(&show_opt(c.before.as_ref())),
                                md(&show_opt(c.after.as_ref()))
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("<br>"),
                    Op::SetRoles { add, remove, .. } | Op::SetGroups { add, remove, .. } => {
                        let mut parts: Vec<String> =
                            add.iter().map(|r| format!("+{}", md(r))).collect();
                        parts.extend(remove.iter().map(|r| format!("−{}", md(r))));
                        parts.join(" ")
                    }
                    Op::Enable => String::new(),
                    Op::Disable { reason } => disable_reason(*reason).to_string(),
                    Op::Delete { reason } => md(delete_reason(*reason)),
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    op.op.kind(),
                    md(&op.key),
                    md(op.label.as_deref().unwrap_or("")),
                    details
                );
            }
            let _ = writeln!(o);
        }
        write_markdown_skipped(o, t);
        if let Some(a) = &t.applied {
            let _ = writeln!(
                o,
                "Applied {}, failed {}, skipped {}.\n",
                a.applied, a.failed, a.skipped
            );
            for f in &a.failures {
                let _ = writeln!(o, "- failed `{}` {}: {}", f.op, md(&f.key), md(&f.error));
            }
            if !a.failures.is_empty() {
                let _ = writeln!(o);
            }
        }
        if let Some(why) = &t.existing_unchecked {
            let _ = writeln!(
                o,
                "Existing accounts not checked ({}): the creates above may meet accounts that already exist; `dirsync sync` checks before sending.\n",
                md(why)
            );
        }
        if !t.plan.existing.is_empty() {
            let _ = writeln!(
                o,
                "Exist on the target, not owned by dirsync (not created; run `dirsync adopt {}` first):\n",
                md(&t.name)
            );
            for e in &t.plan.existing {
                let _ = writeln!(
                    o,
                    "- {} ({}), remote id {}: exists, not owned: adopt first",
                    md(&e.key),
                    md(&e.login),
                    md(&e.remote_id)
                );
            }
            let _ = writeln!(o);
        }
        if !t.plan.problems.is_empty() {
            let _ = writeln!(o, "Problems:\n");
            for p in &t.plan.problems {
                let _ = writeln!(o, "- {}: {}", md(&p.key), md(&p.message));
            }
            let _ = writeln!(o);
        }
    }
}

/// A create's details cell: roles, groups, disabled, then every field (as the text report).
fn md_create(account: &crate::mapping::Account) -> String {
    let mut parts = vec![format!(
        "roles: {}",
        md(&account.roles.iter().cloned().collect::<Vec<_>>().join(", "))
    )];
    if !account.groups.is_empty() {
        parts.push(format!(
            "groups: {}",
            md(&account
                .groups
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "))
        ));
    }
    if !account.enabled {
        parts.push("(disabled)".into());
    }
    for (k, v) in &account.fields {
        parts.push(format!("{}: {}", md(k), md(&show(v))));
    }
    parts.join("<br>")
}

/// The skipped users, grouped by reason ([`skipped::SHOWN`] per reason, then a count).
fn write_markdown_skipped(o: &mut Out<'_>, t: &TargetOutcome) {
    let groups = skipped::groups(&t.plan);
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "Skipped ({}):\n",
        plural(t.plan.skipped_users.len() as u64, "user")
    );
    for g in groups {
        let keys: Vec<String> = g.shown.iter().map(|s| md(&s.key)).collect();
        let more = if g.more > 0 {
            format!(" and {} more", g.more)
        } else {
            String::new()
        };
        let _ = writeln!(o, "- {}: {}{more}", md(&g.reason), keys.join(", "));
    }
    let _ = writeln!(o);
}

fn duration_text(r: &RunRecord) -> String {
    match r.finished_at {
        Some(f) => {
            let ms = (f - r.started_at).num_milliseconds().max(0);
            format!("{:.1}s", ms as f64 / 1000.0)
        }
        None => "-".into(),
    }
}

/// `dirsync runs`: the run history of `store` (as `StoreLocation::describe` names it), newest
/// first: runs that applied (or tried to) first, then dry runs (`dirsync plan`) in a section
/// of their own. JSON keeps one `runs` list, each run with `"dry_run"`.
pub fn render_runs(store: &str, runs: &[RunRecord], format: Format) -> String {
    let is_dry = |r: &RunRecord| r.trigger == crate::store::Trigger::DryRun;
    match format {
        Format::Json => {
            let runs: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("dry_run".into(), is_dry(r).into());
                    }
                    v
                })
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({
                "schema": "dirsync.runs",
                "version": SCHEMA_VERSION,
                "store": store,
                "runs": runs,
            }))
            .unwrap_or_default()
        }
        Format::Text | Format::Markdown => {
            let md = format == Format::Markdown;
            let mut o = String::new();
            let _ = writeln!(o, "{}store: {store}\n", if md { "State " } else { "" });
            if runs.is_empty() {
                o.push_str("No runs recorded yet.\n");
                return o;
            }
            let (dry, real): (Vec<&RunRecord>, Vec<&RunRecord>) =
                runs.iter().partition(|r| is_dry(r));
            let sections = [
                (
                    real,
                    "Runs (sync, the daemon, apply):",
                    "## Runs (sync, the daemon, apply)",
                ),
                (
                    dry,
                    "Dry runs (plan: nothing was sent):",
                    "## Dry runs (plan: nothing was sent)",
                ),
            ];
            let mut first = true;
            for (list, text_title, md_title) in sections {
                if list.is_empty() {
                    continue;
                }
                if !first {
                    o.push('\n');
                }
                first = false;
                let _ = writeln!(o, "{}", if md { md_title } else { text_title });
                if md {
                    o.push('\n');
                }
                write_runs_table(&mut o, &list, md);
            }
            o
        }
    }
}

fn write_runs_table(o: &mut String, runs: &[&RunRecord], md: bool) {
    if md {
        o.push_str("| id | started | trigger | status | took | source users | planned | applied | failed | targets |\n|---:|---|---|---|---:|---:|---:|---:|---:|---|\n");
    } else {
        let _ = writeln!(
            o,
            "{:>6}  {:<20}  {:<9}  {:<11}  {:>7}  {:>8}  {:>8}  {:>8}  {:>6}  targets",
            "id",
            "started (UTC)",
            "trigger",
            "status",
            "took",
            "users",
            "planned",
            "applied",
            "failed"
        );
    }
    for r in runs {
        let started = r.started_at.format("%Y-%m-%d %H:%M:%S").to_string();
        let users = r.source_count.map_or("-".into(), |n| n.to_string());
        let targets = r.targets.join(",");
        let forced = if r.forced { " (forced)" } else { "" };
        if md {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
                r.id,
                started,
                r.trigger.as_str(),
                r.status.as_str(),
                forced,
                duration_text(r),
                users,
                r.planned,
                r.applied,
                r.failed,
                md_cell(&targets)
            );
        } else {
            let _ = writeln!(
                o,
                "{:>6}  {:<20}  {:<9}  {:<11}  {:>7}  {:>8}  {:>8}  {:>8}  {:>6}  {}{}",
                r.id,
                started,
                r.trigger.as_str(),
                r.status.as_str(),
                duration_text(r),
                users,
                r.planned,
                r.applied,
                r.failed,
                targets,
                forced
            );
        }
    }
}

fn md_cell(v: &str) -> String {
    md(v)
}

/// `dirsync runs show ID`.
pub fn render_run(run: &RunRecord, ops: &[OperationRecord], format: Format) -> String {
    if format == Format::Json {
        return serde_json::to_string_pretty(&serde_json::json!({
            "schema": "dirsync.run",
            "version": SCHEMA_VERSION,
            "run": run,
            "operations": ops,
        }))
        .unwrap_or_default();
    }
    if format == Format::Markdown
        && let Some(md) = run.summary.get("report_markdown").and_then(|v| v.as_str())
    {
        let mut o = md.to_string();
        let _ = writeln!(
            o,
            "\nRun {} ended **{}** ({}), applied {}, failed {}.",
            run.id,
            run.status.as_str(),
            run.trigger.as_str(),
            run.applied,
            run.failed
        );
        return o;
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "run {}: {} ({}{}), started {}, took {}",
        run.id,
        run.status.as_str(),
        run.trigger.as_str(),
        if run.forced { ", forced" } else { "" },
        run.started_at.to_rfc3339(),
        duration_text(run)
    );
    let _ = writeln!(
        o,
        "source users: {}; planned {}, applied {}, failed {}",
        run.source_count.map_or("-".into(), |n| n.to_string()),
        run.planned,
        run.applied,
        run.failed
    );
    if let Some(e) = &run.error {
        let _ = writeln!(o, "error: {e}");
    }
    if let Some(q) = run
        .summary
        .get("source")
        .and_then(|s| s.get("quarantined"))
        .and_then(|q| q.as_array())
        .filter(|q| !q.is_empty())
    {
        let _ = writeln!(o, "source records quarantined: {}", q.len());
        for r in q {
            let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("?");
            let _ = writeln!(
                o,
                "  ? quarantined {} {}: {} (value {})",
                show(text("location")),
                show(text("field")),
                plain(text("problem")),
                plain(text("value"))
            );
        }
    }
    if let Some(targets) = run.summary.get("targets").and_then(|t| t.as_array()) {
        for t in targets {
            let name = t.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            let kind = t.get("kind").and_then(|v| v.as_str()).unwrap_or("?");
            let verdict = t
                .get("verdict")
                .and_then(|v| v.get("status"))
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            let _ = writeln!(o, "\ntarget {name} ({kind}): {verdict}");
            if let Some(s) = t.get("summary").and_then(|s| s.as_object()) {
                let parts: Vec<String> = s.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(o, "  {}", parts.join(", "));
            }
            if let Some(reasons) = t
                .get("verdict")
                .and_then(|v| v.get("reasons"))
                .and_then(|r| r.as_array())
            {
                for r in reasons {
                    let _ = writeln!(
                        o,
                        "  ! {}",
                        r.get("message").and_then(|m| m.as_str()).unwrap_or("?")
                    );
                }
            }
        }
    }
    if ops.is_empty() {
        let _ = writeln!(
            o,
            "\nno journaled operations{}",
            if run.trigger == crate::store::Trigger::DryRun {
                " (dry run)"
            } else {
                ""
            }
        );
    } else {
        let _ = writeln!(o, "\noperations:");
        for op in ops {
            let _ = writeln!(
                o,
                "  {:>8}  {:<10} {:<9} {} {}{}",
                op.id,
                op.kind,
                op.status,
                op.target,
                show(&op.source_key),
                op.last_error
                    .as_ref()
                    .map(|e| format!("  error: {}", show(e)))
                    .unwrap_or_default()
            );
        }
    }
    o
}

#[cfg(test)]
mod tests;
