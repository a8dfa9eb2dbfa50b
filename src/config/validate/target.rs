//! `[[target]]`: the common settings, the HTTP client's, the field and role mapping; the
//! vendor keys are handed to [`VendorSettings::validate`].

use super::*;

pub(super) fn target(
    raw: RawTarget,
    at: &str,
    base: &Path,
    extra: &[String],
    pr: &mut Problems,
) -> Option<TargetConfig> {
    let http = http_settings(&raw, at, pr);
    let raw_rps = raw.requests_per_second;
    let name = match raw.name {
        Some(n)
            if !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            Some(n)
        }
        Some(n) => {
            pr.push(
                format!("{at}.name"),
                format!("{n:?}: use letters, digits, '-', '_' and '.' only"),
            );
            None
        }
        None => {
            pr.push(format!("{at}.name"), "missing");
            None
        }
    };
    let kind = match raw.kind.as_deref() {
        Some(k) => TargetKind::parse(k).or_else(|| {
            pr.push(
                format!("{at}.kind"),
                format!("unknown kind {k:?} (known: covata, primavera, valuekeep, scim)"),
            );
            None
        }),
        None => {
            pr.push(
                format!("{at}.kind"),
                "missing (covata, primavera, valuekeep or scim)",
            );
            None
        }
    };
    let allow_insecure_http = raw.allow_insecure_http.unwrap_or(false);
    let base_url = match raw.base_url.as_deref() {
        Some(u) => http_url(u, &format!("{at}.base_url"), pr).filter(|u| {
            !refuse_clear_text(u, &format!("{at}.base_url"), allow_insecure_http, at, pr)
        }),
        None => {
            pr.push(format!("{at}.base_url"), "missing");
            None
        }
    };
    let on_missing = match raw.on_missing.as_deref() {
        None | Some("disable") => Some(OnMissing::Disable),
        Some("delete") => Some(OnMissing::Delete),
        Some("disable_then_delete") => Some(OnMissing::DisableThenDelete),
        Some(o) => {
            pr.push(
                format!("{at}.on_missing"),
                format!("unknown value {o:?} (disable, disable_then_delete, delete)"),
            );
            None
        }
    };
    let delete_after = match raw.delete_after.as_deref() {
        Some(d) => duration(d, &format!("{at}.delete_after"), pr),
        None => Some(Duration::from_secs(30 * 86400)),
    };
    if raw.delete_after.is_some() && on_missing != Some(OnMissing::DisableThenDelete) {
        pr.push(
            format!("{at}.delete_after"),
            "only used with on_missing = \"disable_then_delete\"",
        );
    }
    let batch_size = raw.batch_size.unwrap_or(500);
    if batch_size == 0 {
        pr.push(format!("{at}.batch_size"), "must be at least 1");
    }
    let kind = kind?;
    let vendor = VendorSettings::validate(
        raw.vendor,
        &VendorContext {
            at,
            kind,
            base,
            allow_insecure_http,
        },
        pr,
    );
    let mapping = mapping(
        &raw.fields,
        &raw.roles,
        raw.default_roles,
        &raw.groups,
        raw.default_groups,
        raw.include_groups,
        raw.exclude_groups,
        kind,
        at,
        extra,
        pr,
    );
    Some(TargetConfig {
        name: name?,
        kind,
        enabled: raw.enabled.unwrap_or(true),
        base_url: base_url?,
        mapping: mapping?,
        on_missing: on_missing?,
        delete_after: delete_after?,
        batch_size,
        recreate_deleted: raw.recreate_deleted.unwrap_or(false),
        vendor: vendor?,
        http: http.map(|mut h| {
            // Unset: the vendor's documented rate limit (if any) paces the target.
            if raw_rps.is_none() {
                h.requests_per_second = kind.spec().default_requests_per_second;
            }
            h
        })?,
    })
}

pub(super) fn http_settings(raw: &RawTarget, at: &str, pr: &mut Problems) -> Option<HttpSettings> {
    let d = HttpSettings::default();
    let dur = |v: &Option<String>, key: &str, default: Duration, pr: &mut Problems| match v {
        Some(v) => {
            let got = duration(v, &format!("{at}.{key}"), pr)?;
            if got.is_zero() {
                pr.push(format!("{at}.{key}"), "must be more than 0");
                return None;
            }
            Some(got)
        }
        None => Some(default),
    };
    let connect_timeout = dur(
        &raw.connect_timeout,
        "connect_timeout",
        d.connect_timeout,
        pr,
    );
    let request_timeout = dur(
        &raw.request_timeout,
        "request_timeout",
        d.request_timeout,
        pr,
    );
    let max_backoff = dur(&raw.max_backoff, "max_backoff", d.max_backoff, pr);
    let concurrency = raw.concurrency.unwrap_or(d.concurrency);
    if concurrency == 0 || concurrency > 1024 {
        pr.push(format!("{at}.concurrency"), "must be between 1 and 1024");
    }
    if let Some(rps) = raw.requests_per_second
        && !(rps > 0.0 && rps.is_finite())
    {
        pr.push(format!("{at}.requests_per_second"), "must be more than 0");
    }
    Some(HttpSettings {
        connect_timeout: connect_timeout?,
        request_timeout: request_timeout?,
        concurrency,
        requests_per_second: raw.requests_per_second,
        max_retries: raw.max_retries.unwrap_or(d.max_retries),
        max_backoff: max_backoff?,
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn mapping(
    fields: &BTreeMap<String, String>,
    roles: &[crate::config::raw::RawRoleRule],
    default_roles: Option<Vec<String>>,
    groups: &[crate::config::raw::RawGroupRule],
    default_groups: Option<Vec<String>>,
    include_groups: Vec<String>,
    exclude_groups: Vec<String>,
    kind: TargetKind,
    at: &str,
    extra: &[String],
    pr: &mut Problems,
) -> Option<TargetMapping> {
    let spec = kind.spec();
    let mut ok = true;
    let mut free = Vec::new();
    for (name, src) in fields {
        if spec.field(name).is_none()
            && let Some(check) = spec.free_fields
        {
            match check(name) {
                Ok(kind) => free.push((name, kind, src)),
                Err(e) => {
                    pr.push(format!("{at}.fields.{name}"), e);
                    ok = false;
                }
            }
            continue;
        }
        if spec.field(name).is_none() {
            let known: Vec<&str> = spec.fields.iter().map(|f| f.name).collect();
            pr.push(
                format!("{at}.fields.{name}"),
                format!(
                    "{} has no field {name:?}; known: {}",
                    kind.as_str(),
                    known.join(", ")
                ),
            );
            ok = false;
        }
    }
    let mut out = Vec::new();
    for f in spec.fields {
        let src = fields
            .get(f.name)
            .map(String::as_str)
            .or(f.default_template);
        let Some(src) = src else {
            if f.required {
                pr.push(
                    format!("{at}.fields.{}", f.name),
                    format!("required by {} and has no default: map it", kind.as_str()),
                );
                ok = false;
            }
            continue;
        };
        let key = format!("{at}.fields.{}", f.name);
        match Template::parse(src).and_then(|t| t.check_fields(extra).map(|()| t)) {
            Ok(t) => out.push(FieldMapping {
                name: f.name.to_string(),
                kind: f.kind,
                required: f.required,
                template: t,
            }),
            Err(e) => {
                pr.push(key, e);
                ok = false;
            }
        }
    }
    for (name, kind, src) in free {
        match Template::parse(src).and_then(|t| t.check_fields(extra).map(|()| t)) {
            Ok(t) => out.push(FieldMapping {
                name: name.clone(),
                kind,
                required: false,
                template: t,
            }),
            Err(e) => {
                pr.push(format!("{at}.fields.{name}"), e);
                ok = false;
            }
        }
    }
    let check_role = |role: &str, key: &str, pr: &mut Problems| -> bool {
        if let Some(known) = spec.known_roles
            && !known.contains(&role)
        {
            pr.push(
                key,
                format!(
                    "unknown {} role {role:?}; known: {}",
                    kind.as_str(),
                    known.join(", ")
                ),
            );
            return false;
        }
        if role.trim().is_empty() {
            pr.push(key, "empty role name");
            return false;
        }
        true
    };
    let mut rules = Vec::new();
    for (i, r) in roles.iter().enumerate() {
        let key = format!("{at}.roles[{i}]");
        let Some(group) = r.group.as_ref().filter(|g| !g.trim().is_empty()) else {
            pr.push(
                format!("{key}.group"),
                "missing: the group (name or DN) this rule matches",
            );
            ok = false;
            continue;
        };
        if r.roles.is_empty() {
            pr.push(
                format!("{key}.roles"),
                "empty: list the roles members of this group get",
            );
            ok = false;
        }
        for role in &r.roles {
            ok &= check_role(role, &format!("{key}.roles"), pr);
        }
        rules.push(RoleRule {
            group: group.trim().to_string(),
            roles: r.roles.clone(),
        });
    }
    let default_roles =
        default_roles.unwrap_or_else(|| spec.default_roles.iter().map(|r| r.to_string()).collect());
    for role in &default_roles {
        ok &= check_role(role, &format!("{at}.default_roles"), pr);
    }
    if spec.roles_required && default_roles.is_empty() {
        pr.push(
            format!("{at}.default_roles"),
            format!(
                "{} requires every user to have a role: default_roles must not be empty",
                kind.as_str()
            ),
        );
        ok = false;
    }
    // Target-side groups: only where the vendor has them.
    let mut group_rules = Vec::new();
    if !spec.supports_groups && (!groups.is_empty() || default_groups.is_some()) {
        pr.push(
            format!("{at}.groups"),
            format!(
                "{} has no user groups (groups and default_groups are not settings of this kind)",
                kind.as_str()
            ),
        );
        ok = false;
    }
    for (i, r) in groups.iter().enumerate() {
        let key = format!("{at}.groups[{i}]");
        let Some(group) = r.group.as_ref().filter(|g| !g.trim().is_empty()) else {
            pr.push(
                format!("{key}.group"),
                "missing: the source group (name or DN) this rule matches",
            );
            ok = false;
            continue;
        };
        if r.groups.is_empty() || r.groups.iter().any(|g| g.trim().is_empty()) {
            pr.push(
                format!("{key}.groups"),
                "list the target groups members of this group join (no empty names)",
            );
            ok = false;
        }
        group_rules.push(RoleRule {
            group: group.trim().to_string(),
            roles: r.groups.clone(),
        });
    }
    let default_groups = default_groups.unwrap_or_default();
    ok.then(|| TargetMapping {
        fields: out,
        role_rules: rules,
        default_roles,
        group_rules,
        default_groups,
        filter: UserFilter {
            include_groups,
            exclude_groups,
        },
        login_field: spec.login_field.to_string(),
    })
}
