//! `load_accounts` through COPY: the statement and the decoding of its text format.

use chrono::{DateTime, Utc};

use super::corrupt;
use crate::store::{RecordedAccount, StoreError};

/// The light columns of a target's accounts as COPY text, in byte order of the key (the
/// primary key index's order: no sort). `disabled_at` as microseconds since the epoch. COPY
/// skips sqlx's per-row decoding, the larger part of reading 1M rows.
pub(super) const LOAD_ACCOUNTS_COPY: &str = "COPY (SELECT source_key, remote_id, login, hash, enabled, owned, \
     adopted, (extract(epoch FROM disabled_at) * 1000000)::int8 \
     FROM accounts WHERE target = current_setting('dirsync.target') \
     ORDER BY source_key COLLATE \"C\") TO STDOUT";

/// One line of [`LOAD_ACCOUNTS_COPY`] output (without its newline).
pub(super) fn parse_light_row(line: &[u8], context: &str) -> Result<RecordedAccount, StoreError> {
    let bad = |what: &str| corrupt(context, format!("COPY row: {what}"));
    let mut fields = line.split(|&b| b == b'\t');
    let mut next = |name: &str| -> Result<Option<String>, StoreError> {
        let field = fields
            .next()
            .ok_or_else(|| bad(&format!("missing column {name}")))?;
        copy_text_field(field).map_err(|e| bad(&format!("column {name}: {e}")))
    };
    let key = next("source_key")?.ok_or_else(|| bad("source_key is NULL"))?;
    let remote_id = next("remote_id")?;
    let login = next("login")?;
    let hash = next("hash")?.ok_or_else(|| bad(&format!("key {key:?}: hash is NULL")))?;
    let mut flag = |name: &str| -> Result<bool, StoreError> {
        match next(name)?.as_deref() {
            Some("t") => Ok(true),
            Some("f") => Ok(false),
            other => Err(bad(&format!("key {key:?}: {name} is {other:?}"))),
        }
    };
    let enabled = flag("enabled")?;
    let owned = flag("owned")?;
    let adopted = flag("adopted")?;
    let disabled_at = match next("disabled_at")? {
        None => None,
        Some(micros) => {
            let parsed = micros
                .parse::<i64>()
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_micros);
            Some(parsed.ok_or_else(|| bad(&format!("key {key:?}: disabled_at {micros:?}")))?)
        }
    };
    if fields.next().is_some() {
        return Err(bad(&format!("key {key:?}: too many columns")));
    }
    Ok(RecordedAccount {
        key,
        remote_id,
        login,
        hash: crate::mapping::ContentHash::parse_lenient(&hash),
        enabled,
        owned,
        adopted,
        disabled_at,
    })
}

/// Decodes one field of COPY's text format: `\N` is NULL; backslash escapes as documented
/// (`\b \f \n \r \t \v`, octal `\NNN`, hex `\xHH`, any other character stands for itself).
pub(super) fn copy_text_field(field: &[u8]) -> Result<Option<String>, String> {
    if field == b"\\N" {
        return Ok(None);
    }
    let bytes = if field.contains(&b'\\') {
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            i += 1;
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let Some(&e) = field.get(i) else {
                return Err("ends in a backslash".to_owned());
            };
            i += 1;
            match e {
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(0x0b),
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match field.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push(u8::try_from(v & 0xff).unwrap_or(0));
                }
                b'x' if field.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                    let mut v = 0u32;
                    for _ in 0..2 {
                        match field.get(i).and_then(|&d| char::from(d).to_digit(16)) {
                            Some(d) => {
                                v = v * 16 + d;
                                i += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(u8::try_from(v).unwrap_or(0));
                }
                other => out.push(other),
            }
        }
        out
    } else {
        field.to_vec()
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "not UTF-8".to_owned())
}
