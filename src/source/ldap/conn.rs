//! The connection to the directory: connect (StartTLS / ldaps, CA file), bind, the paged
//! search with its timeouts and result codes, and search result entries read without panics.

use std::collections::HashMap;
use std::sync::Arc;

use ldap3::controls::{Control, ControlType, PagedResults, RawControl};
use ldap3::{DerefAliases, Ldap, LdapConnAsync, LdapConnSettings, SearchEntry};
use tracing::{debug, warn};

use super::decode::{shown, shown_bytes};
use super::{LdapSettings, SearchScope};
use crate::secret::Secret;
use crate::source::rules::has_control;

/// Opens, secures and binds a connection.
pub(super) async fn connect(s: &LdapSettings) -> Result<Ldap, String> {
    let url = url::Url::parse(&s.url).map_err(|e| format!("invalid URL: {e}"))?;
    let tls = url.scheme() == "ldaps" || s.starttls;
    let mut cs = LdapConnSettings::new()
        .set_conn_timeout(s.connect_timeout)
        .set_starttls(s.starttls && url.scheme() == "ldap");
    if tls && s.tls_skip_verify {
        warn!(
            server = %s.url,
            "source.ldap.tls_skip_verify is set: the LDAP server's certificate is NOT verified; \
             anyone able to intercept the connection can read the bind password and feed dirsync \
             a forged directory"
        );
        cs = cs.set_no_tls_verify(true);
    } else if tls && let Some(ca) = &s.ca_file {
        cs = cs.set_config(tls_config(ca)?);
    }
    if !tls && s.bind_dn.is_some() && !is_loopback(&url) {
        warn!(
            server = %s.url,
            "the LDAP bind password is sent unencrypted: use ldaps:// or starttls = true"
        );
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(cs, &s.url)
        .await
        .map_err(|e| format!("cannot connect: {}", describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            debug!("LDAP connection ended: {e}");
        }
    });
    if let Some(dn) = &s.bind_dn {
        let resolved = match (&s.bind_password, &s.bind_password_ref) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(r)) => Some(r.resolve().map_err(|e| e.to_string())?),
            (None, None) => None,
        };
        let pw = resolved.as_ref().map(Secret::expose).unwrap_or("");
        let res = ldap
            .with_timeout(s.operation_timeout)
            .simple_bind(dn, pw)
            .await
            .map_err(|e| format!("bind as {dn:?}: {}", describe(&e)))?;
        if res.rc != 0 {
            return Err(format!(
                "bind as {dn:?} failed: {} ({}){}",
                rc_name(res.rc),
                res.rc,
                text(&res.text)
            ));
        }
    }
    Ok(ldap)
}

pub(super) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        // `ldap:` is not a special scheme: the URL parser keeps an IP address as an opaque
        // host name.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        None => true,
    }
}

/// A rustls config trusting only the certificates of `ca` (PEM).
pub(super) fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bytes =
        std::fs::read(ca).map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "ca_file {}: no PEM certificate in it",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A search of every entry, page by page; `on_entry` sees each entry. Fails on anything but
/// a complete result.
#[allow(clippy::too_many_arguments)]
pub(super) async fn paged_search(
    s: &LdapSettings,
    ldap: &mut Ldap,
    base: &str,
    scope: SearchScope,
    filter: &str,
    attrs: &[String],
    what: &str,
    mut on_entry: impl FnMut(SearchEntry),
) -> Result<(), String> {
    let mut cookie: Vec<u8> = Vec::new();
    let mut pages = 0u64;
    // Progress: entries read (the total is not known before the end).
    let task = crate::progress::start("source", crate::progress::Phase::Read, None, None);
    loop {
        pages += 1;
        if s.page_size > 0 {
            let control: RawControl = PagedResults {
                size: i32::try_from(s.page_size).unwrap_or(i32::MAX),
                cookie: std::mem::take(&mut cookie),
            }
            .into();
            ldap.with_controls(control);
        }
        ldap.with_timeout(s.operation_timeout)
            .with_search_options(ldap3::SearchOptions::new().deref(DerefAliases::Never));
        let at = || format!("search of {what} (base {base:?}, filter {filter:?}, page {pages})");
        let mut stream = ldap
            .streaming_search(base, scope.ldap(), filter, attrs.to_vec())
            .await
            .map_err(|e| {
                let incomplete = if pages > 1 { INCOMPLETE } else { "" };
                format!("{}: {}{incomplete}", at(), describe(&e))
            })?;
        let mut refs: Vec<String> = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(re)) if re.is_ref() => refs.extend(ldap3::parse_refs(re.0)),
                Ok(Some(re)) if re.is_intermediate() => {}
                Ok(Some(re)) => match search_entry(re.0) {
                    Ok(e) => {
                        task.advance(1);
                        on_entry(e)
                    }
                    Err(m) => {
                        let _ = stream.finish().await;
                        return Err(format!("{}: {m}{INCOMPLETE}", at()));
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = stream.finish().await;
                    return Err(format!("{}: {}{INCOMPLETE}", at(), describe(&e)));
                }
            }
        }
        let res = stream.finish().await;
        if res.rc != 0 {
            let hint = match res.rc {
                4 => {
                    " (the server's size limit cut the result short: does it allow paged \
                       results beyond its size limit? OpenLDAP: `limits ... size.prtotal=unlimited`)"
                }
                3 => " (the server's time limit cut the result short)",
                10 => {
                    " (the server referred to another server, which dirsync does not follow: \
                        point source.ldap.url at a server holding the base DN, e.g. an AD global \
                        catalog)"
                }
                _ => "",
            };
            let mut m = format!(
                "{}: {} ({}){}{hint}",
                at(),
                rc_name(res.rc),
                res.rc,
                text(&res.text)
            );
            if !res.refs.is_empty() {
                m.push_str(&format!("; referrals: {}", res.refs.join(", ")));
            }
            return Err(m);
        }
        if !refs.is_empty() {
            return Err(format!(
                "{}: the server returned continuation references that dirsync does not follow \
                 ({}): the read would be incomplete",
                at(),
                refs.join(", ")
            ));
        }
        let next = res.ctrls.iter().find_map(|c| match c {
            Control(Some(ControlType::PagedResults), raw) => Some(raw.parse::<PagedResults>()),
            _ => None,
        });
        match next {
            Some(pr) if !pr.cookie.is_empty() => cookie = pr.cookie,
            _ => return Ok(()),
        }
    }
}

/// Said of a search that failed after entries came in.
pub(super) const INCOMPLETE: &str = " (the read is incomplete: nothing is synced)";

/// The server's diagnostic text, if any, for a message (escaped when it holds control
/// characters, so that it stays one line).
pub(super) fn text(t: &str) -> String {
    let t = t.trim();
    if t.is_empty() {
        String::new()
    } else if has_control(t) {
        format!(": {}", shown(t))
    } else {
        format!(": {t}")
    }
}

pub(super) fn describe(e: &ldap3::LdapError) -> String {
    match e {
        ldap3::LdapError::EndOfStream
        | ldap3::LdapError::OpSend { .. }
        | ldap3::LdapError::ResultRecv { .. }
        | ldap3::LdapError::IdScrubSend { .. } => "the connection to the server was lost".into(),
        ldap3::LdapError::Timeout { .. } => "timed out (source.ldap.operation_timeout)".into(),
        ldap3::LdapError::LdapResult { result } => format!(
            "{} ({}){}",
            rc_name(result.rc),
            result.rc,
            text(&result.text)
        ),
        e => e.to_string(),
    }
}

/// The name of an LDAP result code (RFC 4511).
pub(super) fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        85 => "timeout",
        87 => "filterError",
        88 => "userCanceled",
        _ => "error",
    }
}

/// An entry of a search result, as [`SearchEntry::construct`] builds it but without its
/// panics (a DN or an attribute description that is not UTF-8, a malformed entry: an error)
/// and keeping the values of each attribute in the server's order (`construct` moves the
/// non-UTF-8 values of a mixed attribute before the others, so "the first value" would be
/// another one). All values are in `bin_attrs`, as bytes; [`values`] reads both maps.
pub(super) fn search_entry(re: ldap3::asn1::StructureTag) -> Result<SearchEntry, String> {
    let malformed = || "the server sent a malformed entry".to_string();
    let mut parts = re
        .match_id(4)
        .and_then(|t| t.expect_constructed())
        .ok_or_else(malformed)?
        .into_iter();
    let dn = parts
        .next()
        .and_then(|t| t.expect_primitive())
        .ok_or_else(malformed)?;
    let dn = String::from_utf8(dn).map_err(|e| {
        format!(
            "the server sent an entry whose DN is not UTF-8: {}",
            shown_bytes(e.as_bytes())
        )
    })?;
    let attributes = parts
        .next()
        .and_then(|t| t.expect_constructed())
        .ok_or_else(malformed)?;
    let mut bin_attrs: HashMap<String, Vec<Vec<u8>>> = HashMap::with_capacity(attributes.len());
    for attribute in attributes {
        let mut a = attribute
            .expect_constructed()
            .ok_or_else(malformed)?
            .into_iter();
        let name = a
            .next()
            .and_then(|t| t.expect_primitive())
            .ok_or_else(malformed)?;
        let name = String::from_utf8(name).map_err(|e| {
            format!(
                "entry {dn:?}: an attribute description is not UTF-8: {}",
                shown_bytes(e.as_bytes())
            )
        })?;
        let vals = a
            .next()
            .and_then(|t| t.expect_constructed())
            .ok_or_else(malformed)?;
        let slot = bin_attrs.entry(name).or_default();
        slot.reserve_exact(vals.len());
        for v in vals {
            slot.push(v.expect_primitive().ok_or_else(malformed)?);
        }
    }
    Ok(SearchEntry {
        dn,
        attrs: HashMap::new(),
        bin_attrs,
    })
}

#[cfg(test)]
mod tests {
    use super::super::ServerType;
    use super::super::decode::{Outcome, entry_to_user, values};
    use super::*;

    /// A search result entry as the server sends it: `(type, values)` pairs.
    fn result_entry(dn: &[u8], attrs: &[(&[u8], &[&[u8]])]) -> ldap3::asn1::StructureTag {
        use ldap3::asn1::{PL, StructureTag, TagClass};
        let prim = |id: u64, v: &[u8]| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(v.to_vec()),
        };
        let cons = |id: u64, inner: Vec<StructureTag>| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(inner),
        };
        let attrs = attrs
            .iter()
            .map(|(name, vals)| {
                cons(
                    16,
                    vec![
                        prim(4, name),
                        cons(17, vals.iter().map(|v| prim(4, v)).collect()),
                    ],
                )
            })
            .collect();
        StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![prim(4, dn), cons(16, attrs)]),
        }
    }

    #[test]
    fn entries_keep_value_order_and_never_panic() {
        let e = search_entry(result_entry(
            b"cn=x,dc=example",
            &[(b"mail", &[b"first@example.org", b"J\xfcrgen@example.org"])],
        ))
        .unwrap();
        assert_eq!(
            values(&e, "mail").collect::<Vec<_>>(),
            vec![&b"first@example.org"[..], &b"J\xfcrgen@example.org"[..]]
        );
        // ldap3's own construct puts the non-UTF-8 value first.
        let c = SearchEntry::construct(ldap3::ResultEntry::new(result_entry(
            b"cn=x,dc=example",
            &[(b"mail", &[b"first@example.org", b"J\xfcrgen@example.org"])],
        )));
        assert_eq!(c.bin_attrs["mail"][0], b"J\xfcrgen@example.org");
        // So the first value is the one used.
        let s = LdapSettings::new("ldap://h", "dc=example", ServerType::Generic);
        let e = search_entry(result_entry(
            b"cn=x,dc=example",
            &[
                (b"entryUUID", &[b"k1"]),
                (b"mail", &[b"first@example.org", b"J\xfcrgen@example.org"]),
            ],
        ))
        .unwrap();
        match entry_to_user(&s, &e, None) {
            Outcome::User(u) => assert_eq!(u.email, "first@example.org"),
            _ => panic!("not a user"),
        }
        // A DN or an attribute description that is not UTF-8 is an error, not a panic.
        let err = search_entry(result_entry(b"cn=\xff,dc=x", &[])).unwrap_err();
        assert!(err.contains(r#""cn=\xff,dc=x""#), "{err}");
        let err = search_entry(result_entry(b"cn=x", &[(b"m\xffil", &[b"v"])])).unwrap_err();
        assert!(err.contains("attribute description is not UTF-8"), "{err}");
        let malformed = ldap3::asn1::StructureTag {
            class: ldap3::asn1::TagClass::Application,
            id: 4,
            payload: ldap3::asn1::PL::P(b"x".to_vec()),
        };
        assert!(search_entry(malformed).is_err());
    }

    #[test]
    fn loopback_urls() {
        let lo = |u: &str| is_loopback(&url::Url::parse(u).unwrap());
        assert!(lo("ldap://127.0.0.1:389"));
        assert!(lo("ldap://127.1.2.3"));
        assert!(lo("ldap://[::1]:389"));
        assert!(lo("ldap://localhost"));
        assert!(!lo("ldap://10.0.0.1"));
        assert!(!lo("ldap://ldap.example.com"));
        assert!(!lo("ldap://127.0.0.1.example.com"));
    }
}
