//! `[source]`: the CSV and LDAP sources' settings.

use super::*;

pub(super) fn ldap_source(raw: RawLdap, base: &Path, pr: &mut Problems) -> Option<SourceConfig> {
    use crate::source::ldap::{
        DisabledRule, GroupSearch, GroupSource, KeyFormat, LdapAttributes, LdapSettings,
        MissingEmail, SearchScope, ServerType,
    };
    let at = |k: &str| format!("source.ldap.{k}");
    let mut ok = true;
    let server = match raw.server_type.as_deref() {
        None => ServerType::Generic,
        Some(t) => ServerType::parse(t).unwrap_or_else(|| {
            pr.push(
                at("server_type"),
                format!("unknown server type {t:?} (generic, active_directory)"),
            );
            ok = false;
            ServerType::Generic
        }),
    };
    let url = match raw.url.as_deref().map(str::trim) {
        None | Some("") => {
            pr.push(
                at("url"),
                "missing: the server, ldap://host:389 or ldaps://host:636",
            );
            None
        }
        Some(u) => match url::Url::parse(u) {
            Ok(p) if p.scheme() != "ldap" && p.scheme() != "ldaps" => {
                pr.push(
                    at("url"),
                    format!(
                        "scheme {:?} not supported (ldap:// or ldaps://)",
                        p.scheme()
                    ),
                );
                None
            }
            Ok(p) if p.host_str().is_none_or(str::is_empty) => {
                pr.push(at("url"), "URL has no host");
                None
            }
            Ok(p) if !matches!(p.path(), "" | "/") || p.query().is_some() => {
                pr.push(
                    at("url"),
                    "only scheme, host and port: set the base DN, scope and filter with base_dn, \
                     scope and filter",
                );
                None
            }
            Ok(p) if !p.username().is_empty() || p.password().is_some() => {
                pr.push(
                    at("url"),
                    "URL must not carry credentials; use bind_dn and bind_password",
                );
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                pr.push(at("url"), format!("invalid URL {u:?}: {e}"));
                None
            }
        },
    };
    let starttls = raw.starttls.unwrap_or(false);
    if starttls && url.as_ref().is_some_and(|u| u.scheme() == "ldaps") {
        pr.push(
            at("starttls"),
            "StartTLS is for ldap:// URLs; ldaps:// is already encrypted",
        );
        ok = false;
    }
    let tls = starttls || url.as_ref().is_some_and(|u| u.scheme() == "ldaps");
    let tls_skip_verify = raw.tls_skip_verify.unwrap_or(false);
    let ca_file = raw.ca_file.map(|p| resolve(base, &p));
    if let Some(ca) = &ca_file {
        if !tls {
            pr.push(at("ca_file"), "only used with ldaps:// or starttls = true");
            ok = false;
        } else if tls_skip_verify {
            pr.push(
                at("ca_file"),
                "set either ca_file or tls_skip_verify, not both",
            );
            ok = false;
        } else if let Err(e) = std::fs::metadata(ca) {
            pr.push(at("ca_file"), format!("cannot read {}: {e}", ca.display()));
            ok = false;
        }
    }
    if tls_skip_verify && !tls {
        pr.push(
            at("tls_skip_verify"),
            "only used with ldaps:// or starttls = true",
        );
        ok = false;
    }
    let password_given = raw.bind_password.is_some()
        || raw.bind_password_file.is_some()
        || raw.bind_password_credential.is_some();
    let password = secret_ref(
        raw.bind_password,
        raw.bind_password_file.as_ref(),
        raw.bind_password_credential.as_ref(),
        base,
        &at("bind_password"),
        pr,
    );
    let anonymous = raw.anonymous.unwrap_or(false);
    let bind_dn = raw.bind_dn.map(|d| d.trim().to_string());
    match (&bind_dn, anonymous) {
        (Some(_), true) => {
            pr.push(
                at("anonymous"),
                "set either bind_dn or anonymous = true, not both",
            );
            ok = false;
        }
        (Some(d), false) if d.is_empty() => {
            pr.push(
                at("bind_dn"),
                "empty (for an anonymous bind set anonymous = true)",
            );
            ok = false;
        }
        (Some(_), false) => {
            if !password_given {
                pr.push(
                    at("bind_password"),
                    "required with bind_dn (set bind_password, bind_password_file or \
                     bind_password_credential)",
                );
                ok = false;
            }
        }
        (None, false) => {
            pr.push(
                at("bind_dn"),
                "missing: the DN to bind as (or anonymous = true to read without binding)",
            );
            ok = false;
        }
        (None, true) => {
            if password_given {
                pr.push(at("bind_password"), "not used with anonymous = true");
                ok = false;
            }
        }
    }
    let timeout = |v: Option<&str>, key: &str, default: u64, pr: &mut Problems| match v {
        None => Some(Duration::from_secs(default)),
        Some(v) => {
            let d = duration(v, &at(key), pr)?;
            if d.is_zero() {
                pr.push(at(key), "must be more than 0");
                return None;
            }
            Some(d)
        }
    };
    let connect_timeout = timeout(raw.connect_timeout.as_deref(), "connect_timeout", 10, pr);
    let operation_timeout = timeout(
        raw.operation_timeout.as_deref(),
        "operation_timeout",
        60,
        pr,
    );
    let base_dn = match raw.base_dn.as_deref().map(str::trim) {
        None | Some("") => {
            pr.push(
                at("base_dn"),
                "missing: where the users are (ou=people,dc=example,dc=com)",
            );
            None
        }
        Some(d) if !d.contains('=') => {
            pr.push(
                at("base_dn"),
                format!("{d:?} is not a DN (ou=people,dc=example,dc=com)"),
            );
            None
        }
        Some(d) => Some(d.to_string()),
    };
    let scope = |v: Option<&str>, key: &str, pr: &mut Problems| match v {
        None => Some(SearchScope::Sub),
        Some(v) => SearchScope::parse(v).or_else(|| {
            pr.push(key, format!("unknown scope {v:?} (base, one, sub)"));
            None
        }),
    };
    let user_scope = scope(raw.scope.as_deref(), &at("scope"), pr);
    let check_filter = |f: &str, key: &str, pr: &mut Problems| -> bool {
        if ldap3::parse_filter(f).is_err() {
            pr.push(key, format!("invalid LDAP filter {f:?}"));
            return false;
        }
        true
    };
    let filter = raw
        .filter
        .unwrap_or_else(|| LdapSettings::default_filter(server).to_string());
    ok &= check_filter(&filter, &at("filter"), pr);
    let page_size = match raw.page_size {
        None => 500,
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => n as u32,
        Some(n) => {
            pr.push(
                at("page_size"),
                format!("must be 0 (no paging) or more, got {n}"),
            );
            ok = false;
            500
        }
    };
    let key_format = match raw.key_format.as_deref() {
        None => KeyFormat::Auto,
        Some(f) => KeyFormat::parse(f).unwrap_or_else(|| {
            pr.push(
                at("key_format"),
                format!("unknown format {f:?} (auto, text, guid, hex)"),
            );
            ok = false;
            KeyFormat::Auto
        }),
    };
    let mut attributes = LdapAttributes::defaults(server);
    let a = raw.attributes;
    if let Some(k) = a.key {
        if k.trim().is_empty() {
            pr.push(at("attributes.key"), "empty");
            ok = false;
        }
        attributes.key = k.trim().to_string();
    }
    let mut list =
        |v: Option<crate::config::raw::OneOrMany>, key: &str, target: &mut Vec<String>| {
            if let Some(v) = v {
                let v: Vec<String> = v
                    .into_vec()
                    .into_iter()
                    .map(|s| s.trim().to_string())
                    .collect();
                if v.iter().any(String::is_empty) || (key == "email" && v.is_empty()) {
                    pr.push(at(&format!("attributes.{key}")), "empty attribute name");
                    ok = false;
                }
                *target = v;
            }
        };
    list(a.email, "email", &mut attributes.email);
    list(a.given_name, "given_name", &mut attributes.given_name);
    list(a.family_name, "family_name", &mut attributes.family_name);
    list(a.other_name, "other_name", &mut attributes.other_name);
    list(a.display_name, "display_name", &mut attributes.display_name);
    list(a.mobile, "mobile", &mut attributes.mobile);
    let disabled = match (
        raw.disabled_attribute,
        raw.disabled_values,
        raw.disabled_when_present,
    ) {
        (None, None, None | Some(false)) => None,
        (None, _, _) => {
            pr.push(
                at("disabled_attribute"),
                "missing: disabled_values / disabled_when_present need the attribute they apply to",
            );
            ok = false;
            None
        }
        (Some(attr), Some(values), None | Some(false)) if !values.is_empty() => {
            Some(DisabledRule {
                attribute: attr,
                values,
            })
        }
        (Some(attr), None, Some(true)) => Some(DisabledRule {
            attribute: attr,
            values: Vec::new(),
        }),
        (Some(_), Some(v), Some(true)) if !v.is_empty() => {
            pr.push(
                at("disabled_values"),
                "set either disabled_values or disabled_when_present = true, not both",
            );
            ok = false;
            None
        }
        (Some(_), _, _) => {
            pr.push(
                at("disabled_values"),
                "missing: the values of disabled_attribute that mean disabled \
                 (or disabled_when_present = true)",
            );
            ok = false;
            None
        }
    };
    let groups = match raw.groups.as_deref().map(str::trim) {
        None | Some("memberof" | "memberOf" | "member_of") => {
            if raw.group_search.is_some() {
                pr.push(at("group_search"), "only used with groups = \"search\"");
                ok = false;
            }
            Some(GroupSource::MemberOf {
                attribute: raw
                    .member_of_attribute
                    .unwrap_or_else(|| "memberOf".to_string()),
            })
        }
        Some("none") => Some(GroupSource::None),
        Some("search") => {
            let g = raw.group_search.unwrap_or_default();
            let gbase = match g.base_dn.as_deref().map(str::trim) {
                Some(d) if d.contains('=') => Some(d.to_string()),
                _ => {
                    pr.push(
                        at("group_search.base_dn"),
                        "missing: the DN under which the group entries are (ou=groups,dc=example,dc=com)",
                    );
                    None
                }
            };
            let mut gs = GroupSearch::new(gbase.clone().unwrap_or_default());
            if let Some(s) = scope(g.scope.as_deref(), &at("group_search.scope"), pr) {
                gs.scope = s;
            } else {
                ok = false;
            }
            if let Some(f) = g.filter {
                ok &= check_filter(&f, &at("group_search.filter"), pr);
                gs.filter = f;
            }
            if let Some(m) = g.member_attributes {
                gs.member_attributes = m;
            }
            if let Some(m) = g.member_uid_attribute {
                gs.member_uid_attribute = (!m.trim().is_empty()).then_some(m);
            }
            if let Some(u) = g.user_id_attribute {
                gs.user_id_attribute = u;
            }
            if gs.member_attributes.is_empty() && gs.member_uid_attribute.is_none() {
                pr.push(
                    at("group_search.member_attributes"),
                    "no member attribute left to read",
                );
                ok = false;
            }
            gbase.map(|_| GroupSource::Search(gs))
        }
        Some(o) => {
            pr.push(
                at("groups"),
                format!("unknown value {o:?} (memberof, search, none)"),
            );
            None
        }
    };
    let missing_email = match raw.missing_email.as_deref() {
        None | Some("skip") => MissingEmail::Skip,
        Some("error") => MissingEmail::Error,
        Some(o) => {
            pr.push(
                at("missing_email"),
                format!("unknown value {o:?} (skip, error)"),
            );
            ok = false;
            MissingEmail::Skip
        }
    };
    for name in raw.extra.keys() {
        if crate::model::USER_FIELDS.contains(&name.as_str()) {
            pr.push(
                at(&format!("extra.{name}")),
                "is a built-in field; map it under [source.ldap.attributes]",
            );
            ok = false;
        }
    }
    let settings = LdapSettings {
        url: url.and(raw.url.map(|u| u.trim().to_string()))?,
        starttls,
        ca_file,
        tls_skip_verify,
        bind_dn: if anonymous { None } else { bind_dn },
        bind_password: None,
        bind_password_ref: password,
        connect_timeout: connect_timeout?,
        operation_timeout: operation_timeout?,
        timeout: crate::source::csv::DEFAULT_TIMEOUT,
        base_dn: base_dn?,
        scope: user_scope?,
        filter,
        page_size,
        attributes,
        key_format,
        user_account_control: raw
            .user_account_control
            .unwrap_or(server == ServerType::ActiveDirectory),
        disabled,
        groups: groups?,
        nested_groups: raw.nested_groups.unwrap_or(false),
        missing_email,
        extra: raw.extra,
    };
    ok.then_some(SourceConfig::Ldap(settings))
}

/// `source.timeout`: the longest a whole source read may take (default 10m).
pub(super) fn source_timeout(v: Option<&str>, pr: &mut Problems) -> Duration {
    let default = crate::source::csv::DEFAULT_TIMEOUT;
    match v {
        None => default,
        Some(v) => match duration(v, "source.timeout", pr) {
            Some(d) if d.is_zero() => {
                pr.push("source.timeout", "must be more than 0s");
                default
            }
            Some(d) => d,
            None => default,
        },
    }
}

pub(super) fn csv_source(raw: RawCsv, base: &Path, pr: &mut Problems) -> Option<SourceConfig> {
    let path = match raw.path {
        Some(p) => Some(resolve(base, &p)),
        None => {
            pr.push("source.csv.path", "missing: the CSV file to read");
            None
        }
    };
    let delimiter = match raw.delimiter.as_deref() {
        None => Some(b','),
        Some("\\t" | "tab" | "\t") => Some(b'\t'),
        Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
        Some(d) => {
            pr.push(
                "source.csv.delimiter",
                format!("must be one ASCII character (or \"tab\"), got {d:?}"),
            );
            None
        }
    };
    let c = raw.columns;
    let key = c.key.or_else(|| {
        pr.push(
            "source.csv.columns.key",
            "missing: the column holding each user's stable key (an employee id, not the email)",
        );
        None
    });
    let (def_en, def_dis) = CsvSettings::default_values();
    let enabled_values = raw.enabled_values.unwrap_or(def_en);
    let disabled_values = raw.disabled_values.unwrap_or(def_dis);
    for v in &enabled_values {
        if disabled_values.iter().any(|d| d.eq_ignore_ascii_case(v)) {
            pr.push(
                "source.csv.enabled_values",
                format!("{v:?} is also in disabled_values"),
            );
        }
    }
    let groups_separator = raw.groups_separator.unwrap_or_else(|| ";".into());
    if groups_separator.is_empty() {
        pr.push("source.csv.groups_separator", "must not be empty");
    }
    for name in raw.extra.keys() {
        if crate::model::USER_FIELDS.contains(&name.as_str()) {
            pr.push(
                format!("source.csv.extra.{name}"),
                "is a built-in field; map it under [source.csv.columns]",
            );
        }
    }
    Some(SourceConfig::Csv(CsvSettings {
        path: path?,
        delimiter: delimiter?,
        columns: CsvColumns {
            key: key?,
            email: c.email.unwrap_or_else(|| "email".into()),
            given_name: c.given_name,
            family_name: c.family_name,
            other_name: c.other_name,
            display_name: c.display_name,
            mobile: c.mobile,
            enabled: c.enabled,
            groups: c.groups,
        },
        enabled_values,
        disabled_values,
        groups_separator,
        extra: raw.extra,
        timeout: crate::source::csv::DEFAULT_TIMEOUT,
    }))
}
