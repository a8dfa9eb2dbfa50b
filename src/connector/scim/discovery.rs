//! `/ServiceProviderConfig` (RFC 7643 section 5): what the server supports, read once per run
//! (per connector) and adapted to.

use std::fmt;

use serde_json::Value;

/// What a SCIM server says it supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// `PATCH` (else: GET + PUT of the whole resource).
    pub patch: bool,
    /// `/Bulk`, with its limits.
    pub bulk: Option<BulkLimits>,
    /// `filter=` on `/Users` and `/Groups` (else look-ups list everything).
    pub filter: bool,
    /// The most resources one filtered answer holds (`None`: not said).
    pub filter_max_results: Option<usize>,
    /// ETags: writes carry `If-Match` with the version last read.
    pub etag: bool,
    pub sort: bool,
    /// The server had no `/ServiceProviderConfig` (404): these are assumed defaults.
    pub assumed: bool,
}

/// `bulk.maxOperations` and `bulk.maxPayloadSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    pub max_operations: usize,
    pub max_payload_size: usize,
}

impl Features {
    /// When the server has no `/ServiceProviderConfig`: PATCH and filters (both required of
    /// a SCIM 2.0 server by most implementations that skip discovery), no Bulk, no ETags.
    pub fn assumed() -> Features {
        Features {
            patch: true,
            bulk: None,
            filter: true,
            filter_max_results: None,
            etag: false,
            sort: false,
            assumed: true,
        }
    }
}

fn supported<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    let v = body
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)?;
    let yes = v
        .get("supported")
        .and_then(|s| s.as_bool().or_else(|| s.as_str().map(|t| t == "true")))
        .unwrap_or(false);
    yes.then_some(v)
}

fn number(v: &Value, key: &str) -> Option<usize> {
    let n = v.get(key)?;
    n.as_u64()
        .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| usize::try_from(n).ok())
}

/// Reads a `/ServiceProviderConfig` body. A feature missing or not `supported: true` is off;
/// Bulk with `maxOperations` 0 is off; a missing `maxPayloadSize` is taken as 1 MB.
pub fn parse(body: &Value) -> Result<Features, String> {
    if !body.is_object() {
        return Err("the ServiceProviderConfig is not a JSON object".into());
    }
    let bulk = supported(body, "bulk").and_then(|b| {
        let max_operations = number(b, "maxOperations").unwrap_or(0);
        let max_payload_size = number(b, "maxPayloadSize").unwrap_or(1_048_576);
        (max_operations > 0 && max_payload_size > 0).then_some(BulkLimits {
            max_operations,
            max_payload_size,
        })
    });
    let filter = supported(body, "filter");
    Ok(Features {
        patch: supported(body, "patch").is_some(),
        bulk,
        filter: filter.is_some(),
        filter_max_results: filter
            .and_then(|f| number(f, "maxResults"))
            .filter(|n| *n > 0),
        etag: supported(body, "etag").is_some(),
        sort: supported(body, "sort").is_some(),
        assumed: false,
    })
}

impl fmt::Display for Features {
    /// One line for `dirsync check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(f, "PATCH {}", yes(self.patch))?;
        if !self.patch {
            write!(f, " (updates are GET + PUT)")?;
        }
        match self.bulk {
            Some(b) => write!(
                f,
                ", Bulk yes (at most {} operations, {} bytes)",
                b.max_operations, b.max_payload_size
            )?,
            None => write!(f, ", Bulk no")?,
        }
        write!(f, ", filter {}", yes(self.filter))?;
        if let Some(n) = self.filter_max_results {
            write!(f, " (at most {n} results)")?;
        }
        write!(f, ", ETags {}, sort {}", yes(self.etag), yes(self.sort))?;
        if self.assumed {
            write!(f, " (no /ServiceProviderConfig: assumed)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_table() {
        let full = Features {
            patch: true,
            bulk: Some(BulkLimits {
                max_operations: 1000,
                max_payload_size: 1_048_576,
            }),
            filter: true,
            filter_max_results: Some(200),
            etag: true,
            sort: true,
            assumed: false,
        };
        let none = Features {
            patch: false,
            bulk: None,
            filter: false,
            filter_max_results: None,
            etag: false,
            sort: false,
            assumed: false,
        };
        for (body, want) in [
            (
                json!({"patch": {"supported": true},
                       "bulk": {"supported": true, "maxOperations": 1000, "maxPayloadSize": 1048576},
                       "filter": {"supported": true, "maxResults": 200},
                       "etag": {"supported": true}, "sort": {"supported": true}}),
                Some(full.clone()),
            ),
            (json!({}), Some(none.clone())),
            (
                json!({"patch": {"supported": false}, "bulk": {"supported": true, "maxOperations": 0}}),
                Some(none.clone()),
            ),
            (
                // Strings, other spellings of the keys, a missing payload size.
                json!({"Patch": {"supported": "true"}, "bulk": {"supported": true, "maxOperations": "10"}}),
                Some(Features {
                    patch: true,
                    bulk: Some(BulkLimits {
                        max_operations: 10,
                        max_payload_size: 1_048_576,
                    }),
                    ..none.clone()
                }),
            ),
            (json!([1]), None),
        ] {
            assert_eq!(parse(&body).ok(), want, "{body}");
        }
        let line = full.to_string();
        assert!(line.contains("Bulk yes (at most 1000 operations"), "{line}");
        assert!(none.to_string().contains("GET + PUT"));
    }
}
